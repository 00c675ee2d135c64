"""The service's metrics: one table of definitions, a recorder contract, and the reading side.

Names follow Prometheus conventions: one `salesagent_` prefix, base units, `_total` on
counters, and no per-call labels. Ray's metrics agent exports them with a `ray_` prefix
and per-replica tags, so sums across replicas and nodes are correct.

The reading side (`parse_prometheus`, `Snapshot`) turns scraped text into recent p95
latencies and error rates for the health report; it is plain code, tested without Ray.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from time import perf_counter
from typing import Protocol


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class Definition:
    kind: Kind
    description: str
    labels: tuple[str, ...] = ()


# Latency buckets from 5 ms (a Redis call) to 60 s (a slow CPU turn).
LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60]

STAGES = ("audio_decode", "stt", "llm_intent", "llm_first_token", "llm_total", "tts", "redis")

DEFINITIONS: dict[str, Definition] = {
    "salesagent_stage_duration_seconds": Definition(
        Kind.HISTOGRAM, f"Time spent per stage of a turn ({', '.join(STAGES)})", ("stage",)
    ),
    "salesagent_turn_duration_seconds": Definition(
        Kind.HISTOGRAM, "Whole customer turn, request in to reply out", ("channel",)
    ),
    "salesagent_voice_to_voice_seconds": Definition(
        Kind.HISTOGRAM, "WebSocket: customer audio received to first agent audio byte sent"
    ),
    "salesagent_time_to_first_audio_seconds": Definition(
        Kind.HISTOGRAM,
        "End of the customer's speech to the first agent audio byte sent (mode: stream, "
        "or contract: the audio message received)",
        ("mode",),
    ),
    "salesagent_end_of_turn_wait_seconds": Definition(
        Kind.HISTOGRAM, "Streaming: end of the customer's speech to the end of turn decided"
    ),
    "salesagent_interruptions_total": Definition(
        Kind.COUNTER, "Agent lines cut short by the customer speaking over them"
    ),
    "salesagent_backchannels_total": Definition(
        Kind.COUNTER, "Customer speech over the agent that was only a backchannel (no barge-in)"
    ),
    "salesagent_guardrail_blocks_total": Definition(
        Kind.COUNTER,
        "Reply sentences kept from the customer by a guardrail (check: the problem found, "
        "salesagent.sales.guardrails.Problem)",
        ("check",),
    ),
    "salesagent_reply_restarts_total": Definition(
        Kind.COUNTER, "Speculative replies dropped unheard because the line reading changed them"
    ),
    "salesagent_audio_underruns_total": Definition(
        Kind.COUNTER,
        "Streaming: gaps in the agent's audio mid-reply (speech came slower than it plays)",
        ("transport",),
    ),
    "salesagent_carrier_calls_total": Definition(
        Kind.COUNTER,
        "Phone calls by carrier event: placed, inbound, answered, machine, completed, "
        "busy, no_answer, failed, canceled, refused (do-not-call)",
        ("event",),
    ),
    "salesagent_llm_tokens_generated_total": Definition(Kind.COUNTER, "Tokens the LLM generated"),
    "salesagent_stt_audio_seconds_total": Definition(Kind.COUNTER, "Audio seconds transcribed"),
    "salesagent_tts_audio_seconds_total": Definition(Kind.COUNTER, "Audio seconds synthesized"),
    "salesagent_calls_started_total": Definition(Kind.COUNTER, "Calls started"),
    "salesagent_calls_ended_total": Definition(
        Kind.COUNTER,
        "Calls ended, by outcome (the call's disposition)",
        ("outcome",),
    ),
    "salesagent_active_calls": Definition(
        Kind.GAUGE, "Calls active in Redis, as last seen by an ingress replica (use max())"
    ),
    "salesagent_call_capacity": Definition(
        Kind.GAUGE,
        "Calls the running LLM replicas hold within the latency bound (admission control)",
    ),
    "salesagent_calls_refused_total": Definition(
        Kind.COUNTER, "New calls refused with 503 because the service was at capacity"
    ),
    "salesagent_websocket_connections": Definition(
        Kind.GAUGE, "Open voice-chat WebSocket connections on a replica (use sum())"
    ),
    "salesagent_errors_total": Definition(
        Kind.COUNTER, "Errors by stage and kind", ("stage", "kind")
    ),
}


class Metrics(Protocol):
    """Where the service records; the Serve replicas back it with Ray's metrics."""

    def observe(self, name: str, value: float, **labels: str) -> None: ...

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None: ...

    def set(self, name: str, value: float, **labels: str) -> None: ...


class NoMetrics:
    def observe(self, name: str, value: float, **labels: str) -> None:
        pass

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        pass

    def set(self, name: str, value: float, **labels: str) -> None:
        pass


@contextmanager
def timed(metrics: Metrics, stage: str) -> Iterator[None]:
    """Observe the block's duration as `stage`; an exception counts as an error of it."""
    started = perf_counter()
    try:
        yield
    except Exception as exc:
        metrics.inc("salesagent_errors_total", stage=stage, kind=type(exc).__name__)
        raise
    finally:
        metrics.observe("salesagent_stage_duration_seconds", perf_counter() - started, stage=stage)


# --- reading scraped metrics ----------------------------------------------------------

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
# Labels that tell replicas, workers and nodes apart: summed over when reading.
_KEEP_LABELS = {
    "stage",
    "channel",
    "outcome",
    "kind",
    "le",
    "deployment",
    "mode",
    "transport",
    "event",
}


def parse_prometheus(text: str, prefix: str = "salesagent_") -> dict[tuple, float]:
    """Samples whose name contains `prefix`, keyed by (name, sorted kept labels), summed
    over replicas and nodes. Ray's `ray_` name prefix is dropped."""
    samples: dict[tuple, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or prefix not in match["name"]:
            continue
        name = match["name"].removeprefix("ray_")
        labels = tuple(
            sorted((k, v) for k, v in _LABEL.findall(match["labels"] or "") if k in _KEEP_LABELS)
        )
        try:
            value = float(match["value"])
        except ValueError:
            continue
        samples[(name, labels)] = samples.get((name, labels), 0.0) + value
    return samples


def only_own_metrics(text: str, prefix: str = "salesagent_") -> str:
    """The lines of a scrape that belong to the service (its samples, HELP and TYPE)."""
    return "\n".join(line for line in text.splitlines() if prefix in line) + "\n"


@dataclass(frozen=True)
class StageStats:
    requests: float
    errors: float
    p95_s: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts {le: count}."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its bound is the answer
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * (
                (rank - lower_count) / width if width else 1
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def stage_stats(now: dict[tuple, float], before: dict[tuple, float], stage: str) -> StageStats:
    """Requests, errors and p95 of `stage` between two parsed scrapes."""

    def delta(key: tuple) -> float:
        return max(now.get(key, 0.0) - before.get(key, 0.0), 0.0)

    histogram = "salesagent_stage_duration_seconds"
    buckets: dict[float, float] = {}
    for name, labels in now:
        label_map = dict(labels)
        if name == f"{histogram}_bucket" and label_map.get("stage") == stage:
            le = float(label_map["le"])
            buckets[le] = buckets.get(le, 0.0) + delta((name, labels))
    requests = sum(
        delta(key)
        for key in now
        if key[0] == f"{histogram}_count" and dict(key[1]).get("stage") == stage
    )
    errors = sum(
        delta(key)
        for key in now
        if key[0] == "salesagent_errors_total" and dict(key[1]).get("stage") == stage
    )
    return StageStats(requests=requests, errors=errors, p95_s=histogram_quantile(0.95, buckets))
