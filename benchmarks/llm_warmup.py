"""What the LLM replica's warm-up saves its first callers: the first turns of two calls at
once on a fresh vLLM engine, without and with `engine.warm_up` before them.

    python benchmarks/llm_warmup.py [--repeats 2]

Each run starts its own engine (the CPU profile's settings) in a fresh process; cold and
warm runs alternate, so both see the same machine. A turn is what the service sends: the
line reading (its guided-choice requests, batched) beside the reply; the figures are each
call's line reading and the reply's first token, timed from the turn's start. Prints a
table; writes benchmarks/results/llm-warmup-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import write_results
from models import cpu_llm_args

CALLS = [  # lines unlike the warm-up's sample turn, so nothing of them is in its cache
    ("Ann Lee", ["Sure, I have a couple of minutes. What is this about?", "I work in sales."]),
    ("Raj Patel", ["Yes, this is a good time. Tell me more.", "I'm a software developer."]),
]


async def first_turns(warm: bool) -> dict:
    from salesagent.platform.engine import VLLMChatEngine, warm_up
    from salesagent.platform.models import prepare_qwen
    from salesagent.platform.sessions import Speaker, entry
    from salesagent.platform.settings import LLMSettings
    from salesagent.sales.call_state import CustomerIntent
    from salesagent.sales.catalog import load_catalog
    from salesagent.sales.conversation import greeting, reading_requests, reply_messages
    from salesagent.sales.conversation import sample_turn as make_sample_turn

    catalog = load_catalog()
    settings = LLMSettings(**{**cpu_llm_args(), "model": str(prepare_qwen())})
    started = time.perf_counter()
    engine = VLLMChatEngine(settings)
    result = {"engine_start_s": time.perf_counter() - started, "warm_up_s": 0.0}
    try:
        if warm:
            started = time.perf_counter()
            await warm_up(engine, make_sample_turn(catalog), settings.warm_up_calls)
            result["warm_up_s"] = time.perf_counter() - started

        async def turn(name: str, history: list) -> tuple[float, float]:
            started = time.perf_counter()
            first_token: list[float] = []

            async def reply() -> None:
                messages = reply_messages(catalog, name, history, CustomerIntent.CONTINUE, 16)
                async for _ in engine.stream_chat(messages, max_tokens=8):
                    if not first_token:
                        first_token.append(time.perf_counter())

            async def reading() -> float:
                requests = reading_requests(history, catalog)
                await asyncio.gather(*(engine.choose(m, c) for m, c in requests))
                return time.perf_counter() - started

            read_s, _ = await asyncio.gather(reading(), reply())
            return read_s, first_token[0] - started

        histories = {name: [entry(Speaker.AGENT, greeting(catalog, name))] for name, _ in CALLS}
        for n in range(len(CALLS[0][1])):
            for name, lines in CALLS:
                histories[name].append(entry(Speaker.CUSTOMER, lines[n]))
            timings = await asyncio.gather(*(turn(name, histories[name]) for name, _ in CALLS))
            result[f"turn_{n + 1}"] = {
                "reading_s": [round(r, 3) for r, _ in timings],
                "first_token_s": [round(f, 3) for _, f in timings],
            }
            for name, _ in CALLS:
                histories[name].append(entry(Speaker.AGENT, "I see. Tell me more about that."))
    finally:
        engine.shutdown()
    return result


def run_once(warm: bool) -> dict:
    """One run in a fresh process (a fresh engine), its result read from its last line."""
    mode = "warm" if warm else "cold"
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--one", mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(results: list[dict]) -> dict:
    """Medians over the runs' calls."""

    def median(turn: str, key: str) -> float:
        return statistics.median(v for r in results for v in r[turn][key])

    return {
        "warm_up_s": statistics.median(r["warm_up_s"] for r in results),
        "turn_1_reading_p50_s": median("turn_1", "reading_s"),
        "turn_1_first_token_p50_s": median("turn_1", "first_token_s"),
        "turn_2_reading_p50_s": median("turn_2", "reading_s"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", choices=["cold", "warm"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(first_turns(args.one == "warm"))), flush=True)
        return
    runs: dict[str, list[dict]] = {"cold": [], "warm": []}
    for n in range(args.repeats):
        for mode in ("cold", "warm"):
            runs[mode].append(run_once(mode == "warm"))
            print(f"run {n + 1} {mode}: {json.dumps(runs[mode][-1])}", flush=True)
    print("| engine | warm-up | turn 1 line reading | turn 1 first token | turn 2 line reading |")
    print("|---|--:|--:|--:|--:|")
    summary = {mode: summarize(results) for mode, results in runs.items()}
    for mode, row in summary.items():
        print(
            f"| {mode} | {row['warm_up_s']:.1f} s | {row['turn_1_reading_p50_s']:.2f} s | "
            f"{row['turn_1_first_token_p50_s']:.2f} s | {row['turn_2_reading_p50_s']:.2f} s |"
        )
    path = write_results("llm-warmup", {"runs": runs, "summary": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
