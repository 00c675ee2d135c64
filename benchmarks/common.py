"""Shared by the benchmark scripts: percentiles, and writing results next to them."""

from __future__ import annotations

import json
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def summarize(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 4),
        "p95": round(p95, 4),
        "max": round(ordered[-1], 4),
    }


def write_results(name: str, results: dict) -> Path:
    """Stamp `results` with the date and machine, write results/<name>-<time>.json."""
    now = datetime.now(UTC)
    stamped = {
        "date": now.isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        **results,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{now:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(stamped, indent=2) + "\n")
    return path
