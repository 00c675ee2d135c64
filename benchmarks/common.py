"""Shared by the benchmark scripts: percentiles, the machine, and writing results next to them."""

from __future__ import annotations

import json
import os
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _rank(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values: on a few samples, p95 and p99 are the max."""
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 4),
        "p95": round(_rank(ordered, 0.95), 4),
        "p99": round(_rank(ordered, 0.99), 4),
        "max": round(ordered[-1], 4),
    }


def machine() -> str:
    """CPU model, cores and memory: enough to tell which machine a figure came from."""
    cpu = platform.processor() or platform.machine()
    memory = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu
            )
        with open("/proc/meminfo") as f:
            kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        memory = f", {kib / (1 << 20):.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):  # not Linux: the platform's own words
        pass
    return f"{platform.machine()}, {cpu}, {os.cpu_count()} cores{memory}"


def write_results(name: str, results: dict) -> Path:
    """Stamp `results` with the date and machine, write results/<name>-<time>.json."""
    now = datetime.now(UTC)
    stamped = {
        "date": now.isoformat(timespec="seconds"),
        "machine": machine(),
        **results,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{now:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(stamped, indent=2) + "\n")
    return path
