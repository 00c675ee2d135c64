"""Concurrent phone calls through the Twilio bridge, against the simulated Twilio.

    # the CPU profile, with telephony pointed at the simulated Twilio on port 8100:
    SALES_TELEPHONY__ACCOUNT_SID=AC55555555555555555555555555555555 \\
    SALES_TELEPHONY__AUTH_TOKEN=simulated-auth-token-not-a-secret \\
    SALES_TELEPHONY__CALLER_NUMBER=+15005550006 \\
    SALES_TELEPHONY__PUBLIC_BASE_URL=http://127.0.0.1:8000 \\
    SALES_TELEPHONY__API_BASE_URL=http://127.0.0.1:8100 bash scripts/serve_local.sh
    python benchmarks/phone.py [--url http://127.0.0.1:8000] [--twilio-port 8100] \\
        [--concurrency 1 2 3] [--turns 2]

For each level of concurrency, that many phone calls are dialed at once through
POST /dial. The simulated Twilio rings each one, fetches the signed TwiML and holds the
call over Media Streams in real time. Each callee waits for the greeting, says `--turns`
lines (mu-law speech at 8 kHz) and waits for each reply to finish, then hangs up. After
one warm-up call (not counted), each level reports the time from the end of the callee's
line to the agent's first audio on the phone line (p50, p95), the calls that completed
with every turn answered, and the service's audio underruns (gaps mid-reply). The calls
held at once is the highest level whose p95 stays within --bound-s with every call
complete.

Prints the figures and writes benchmarks/results/phone-<UTC time>.json. Bounded: at most
5 levels, each call at most --turns turns, each wait at most 120 s.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
import numpy as np
import soxr
from common import summarize, write_results

from salesagent.platform.metrics import parse_prometheus
from salesagent.telephony.simulator import Callee, FakeTwilio, PhoneLine
from salesagent.voice.audio import read_wav
from salesagent.voice.tts import HibariTTS, TTSSettings

ACCOUNT = "AC" + "5" * 32
AUTH_TOKEN = "simulated-auth-token-not-a-secret"
CALLER = "+15005550006"
METRICS_DELAY_S = 12  # Ray exports replica metrics every 10 s by default
LINES = [
    "Sure, I have a couple of minutes. What is this about?",
    "How much does it cost?",
    "Can I attend in the evenings?",
]


def underruns(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        v
        for (name, labels), v in parse_prometheus(text).items()
        if name == "salesagent_audio_underruns_total" and dict(labels).get("transport") == "twilio"
    )


async def one_call(url: str, twilio: FakeTwilio, number: str, clips: list[np.ndarray]) -> dict:
    first_audio: list[float] = []

    async def callee(line: PhoneLine):
        await line.until_agent_quiet(timeout_s=120)
        for clip in clips:
            await line.say(clip)
            first_audio.append(await line.until_agent_speaks(timeout_s=120))
            await line.until_agent_quiet(timeout_s=120)
        await line.hang_up()

    twilio.callees[number] = Callee(script=callee)
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(
            f"{url}/api/v1/sales/dial", json={"phone_number": number, "customer_name": "Ann Lee"}
        )
    if r.status_code != 201:
        return {"dial_status": r.status_code, "first_audio_s": [], "complete": False}
    call = twilio.calls[r.json()["call_sid"]]
    await asyncio.wait_for(call.done.wait(), 600)
    return {
        "dial_status": 201,
        "first_audio_s": first_audio,
        "complete": len(first_audio) == len(clips) and not call.said,
        "statuses": call.statuses,
    }


async def level(url: str, twilio: FakeTwilio, calls: int, clips, base: int) -> dict:
    before = underruns(url)
    started = time.monotonic()
    results = await asyncio.gather(
        *(one_call(url, twilio, f"+1555011{base + n:04d}", clips) for n in range(calls))
    )
    first_audio = [s for r in results for s in r["first_audio_s"]]
    await asyncio.sleep(METRICS_DELAY_S)  # the replicas' last counts reach the exporter
    return {
        "concurrent_calls": calls,
        "complete_calls": sum(r["complete"] for r in results),
        "first_audio_s": summarize(first_audio),
        "underruns": underruns(url) - before,
        "wall_s": round(time.monotonic() - started, 1),
        "calls": results,
    }


async def main(args) -> None:
    voice = HibariTTS(TTSSettings())
    clips = []
    for text in LINES[: args.turns]:
        samples, rate = read_wav(voice.synthesize(text).to_wav())
        clips.append(soxr.resample(samples, rate, 8000).astype(np.float32))
    twilio = FakeTwilio(ACCOUNT, AUTH_TOKEN, CALLER)
    await twilio.start(args.twilio_port)
    levels = []
    try:
        # One call first, not counted: the first turn after start-up is slow (cold caches).
        await one_call(args.url, twilio, "+15550119999", clips[:1])
        for n, calls in enumerate(args.concurrency[:5]):
            result = await level(args.url, twilio, calls, clips, base=n * 100)
            levels.append(result)
            fa = result["first_audio_s"]
            print(
                f"{calls} call(s) at once: {result['complete_calls']}/{calls} complete, "
                f"first audio p50 {fa.get('p50')} s, p95 {fa.get('p95')} s, "
                f"underruns {result['underruns']:.0f}, {result['wall_s']} s"
            )
    finally:
        await twilio.stop()
    held = max(
        (
            r["concurrent_calls"]
            for r in levels
            if r["complete_calls"] == r["concurrent_calls"]
            and (r["first_audio_s"].get("p95") or 1e9) <= args.bound_s
        ),
        default=0,
    )
    print(f"phone calls held at once within p95 {args.bound_s} s to first audio: {held}")
    path = write_results(
        "phone", {"bound_s": args.bound_s, "turns": args.turns, "held": held, "levels": levels}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--twilio-port", type=int, default=8100)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--turns", type=int, default=2, choices=[1, 2, 3])
    parser.add_argument("--bound-s", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))
