"""The server's own view of a sweep step: mean time per stage, from its Prometheus metrics.

The service exposes histograms at GET /metrics (text format); Ray may prefix their names
with `ray_` and adds labels of its own, so series are matched by name suffix and summed
over labels other than `stage`:

    salesagent_stage_duration_seconds{stage=audio_decode|stt|llm_intent|llm_first_token|...}
    salesagent_turn_duration_seconds
    salesagent_voice_to_voice_seconds

A step scrapes before and after itself; the growth of `_sum` over the growth of `_count`
is the mean of what was observed during that step alone. A server without /metrics (the
baseline, or a service that does not export them yet) gives None, never an error.
"""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

STAGE_METRIC = "salesagent_stage_duration_seconds"
WHOLE_METRICS = {
    "turn": "salesagent_turn_duration_seconds",
    "voice_to_voice": "salesagent_voice_to_voice_seconds",
}
# In pipeline order, for tables and the waterfall plot; stages not named here come after.
STAGES = ("audio_decode", "stt", "llm_intent", "llm_first_token", "llm_total", "tts", "redis")

Totals = dict[str, tuple[float, float]]  # series ("stt", "turn", ...) -> (sum, count)


def _series(sample_name: str, labels: dict[str, str]) -> tuple[str, int] | None:
    """(series key, 0 for _sum or 1 for _count), or None for a sample we do not use."""
    for suffix, slot in (("_sum", 0), ("_count", 1)):
        if not sample_name.endswith(suffix):
            continue
        base = sample_name.removesuffix(suffix)
        if base.endswith(STAGE_METRIC) and "stage" in labels:
            return labels["stage"], slot
        for key, metric in WHOLE_METRICS.items():
            if base.endswith(metric):
                return key, slot
    return None


def parse(text: str) -> Totals:
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found = _series(sample.name, sample.labels)
            if found:
                key, slot = found
                totals.setdefault(key, [0.0, 0.0])[slot] += sample.value
    return {key: (s, c) for key, (s, c) in totals.items()}


async def scrape(client: httpx.AsyncClient) -> Totals | None:
    """The histograms' totals; {} when /metrics answers without them; None without /metrics."""
    try:
        response = await client.get("/metrics", timeout=10)
        if response.status_code != 200:
            return None
        return parse(response.text)
    except (httpx.HTTPError, ValueError):  # unreachable, or not Prometheus text
        return None


def turns_served(totals: Totals | None) -> int:
    return int((totals or {}).get("turn", (0.0, 0.0))[1])


async def settled_scrape(
    client: httpx.AsyncClient, turns: int, max_wait_s: float = 30.0
) -> Totals | None:
    """Scrape once the server's turn count has reached `turns` (what the client saw served).

    Exporters publish periodically (Ray's every ~10 s), so the last turns of a step show up
    a while after they finished; without this wait they would be counted in the next step.
    """
    totals = await scrape(client)
    waited = 0.0
    while totals is not None and turns_served(totals) < turns:
        if waited >= max_wait_s:
            print(f"server metrics lag: fewer than {turns} turns exported after {waited:.0f} s")
            break
        await asyncio.sleep(2.0)
        waited += 2.0
        totals = await scrape(client)
    return totals


def step_means(before: Totals | None, after: Totals | None) -> dict[str, dict] | None:
    """Mean seconds and count per series during a step, or None when the server has no metrics."""
    if not after:
        return None
    before = before or {}
    means: dict[str, dict] = {}
    for key, (total, count) in after.items():
        total0, count0 = before.get(key, (0.0, 0.0))
        if count > count0:
            means[key] = {
                "mean_s": round((total - total0) / (count - count0), 4),
                "n": int(count - count0),
            }
    return means or None


def stage_order(keys: set[str]) -> list[str]:
    """The stages among `keys` in pipeline order, unknown ones after; whole-turn series last."""
    stages = [k for k in keys if k not in WHOLE_METRICS]
    known = [s for s in STAGES if s in stages]
    return known + sorted(set(stages) - set(known))
