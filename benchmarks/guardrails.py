"""What the guardrails cost a turn: the sentence check, and the topic request the line
reading adds when a line has a cue of an approved answer.

    python benchmarks/guardrails.py [--repeats 12]

The check runs in-process over sentences like the model's (microseconds each). The reading
runs on vLLM's engine with the CPU profile's settings, on cued lines, with and without the
topic request, alternated so both see the same machine. The topic request is sent here
even where the service needs none (a question with one cued topic), so the figure is the
most it adds. Prints a table; writes
benchmarks/results/guardrails-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from common import write_results
from models import cpu_llm_args

SENTENCES = [
    "Right now there's a special offer: $299 instead of the standard $499.",
    "Yes, we guarantee you a job afterwards.",
    "It's 12 weeks of live online classes, with evening and weekend sessions.",
    "Hi Raj, this is Alex from Edvantage AI.",
    "As a teacher, you'll like the hands-on projects we build each week.",
    "That's okay! If you're busy right now, you can offer to call back at a better time.",
]
CUED_LINES = [
    "How much does it cost?",
    "Do you have a payment plan?",
    "Will this get me a job afterwards?",
    "What's the schedule like? I work days.",
    "Do I get a certificate at the end?",
    "Can you just email me the details?",
]


def check_cost_us(rounds: int = 2000) -> float:
    from salesagent.sales.catalog import load_catalog
    from salesagent.sales.guardrails import Context, check

    catalog = load_catalog()
    ctx = Context(catalog, "Answer briefly and ask about them.", "How much?", "I teach.", "Raj")
    started = time.perf_counter()
    for _ in range(rounds):
        for sentence in SENTENCES:
            check(sentence, ctx)
    return (time.perf_counter() - started) / (rounds * len(SENTENCES)) * 1e6


async def reading_cost(repeats: int) -> dict:
    from salesagent.platform.engine import VLLMChatEngine
    from salesagent.platform.models import prepare_qwen
    from salesagent.platform.sessions import Speaker, entry
    from salesagent.platform.settings import LLMSettings
    from salesagent.sales.catalog import load_catalog
    from salesagent.sales.conversation import reading_requests

    catalog = load_catalog()
    engine = VLLMChatEngine(LLMSettings(**{**cpu_llm_args(), "model": str(prepare_qwen())}))
    times: dict[str, list[float]] = {"without topic": [], "with topic": []}
    try:
        for n in range(repeats + 1):  # the first round warms the prefix cache
            for line in CUED_LINES:
                history = [entry(Speaker.CUSTOMER, line)]
                for label, with_catalog in (("without topic", None), ("with topic", catalog)):
                    requests = reading_requests(history, with_catalog)
                    started = time.perf_counter()
                    await asyncio.gather(*(engine.choose(m, c) for m, c in requests))
                    if n:
                        times[label].append(time.perf_counter() - started)
    finally:
        engine.shutdown()
    return {
        label: {
            "p50_s": statistics.median(values),
            "p95_s": sorted(values)[int(0.95 * (len(values) - 1))],
            "n": len(values),
        }
        for label, values in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args()
    check_us = check_cost_us()
    reading = asyncio.run(reading_cost(args.repeats))
    extra = reading["with topic"]["p50_s"] - reading["without topic"]["p50_s"]
    print(f"sentence check: {check_us:.0f} us a sentence")
    print("| line reading on cued lines | p50 | p95 | n |\n|---|--:|--:|--:|")
    for label, row in reading.items():
        print(f"| {label} | {row['p50_s']:.3f} s | {row['p95_s']:.3f} s | {row['n']} |")
    print(f"the topic request adds {extra * 1000:.0f} ms at p50 on a cued line")
    write_results(
        "guardrails",
        {"check_us_per_sentence": check_us, "reading": reading, "topic_extra_p50_s": extra},
    )


if __name__ == "__main__":
    main()
