"""Accuracy of the line reading (intent, qualification fact, objection) on a labelled set
of customer lines, run on the vLLM engine directly (no Ray, no server).

    python benchmarks/labels.py [--model DIR]

Prints per-label accuracy and every miss; writes benchmarks/results/labels-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import yaml
from common import write_results

from salesagent.platform.engine import VLLMChatEngine
from salesagent.platform.sessions import Speaker, entry
from salesagent.platform.settings import LLMSettings
from salesagent.sales.conversation import reading_from, reading_requests

LINES = Path(__file__).parents[1] / "salesagent" / "data" / "labelled_lines.yaml"


async def read_all(engine: VLLMChatEngine, lines: list[str]) -> list[dict[str, str]]:
    """Every line read the way the service reads it, all lines at once (vLLM batches them)."""

    async def read(line: str) -> dict[str, str]:
        requests = reading_requests([entry(Speaker.CUSTOMER, line)])
        answers = await asyncio.gather(*(engine.choose(*r) for r in requests))
        reading = reading_from(answers, line)
        objection = reading.objection.value if reading.objection else "none"
        return {"intent": reading.intent.value, "slot": reading.slot.value, "objection": objection}

    return await asyncio.gather(*(read(line) for line in lines))


def _labels(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: the prepared Qwen)")
    args = parser.parse_args()
    rows = yaml.safe_load(LINES.read_text())
    settings = LLMSettings(**({"model": args.model} if args.model else {}))
    readings = asyncio.run(read_all(VLLMChatEngine(settings), [r["line"] for r in rows]))
    summary = {}
    for name in ("intent", "slot", "objection"):
        # A line may carry more than one right label (a job and a goal in one sentence).
        misses = [
            {"line": row["line"], "want": row[name], "got": got[name]}
            for row, got in zip(rows, readings, strict=True)
            if got[name] not in _labels(row[name])
        ]
        correct = len(rows) - len(misses)
        summary[name] = {"correct": correct, "total": len(rows), "misses": misses}
        print(f"{name}: {correct}/{len(rows)}")
        for miss in misses:
            print(f"  {miss['line']!r}: want {miss['want']}, got {miss['got']}")
    print(f"results: {write_results('labels', summary)}")


if __name__ == "__main__":
    main()
