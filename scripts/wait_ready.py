"""Waits for a starting service to be ready for calls; used by scripts/serve_local.sh.

Polls GET /health until every service is `ok`, printing what it is still waiting for.
Exits 0 when ready; 1 when the process it watches (`--pid`) ends first, or after
`--timeout` seconds, with the last thing the health report said.

    python scripts/wait_ready.py http://127.0.0.1:8000 --pid 1234 --timeout 900
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import httpx


def waiting_for(report: dict) -> str:
    """What is not ready yet, in a few words: "llm (No replica answered ...)"."""
    services = report.get("services", {})
    pending = [
        f"{name} ({service['details'][:80]})"
        for name, service in services.items()
        if service["status"] != "ok"
    ]
    return ", ".join(pending) or "the health report"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--pid", type=int, help="the serving process; stop waiting if it ends")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--every", type=float, default=15, help="seconds between progress lines")
    args = parser.parse_args()

    started = time.monotonic()
    last_line = 0.0
    state = "Ray Serve's HTTP proxy"
    tty = sys.stdout.isatty()
    # On a terminal the progress line rewrites itself; in a log, a line every `--every` s.
    newline, rewrite = ("\n", "\r\033[K") if tty else ("", "")
    while True:
        elapsed = time.monotonic() - started
        if args.pid and not alive(args.pid):
            print(f"{newline}[serve] failed: the service stopped while waiting for {state}")
            return 1
        if elapsed > args.timeout:
            late = f"not ready after {elapsed:.0f} s; still waiting for {state}"
            print(f"{newline}[serve] failed: {late}")
            return 1
        try:
            report = httpx.get(f"{args.url}/health", timeout=5).json()
            if report.get("status") == "ok":
                ready = f"ready to take calls: every service is healthy ({elapsed:.0f} s)"
                print(f"{rewrite}[serve] {ready}")
                return 0
            state = waiting_for(report)
        except (httpx.HTTPError, ValueError):
            pass  # the proxy or the ingress is not up yet
        if tty:
            print(
                f"{rewrite}[serve] starting ({elapsed:.0f} s): waiting for {state}"[:160],
                end="",
                flush=True,
            )
        elif elapsed - last_line >= args.every:
            print(f"[serve] starting ({elapsed:.0f} s): waiting for {state}", flush=True)
            last_line = elapsed
        time.sleep(2)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while starting: serve_local.sh stops everything
        sys.exit(130)
