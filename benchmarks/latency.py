"""Latency of start-call and respond against a running service (one call at a time).

    python benchmarks/latency.py [--url http://127.0.0.1:8000] [--calls 3] [--turns 4]

Prints p50/p95/max per endpoint and writes benchmarks/results/latency-<UTC time>.json.
Bounded: at most --calls x --turns requests, each with a 120 s timeout.
"""

from __future__ import annotations

import argparse
import time

import httpx
from common import summarize, write_results

API = "/api/v1/sales"
LINES = [
    "Sure, I have a couple of minutes. What is this about?",
    "I'm a data analyst and I'd like to move into machine learning.",
    "How much does it cost?",
    "That sounds like a lot. Is it worth it?",
    "What kind of projects would I build?",
    "Can I attend in the evenings?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--turns", type=int, default=4, choices=range(1, len(LINES) + 1))
    args = parser.parse_args()

    timings: dict[str, list[float]] = {"start_call": [], "respond": []}
    with httpx.Client(base_url=args.url, timeout=120) as client:
        client.get("/health").raise_for_status()
        for n in range(args.calls):
            started = time.perf_counter()
            r = client.post(
                f"{API}/start-call",
                json={"phone_number": "555-010-0100", "customer_name": f"Lead {n}"},
            )
            r.raise_for_status()
            timings["start_call"].append(time.perf_counter() - started)
            call_id = r.json()["call_id"]
            for line in LINES[: args.turns]:
                started = time.perf_counter()
                r = client.post(f"{API}/respond/{call_id}", json={"message": line})
                r.raise_for_status()
                timings["respond"].append(time.perf_counter() - started)
                print(
                    f"call {n + 1}/{args.calls} respond {timings['respond'][-1]:.2f} s", flush=True
                )
                if r.json()["should_end_call"]:
                    break

    results = {
        "url": args.url,
        "calls": args.calls,
        "turns_per_call": args.turns,
        "start_call_s": summarize(timings["start_call"]),
        "respond_s": summarize(timings["respond"]),
    }
    for name in ("start_call_s", "respond_s"):
        s = results[name]
        print(
            f"{name:12s} n={s['n']:3d}  p50 {s['p50']:.3f}  p95 {s['p95']:.3f}  max {s['max']:.3f}"
        )
    print(f"wrote {write_results('latency', results)}")


if __name__ == "__main__":
    main()
