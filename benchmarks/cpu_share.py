"""Where the cores go: the CPU each of the service's processes uses over a window, from /proc.

    python benchmarks/cpu_share.py --seconds 180   # while a load runs, e.g. a sweep step

Groups processes by what they are (vLLM's worker, each Serve replica, Serve's proxy and
controller, Ray's daemons, Redis, the load generator) and prints the cores each used on
average; writes results/cpu-share-<time>.json. Linux only. Processes that start or end
inside the window count from their first or up to their last sample.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

from common import write_results

# First match wins: a substring of the process's command line -> the group it counts in.
GROUPS = [
    ("VLLM::Worker", "vLLM worker (the model)"),
    ("VLLM::EngineCore", "vLLM engine core (scheduler)"),
    ("LLMDeployment", "LLM replica"),
    ("SalesIngress", "ingress replica (API, voice pipeline)"),
    ("STTDeployment", "STT replica"),
    ("TTSDeployment", "TTS replica"),
    ("ProxyActor", "Serve proxy"),
    ("ServeController", "Serve controller"),
    ("gcs_server", "Ray GCS"),
    ("raylet", "Ray raylet"),
    ("DashboardAgent", "Ray dashboard agent"),
    ("dashboard", "Ray dashboard agent"),
    ("log_monitor", "Ray log monitor"),
    ("redis-server", "Redis"),
    ("baseline_server", "baseline server"),
    ("run_sweep", "load generator"),
    ("loadgen", "load generator"),
]
TICK = os.sysconf("SC_CLK_TCK")


def group(cmdline: str) -> str:
    return next((name for key, name in GROUPS if key in cmdline), "other")


def sample() -> dict[int, tuple[str, float]]:
    """pid -> (group, CPU seconds used so far)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended meanwhile
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "(comm) "
        out[int(entry)] = (group(cmdline), (int(fields[11]) + int(fields[12])) / TICK)
    return out


def measure(seconds: float, every_s: float = 5.0) -> dict[str, float]:
    """Cores each group used on average over `seconds`."""
    used: Counter[str] = Counter()
    started = time.monotonic()
    last = sample()
    while (elapsed := time.monotonic() - started) < seconds:
        time.sleep(min(every_s, seconds - elapsed))
        now = sample()
        for pid, (name, cpu) in now.items():
            used[name] += cpu - last.get(pid, (name, cpu))[1]  # new processes: next round
        last = now
    span = time.monotonic() - started
    return {name: round(cpu / span, 3) for name, cpu in used.most_common() if cpu > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--label", default="", help="what ran meanwhile, kept in the results")
    args = parser.parse_args()
    cores = measure(args.seconds)
    print(f"cores used over {args.seconds:g} s: {sum(cores.values()):.2f} of {os.cpu_count()}")
    for name, share in cores.items():
        print(f"  {name:40s} {share:5.2f}")
    path = write_results(
        "cpu-share", {"label": args.label, "seconds": args.seconds, "cores": cores}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
