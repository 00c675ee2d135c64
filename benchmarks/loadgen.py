"""Load generator: concurrent simulated sales calls, paced like real ones, swept over concurrency.

    python benchmarks/loadgen.py --url http://127.0.0.1:8000 --concurrency 1 2 4 --turns 3

A simulated call (voice mode, the default) starts with POST start-call, opens
WS /ws/voice-chat/{call_id} and listens to the greeting; then, for each turn, the prospect
thinks (1-2 s), speaks a scripted line in real time (the server takes a whole clip per turn,
so the client sleeps the clip's length, then sends it) and listens to the agent's reply
(sleeps its length). The lines are spoken once by the project's TTS and cached in
benchmarks/.cache/clips/. Text mode (--mode text) holds the same calls over POST respond.

Client-side figures per step: voice-to-voice latency (end of the customer's audio sent ->
agent audio received; the server sends a reply as one WAV message, so that is also its
first byte), whole-turn latency (-> the turn's last message), transcript latency
(-> user_text), turns per second and errors; server-side mean stage times from GET /metrics
when the server has them. Writes results/loadgen-<label>-<time>.json, .md and .png.

Bounded: --concurrency x --calls-per-worker calls per step, at most --turns turns each, and
every step cut at --step-timeout-s (turns still running then count as errors). Loopback only
unless --allow-remote.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import random
import sys
import time
import wave
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import httpx
import report
import server_metrics
from common import summarize, write_results
from websockets.asyncio.client import ClientConnection, connect

from salesagent.voice.voice_client import API, TurnResult, converse, send_turn, start_call

CLIP_CACHE = Path(__file__).parent / ".cache" / "clips"
PHONE = "555-010-0100"
AGENT_WORDS_PER_S = 2.5  # the Hibari voice's pace, to "listen" to a reply that came as text
END_CONNECTION = "END_CONNECTION_REQUEST_BY_CLIENT"

# Prospects who stay on the line: every line should be classified `continue`, so a call
# lasts all its turns. Call n follows script n % 3.
SCRIPTS = [
    [
        "Sure, I have a couple of minutes. What is this about?",
        "I work as a data analyst and I would like to move into machine learning.",
        "How much does the course cost, and how long does it take?",
        "Can I attend the classes in the evening after work?",
    ],
    [
        "Yes, this is a good time. Tell me more.",
        "I'm a software developer, and I keep hearing about large language models.",
        "What kind of projects would I build during the bootcamp?",
        "Is there a discount if I sign up this month?",
    ],
    [
        "Okay, go ahead, I'm listening.",
        "I lead a small marketing team and we want to use AI tools in our work.",
        "Do I need to know how to program before I start?",
        "That sounds like a lot of money. Is it really worth it?",
    ],
]
MAX_TURNS = len(SCRIPTS[0])


@dataclass(frozen=True)
class Clip:
    text: str
    wav: bytes

    @property
    def duration_s(self) -> float:
        return wav_seconds(self.wav)


def wav_seconds(data: bytes) -> float:
    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError):
        return 0.0


def prospect_clips() -> list[list[Clip]]:
    """SCRIPTS spoken by the project's default voice; synthesized once, then read from cache."""
    from salesagent.voice.tts import TTSSettings, make_tts

    settings = TTSSettings()
    CLIP_CACHE.mkdir(parents=True, exist_ok=True)
    voice = None
    scripts: list[list[Clip]] = []
    for lines in SCRIPTS:
        clips = []
        for text in lines:
            key = f"{settings.engine}|{settings.voice}|{settings.speed}|{text}"
            path = CLIP_CACHE / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.wav"
            if not path.exists():
                voice = voice or make_tts(settings)
                path.write_bytes(voice.synthesize(text).to_wav())
            clips.append(Clip(text, path.read_bytes()))
        scripts.append(clips)
    return scripts


@dataclass(frozen=True)
class LoadConfig:
    url: str
    mode: Literal["voice", "text"] = "voice"
    turns: int = 3
    calls_per_worker: int = 1
    think_s: tuple[float, float] = (1.0, 2.0)
    listen: bool = True  # wait while the agent's reply would play, as a prospect does
    ramp_s: float = 4.0  # workers start at random within this, so calls are not in lockstep
    turn_timeout_s: float = 120.0
    step_timeout_s: float = 240.0
    pause_s: float = 3.0  # between steps: queues drain, exporters publish
    seed: int = 0


class Step:
    """One concurrency level: its samples, errors and a progress line per event."""

    def __init__(self, label: str, concurrency: int):
        self.label, self.concurrency = label, concurrency
        self.started = time.perf_counter()
        self.v2v: list[float] = []
        self.turn: list[float] = []
        self.transcript: list[float] = []
        self.errors: Counter[str] = Counter()
        self.in_flight = 0
        self.calls = 0
        self.calls_completed = 0
        self.calls_ended_by_agent = 0

    def log(self, text: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"[{self.label} c={self.concurrency} +{elapsed:5.1f}s] {text}", flush=True)

    def next_call(self) -> int:
        self.calls += 1
        return self.calls

    def ok(self, call: int, turn: int, turn_s: float, v2v_s: float | None, heard_s: float | None):
        self.turn.append(turn_s)
        figures = f"turn {turn_s:.2f} s"
        if v2v_s is not None:
            self.v2v.append(v2v_s)
            figures = f"voice-to-voice {v2v_s:.2f} s, {figures}"
        if heard_s is not None:
            self.transcript.append(heard_s)
        self.log(f"call {call} turn {turn}: {figures}")

    def error(self, call: int, turn: int | None, kind: str) -> None:
        self.errors[kind[:120]] += 1
        self.log(f"call {call} turn {turn or '-'}: ERROR {kind[:120]}")

    def result(self) -> dict:
        wall_s = time.perf_counter() - self.started
        turns_ok = len(self.turn)
        errors = sum(self.errors.values())
        return {
            "concurrency": self.concurrency,
            "calls": self.calls,
            "calls_completed": self.calls_completed,
            "calls_ended_by_agent": self.calls_ended_by_agent,
            "turns_ok": turns_ok,
            "errors": errors,
            "error_rate": round(errors / (turns_ok + errors), 4) if turns_ok + errors else 0.0,
            "error_kinds": dict(self.errors),
            "wall_s": round(wall_s, 2),
            "turns_per_s": round(turns_ok / wall_s, 4),
            "voice_to_voice_s": summarize(self.v2v),
            "turn_s": summarize(self.turn),
            "transcript_s": summarize(self.transcript),
        }


class _TimedSocket:
    """A WebSocket for voice_client's turn loop that notes when each message arrived."""

    def __init__(self, ws: ClientConnection):
        self._ws = ws
        self.sent_at = 0.0
        self.arrivals: list[tuple[float, str]] = []  # (perf_counter, message kind)

    async def send(self, message: bytes | str) -> None:
        await self._ws.send(message)
        self.sent_at = time.perf_counter()
        self.arrivals.clear()

    async def recv(self) -> bytes | str:
        message = await self._ws.recv()
        kind = "audio" if isinstance(message, bytes) else json.loads(message).get("type", "?")
        self.arrivals.append((time.perf_counter(), kind))
        return message

    def first(self, *kinds: str) -> float | None:
        return next((t for t, kind in self.arrivals if kind in kinds), None)


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.perf_counter()))


def _listening_s(cfg: LoadConfig, reply: bytes | str) -> float:
    """How long the prospect listens to the agent: the audio's length, or the words' at its
    pace when the reply came as text (REST, or the WebSocket's `agent_text` fallback)."""
    if not cfg.listen:
        return 0.0
    if isinstance(reply, bytes):
        return wav_seconds(reply)
    return len(reply.split()) / AGENT_WORDS_PER_S


async def _voice_call(
    cfg: LoadConfig, step: Step, call: int, clips: list[Clip], rng: random.Random
) -> None:
    call_id = await asyncio.to_thread(start_call, cfg.url, f"Lead {call}", PHONE)
    ws_url = cfg.url.replace("http", "ws", 1) + f"/ws/voice-chat/{call_id}"
    async with connect(ws_url, max_size=None, open_timeout=cfg.turn_timeout_s) as ws:
        socket = _TimedSocket(ws)
        greeting = await asyncio.wait_for(socket.recv(), cfg.turn_timeout_s)
        if isinstance(greeting, str):
            message = json.loads(greeting)
            if message["type"] == "error":
                raise RuntimeError(f"voice chat refused: {message['message']}")
            greeting = message.get("text", "")
        heard_at = time.perf_counter() + _listening_s(cfg, greeting)
        for n, clip in enumerate(clips, start=1):
            await _sleep_until(heard_at + rng.uniform(*cfg.think_s) + clip.duration_s)
            step.in_flight += 1
            try:
                turn: TurnResult = await send_turn(socket, clip.wav, cfg.turn_timeout_s)
            finally:
                step.in_flight -= 1
            for message in turn.errors:  # the server keeps the connection open after these
                step.error(call, n, f"server: {message}")
            reply_at = socket.first("audio", "agent_text")
            if turn.voice_to_voice_s is not None and reply_at is not None:
                heard = socket.first("user_text")
                step.ok(  # all three from the same clock readings, so turn >= voice-to-voice
                    call,
                    n,
                    turn_s=socket.arrivals[-1][0] - socket.sent_at,
                    v2v_s=reply_at - socket.sent_at,
                    heard_s=heard - socket.sent_at if heard else None,
                )
                heard_at = reply_at + _listening_s(cfg, turn.agent_audio or turn.agent_text)
            else:
                heard_at = time.perf_counter()
            if turn.ended:
                step.calls_ended_by_agent += 1
                return
        await ws.send(END_CONNECTION)


async def _text_call(
    cfg: LoadConfig, step: Step, call: int, clips: list[Clip], rng: random.Random
) -> None:
    async with httpx.AsyncClient(base_url=cfg.url, timeout=cfg.turn_timeout_s) as client:
        r = await client.post(
            f"{API}/start-call", json={"customer_name": f"Lead {call}", "phone_number": PHONE}
        )
        r.raise_for_status()
        call_id = r.json()["call_id"]
        heard_at = time.perf_counter() + _listening_s(cfg, r.json()["first_message"])
        for n, clip in enumerate(clips, start=1):
            # The prospect "says" the line: the same pace as in voice mode.
            await _sleep_until(heard_at + rng.uniform(*cfg.think_s) + clip.duration_s)
            step.in_flight += 1
            sent = time.perf_counter()
            try:
                r = await client.post(f"{API}/respond/{call_id}", json={"message": clip.text})
            finally:
                step.in_flight -= 1
            if r.status_code != 200:
                step.error(call, n, f"HTTP {r.status_code}: {r.text[:80]}")
                heard_at = time.perf_counter()
                continue
            step.ok(call, n, turn_s=time.perf_counter() - sent, v2v_s=None, heard_s=None)
            reply = r.json()
            if reply["should_end_call"]:
                step.calls_ended_by_agent += 1
                return
            heard_at = time.perf_counter() + _listening_s(cfg, reply["reply"])


Caller = Callable[[LoadConfig, Step, int, list[Clip], random.Random], Awaitable[None]]
CALLERS: dict[str, Caller] = {"voice": _voice_call, "text": _text_call}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} on {exc.request.url.path}"
    return f"{type(exc).__name__}: {exc}"


async def _worker(
    cfg: LoadConfig, step: Step, scripts: list[list[Clip]], rng: random.Random
) -> None:
    await asyncio.sleep(rng.uniform(0, cfg.ramp_s))
    for _ in range(cfg.calls_per_worker):
        call = step.next_call()
        try:
            await CALLERS[cfg.mode](cfg, step, call, scripts[call % len(scripts)][: cfg.turns], rng)
            step.calls_completed += 1
        except Exception as exc:  # a failed call is a data point, not the end of the run
            step.error(call, None, _describe(exc))


async def run_step(
    cfg: LoadConfig, concurrency: int, scripts: list[list[Clip]], label: str, served: int = 0
) -> dict:
    """`concurrency` callers at once, each holding --calls-per-worker calls in a row.
    `served`: turns the server completed before this step (for the metrics' difference)."""
    step = Step(label, concurrency)
    step.log(
        f"start: {concurrency} concurrent {cfg.mode} calls x {cfg.calls_per_worker}, "
        f"{cfg.turns} turns each, cut at {cfg.step_timeout_s:.0f} s"
    )
    async with httpx.AsyncClient(base_url=cfg.url) as client:
        before = await server_metrics.settled_scrape(client, served)
        workers = [
            asyncio.create_task(
                _worker(cfg, step, scripts, random.Random(f"{cfg.seed}-{concurrency}-{w}"))
            )
            for w in range(concurrency)
        ]
        _, pending = await asyncio.wait(workers, timeout=cfg.step_timeout_s)
        if pending:
            cut = step.in_flight  # read before cancelling: these turns never finished
            for _ in range(cut):
                step.error(0, None, "cut at the step bound")
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        result = step.result()
        after = None
        if before is not None:
            after = await server_metrics.settled_scrape(client, served + result["turns_ok"])
    result["server"] = server_metrics.step_means(before, after)
    v2v, turn = result["voice_to_voice_s"], result["turn_s"]
    shown = v2v if v2v["n"] else turn
    what = "voice-to-voice" if v2v["n"] else "turn"
    figures = f"{what} p50 {shown['p50']:.2f} s p95 {shown['p95']:.2f} s" if shown["n"] else ""
    step.log(
        f"done: {result['turns_ok']} turns ok, {result['errors']} errors, "
        f"{result['turns_per_s']:.3f} turns/s {figures}"
    )
    if result["server"] is None:
        step.log("server metrics unavailable")
    else:
        stages = ", ".join(f"{k} {v['mean_s']:.2f}" for k, v in result["server"].items())
        step.log(f"server means (s): {stages}")
    return result


async def wait_ready(url: str, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll GET /health until it reports "ok" (every model loaded), within `timeout_s`;
    give up early when `alive` says the server process has died."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while alive():
            try:
                r = await client.get("/health")
                if r.status_code == 200 and r.json().get("status") == "ok":
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not healthy within {timeout_s:.0f} s")
            await asyncio.sleep(2)
    raise RuntimeError(f"the server at {url} exited before it was ready")


async def warm_up(cfg: LoadConfig, clip: Clip) -> int:
    """One unpaced, unmeasured turn: first-request costs stay out of the first step.
    Returns the turns served (1)."""
    started = time.perf_counter()
    call_id = await asyncio.to_thread(start_call, cfg.url, "Warm Up", PHONE)
    if cfg.mode == "voice":
        await asyncio.wait_for(converse(cfg.url, call_id, [clip.wav]), cfg.step_timeout_s)
    else:
        async with httpx.AsyncClient(base_url=cfg.url, timeout=cfg.turn_timeout_s) as client:
            r = await client.post(f"{API}/respond/{call_id}", json={"message": clip.text})
            r.raise_for_status()
    print(f"warm-up turn: {time.perf_counter() - started:.1f} s", flush=True)
    return 1


async def sweep(
    cfg: LoadConfig,
    concurrencies: list[int],
    scripts: list[list[Clip]],
    label: str,
    deadline: float | None = None,
    served: int = 0,
) -> list[dict]:
    """One step per concurrency level, in order; none starts after `deadline` (monotonic).
    `served`: turns the server completed before the sweep (the warm-up)."""
    steps = []
    for n, concurrency in enumerate(concurrencies):
        if deadline is not None and time.monotonic() > deadline:
            print(f"[{label}] time bound reached: skipping concurrency {concurrencies[n:]}")
            break
        steps.append(await run_step(cfg, concurrency, scripts, label, served))
        served += steps[-1]["turns_ok"]
        await asyncio.sleep(cfg.pause_s)
    return steps


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=sorted(CALLERS), default="voice")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--turns", type=int, default=3, choices=range(1, MAX_TURNS + 1))
    parser.add_argument("--calls-per-worker", type=int, default=1)
    parser.add_argument(
        "--think-s", type=float, nargs=2, default=(1.0, 2.0), metavar=("MIN", "MAX")
    )
    parser.add_argument(
        "--no-listen", action="store_true", help="do not wait while the agent's reply plays"
    )
    parser.add_argument("--ramp-s", type=float, default=4.0)
    parser.add_argument("--turn-timeout-s", type=float, default=120.0)
    parser.add_argument("--step-timeout-s", type=float, default=240.0)
    parser.add_argument("--bound-s", type=float, default=10.0, help="p95 latency bound")
    parser.add_argument("--max-error-rate", type=float, default=0.01)
    parser.add_argument("--no-warm-up", action="store_true")
    parser.add_argument("--seed", type=int, default=0)


def load_config(args: argparse.Namespace, url: str) -> LoadConfig:
    return LoadConfig(
        url=url,
        mode=args.mode,
        turns=args.turns,
        calls_per_worker=args.calls_per_worker,
        think_s=tuple(args.think_s),
        listen=not args.no_listen,
        ramp_s=args.ramp_s,
        turn_timeout_s=args.turn_timeout_s,
        step_timeout_s=args.step_timeout_s,
        seed=args.seed,
    )


def check_loopback(url: str, allow_remote: bool) -> None:
    host = urlparse(url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1") and not allow_remote:
        sys.exit(f"{url} is not on loopback; pass --allow-remote to load another machine")


@dataclass
class Run:
    """One server's sweep, as the reports take it."""

    label: str
    steps: list[dict] = field(default_factory=list)
    notes: dict = field(default_factory=dict)


async def _main(args: argparse.Namespace) -> None:
    cfg = load_config(args, args.url)
    scripts = prospect_clips()
    await wait_ready(cfg.url, 30)
    async with httpx.AsyncClient(base_url=cfg.url) as client:  # the server may be in use already
        served = server_metrics.turns_served(await server_metrics.scrape(client))
    if not args.no_warm_up:
        served += await warm_up(cfg, scripts[0][0])
    run = Run(args.label, await sweep(cfg, args.concurrency, scripts, args.label, served=served))
    results = report.results_json([run], cfg, args.bound_s, args.max_error_rate)
    path = write_results(f"loadgen-{args.label}", results)
    report.write_outputs(path, [run], cfg, args.bound_s, args.max_error_rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--label", default="service", help="the server's name in the results")
    parser.add_argument("--allow-remote", action="store_true")
    add_load_arguments(parser)
    args = parser.parse_args()
    check_loopback(args.url, args.allow_remote)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
