"""Load generator: concurrent simulated sales calls, paced like real ones, swept over concurrency.

    python benchmarks/loadgen.py --url http://127.0.0.1:8000 --concurrency 1 2 4 --turns 4

A simulated call starts with POST start-call and listens to the greeting; then, for each
turn, the prospect thinks (1-2 s), speaks a scripted line in real time and listens to the
agent's reply. The lines are spoken once by the project's TTS and cached in
benchmarks/.cache/clips/. Three modes hold the same calls:

- `stream`: the streaming voice mode (`?mode=stream`): PCM16 frames every 20 ms without a
  break, as a microphone sends them; the server finds the end of turn and speaks the reply
  sentence by sentence; the prospect hears it on a real-time speaker clock.
- `voice`: the contract's WebSocket: the whole clip as one message (the client sleeps the
  clip's length, then sends it), one WAV back (the client sleeps its length).
- `text`: POST respond with the line's text.

Client-side figures per step: voice-to-voice latency (the end of the customer's speech ->
the agent's first audio; in voice mode the reply is one WAV, so that is also its last),
whole-turn latency (-> the turn's last message), transcript latency (voice mode:
-> user_text), turns per second, errors, calls refused at capacity (503 with Retry-After:
not errors; the caller waits as told and dials its next call) and lost turns (answered,
but missing from the call's stored history); server-side mean stage times from GET /metrics
when the server has them. Writes results/loadgen-<label>-<time>.json, .md and .png.

Bounded: each step holds at least --min-turns turns (more calls per caller), at most
--turns turns a call, cut at --step-timeout-s (turns still running then count as errors);
the sweep is repeated --repeats times. Loopback only unless --allow-remote.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import math
import random
import sys
import time
import wave
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import httpx
import numpy as np
import report
import server_metrics
from common import summarize, write_results
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from salesagent.voice.audio import read_wav
from salesagent.voice.stream_client import StreamTimeout, stream_call
from salesagent.voice.voice_client import API, TurnResult, converse, send_turn, start_call

CLIP_CACHE = Path(__file__).parent / ".cache" / "clips"
PHONE = "555-010-0100"
AGENT_WORDS_PER_S = 2.5  # the Hibari voice's pace, to "listen" to a reply that came as text

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
# The p95 voice-to-voice bound by mode (see benchmarks/RESULTS.md, "Bound").
DEFAULT_BOUND_S = {"stream": 5.0, "voice": 10.0, "text": 10.0}


@dataclass(frozen=True)
class Clip:
    text: str
    wav: bytes

    @property
    def duration_s(self) -> float:
        return wav_seconds(self.wav)

    def samples(self) -> tuple[np.ndarray, int]:
        """The clip as float samples and their rate, as a microphone would stream them."""
        return read_wav(self.wav)


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
    mode: Literal["stream", "voice", "text"] = "stream"
    turns: int = 4
    calls_per_worker: int = 1
    min_turns: int = 30  # per step: callers hold more calls each until there are this many
    repeats: int = 1
    think_s: tuple[float, float] = (1.0, 2.0)
    listen: bool = True  # wait while the agent's reply would play, as a prospect does
    ramp_s: float = 4.0  # workers start at random within this, so calls are not in lockstep
    turn_timeout_s: float = 120.0
    step_timeout_s: float = 900.0
    pause_s: float = 3.0  # between steps: queues drain, exporters publish
    seed: int = 0

    def calls_per_caller(self, concurrency: int) -> int:
        """Enough calls in a row for each caller that the step holds `min_turns` turns."""
        needed = math.ceil(self.min_turns / (concurrency * self.turns))
        return max(self.calls_per_worker, needed)


class Refused(Exception):
    """start-call answered 503 at capacity; `retry_after_s` is None when the answer lacked
    the Retry-After header or the capacity body (that is an error, not a clean refusal)."""

    def __init__(self, retry_after_s: float | None, detail: str):
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Step:
    """One concurrency level: its samples, errors and a progress line per event."""

    def __init__(self, label: str, concurrency: int, repeat: int = 1):
        self.label, self.concurrency, self.repeat = label, concurrency, repeat
        self.started = time.perf_counter()
        self.v2v: list[float] = []
        self.turn: list[float] = []
        self.transcript: list[float] = []
        self.errors: Counter[str] = Counter()
        self.in_flight = 0
        self.calls = 0
        self.calls_completed = 0
        self.calls_ended_by_agent = 0
        self.refused = 0
        self.lost_turns = 0

    def log(self, text: str) -> None:
        elapsed = time.perf_counter() - self.started
        where = f"{self.label} r{self.repeat} c={self.concurrency}"
        print(f"[{where} +{elapsed:5.1f}s] {text}", flush=True)

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
        """Counted by its kind (the message without the events it lists, at most 120
        characters); the progress log keeps the whole of it."""
        self.errors[kind.split("; last events")[0][:120]] += 1
        self.log(f"call {call} turn {turn or '-'}: ERROR {kind}")

    def result(self) -> dict:
        wall_s = time.perf_counter() - self.started
        turns_ok = len(self.turn)
        errors = sum(self.errors.values())
        return {
            "concurrency": self.concurrency,
            "repeat": self.repeat,
            "calls": self.calls,
            "calls_completed": self.calls_completed,
            "calls_ended_by_agent": self.calls_ended_by_agent,
            "calls_refused": self.refused,
            "lost_turns": self.lost_turns,
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


async def _start(cfg: LoadConfig, client: httpx.AsyncClient, call: int) -> dict:
    """POST start-call: the new call's body, or Refused when the service is at capacity."""
    r = await client.post(
        f"{API}/start-call", json={"customer_name": f"Lead {call}", "phone_number": PHONE}
    )
    if r.status_code == 503 and "capacity" in r.text:
        retry_after = r.headers.get("Retry-After", "")
        clean = retry_after.isdigit() and "capacity" in r.json()
        raise Refused(float(retry_after) if clean else None, r.text[:80])
    r.raise_for_status()
    return r.json()


async def _voice_call(
    cfg: LoadConfig, step: Step, call: int, started: dict, clips: list[Clip], rng: random.Random
) -> int:
    """The contract's WebSocket, a whole clip per turn; returns the turns answered."""
    answered = 0
    ws_url = cfg.url.replace("http", "ws", 1) + f"/ws/voice-chat/{started['call_id']}"
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
                answered += 1
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
                return answered
        await _hang_up(socket)
    return answered


async def _hang_up(socket: _TimedSocket | ClientConnection) -> None:
    """End the call as a caller hanging up: it leaves the active calls at once."""
    await socket.send(json.dumps({"type": "control", "command": "end_call"}))
    with suppress(ConnectionClosed):
        while True:
            await socket.recv()


async def _end_call(url: str, call_id: str) -> None:
    """Hang up a call held over REST (or left open by the contract's client)."""
    ws_url = url.replace("http", "ws", 1) + f"/ws/voice-chat/{call_id}"
    async with connect(ws_url, max_size=None) as ws:
        await _hang_up(ws)


async def _stream_call(
    cfg: LoadConfig, step: Step, call: int, started: dict, clips: list[Clip], rng: random.Random
) -> int:
    """The streaming mode: a live microphone and speaker (salesagent.voice.stream_client);
    the prospect answers `think` seconds after the agent's last audio has played."""
    lines = []
    for clip in clips:
        samples, rate = clip.samples()
        lines.append((clip.text, samples))
    step.in_flight += 1  # a streamed call is always mid-turn for the step's bound
    timed_out = None
    try:
        held = await stream_call(
            cfg.url, started["call_id"], lines, rate=rate, pause_s=rng.uniform(*cfg.think_s),
            timeout_s=cfg.turn_timeout_s, hang_up=True,
        )  # fmt: skip
    except StreamTimeout as exc:  # the turns before it count
        held, timed_out = exc.call, exc
    finally:
        step.in_flight -= 1
    answered = 0
    for n, turn in enumerate(held.turns, start=1):
        for message in turn.errors:
            step.error(call, n, f"server: {message}")
        if turn.first_audio_s is None or turn.done_at is None:
            if not turn.errors and not (timed_out and n == len(held.turns)):
                step.error(call, n, "no reply audio")
            continue
        answered += 1
        speech_end = turn.audio_at - turn.first_audio_s
        turn_s, first_s = float(turn.done_at - speech_end), float(turn.first_audio_s)
        step.ok(call, n, turn_s=turn_s, v2v_s=first_s, heard_s=None)  # plain floats for JSON
        if turn.ended:
            step.calls_ended_by_agent += 1
    if timed_out:
        step.error(call, len(held.turns), f"timeout: {timed_out}")
    return answered


async def _text_call(
    cfg: LoadConfig, step: Step, call: int, started: dict, clips: list[Clip], rng: random.Random
) -> int:
    answered = 0
    async with httpx.AsyncClient(base_url=cfg.url, timeout=cfg.turn_timeout_s) as client:
        heard_at = time.perf_counter() + _listening_s(cfg, started["first_message"])
        for n, clip in enumerate(clips, start=1):
            # The prospect "says" the line: the same pace as in voice mode.
            await _sleep_until(heard_at + rng.uniform(*cfg.think_s) + clip.duration_s)
            step.in_flight += 1
            sent = time.perf_counter()
            try:
                r = await client.post(
                    f"{API}/respond/{started['call_id']}", json={"message": clip.text}
                )
            finally:
                step.in_flight -= 1
            if r.status_code != 200:
                step.error(call, n, f"HTTP {r.status_code}: {r.text[:80]}")
                heard_at = time.perf_counter()
                continue
            answered += 1
            step.ok(call, n, turn_s=time.perf_counter() - sent, v2v_s=None, heard_s=None)
            reply = r.json()
            if reply["should_end_call"]:
                step.calls_ended_by_agent += 1
                return answered
            heard_at = time.perf_counter() + _listening_s(cfg, reply["reply"])
    await _end_call(cfg.url, started["call_id"])
    return answered


Caller = Callable[[LoadConfig, Step, int, dict, list[Clip], random.Random], Awaitable[int]]
CALLERS: dict[str, Caller] = {"stream": _stream_call, "voice": _voice_call, "text": _text_call}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} on {exc.request.url.path}"
    return f"{type(exc).__name__}: {exc}"


async def _stored_turns(client: httpx.AsyncClient, call_id: str) -> int:
    """The customer's lines in the call's stored history."""
    r = await client.get(f"{API}/conversation/{call_id}")
    r.raise_for_status()
    return sum(1 for entry in r.json()["history"] if entry["speaker"] == "customer")


async def _worker(
    cfg: LoadConfig, step: Step, scripts: list[list[Clip]], rng: random.Random, calls: int
) -> None:
    await asyncio.sleep(rng.uniform(0, cfg.ramp_s))
    async with httpx.AsyncClient(base_url=cfg.url, timeout=cfg.turn_timeout_s) as client:
        dialed = 0
        while dialed < calls:  # a call refused at capacity is dialed again, as a dialer does
            call = step.next_call()
            dialed += 1
            try:
                started = await _start(cfg, client, call)
            except Refused as refused:
                if refused.retry_after_s is None:
                    step.error(call, None, f"503 without Retry-After: {refused}")
                    continue
                step.refused += 1
                dialed -= 1
                step.log(
                    f"call {call}: refused at capacity, retry after {refused.retry_after_s:g} s"
                )
                await asyncio.sleep(refused.retry_after_s)
                continue
            except Exception as exc:
                step.error(call, None, _describe(exc))
                continue
            clips = scripts[call % len(scripts)][: cfg.turns]
            try:
                answered = await CALLERS[cfg.mode](cfg, step, call, started, clips, rng)
                step.calls_completed += 1
                # Every turn answered must be in the stored history.
                if (lost := answered - await _stored_turns(client, started["call_id"])) > 0:
                    step.lost_turns += lost
                    step.error(call, None, f"{lost} answered turns missing from the history")
            except Exception as exc:  # a failed call is a data point, not the end of the run
                step.error(call, None, _describe(exc))


async def run_step(
    cfg: LoadConfig,
    concurrency: int,
    scripts: list[list[Clip]],
    label: str,
    served: int = 0,
    repeat: int = 1,
) -> dict:
    """`concurrency` callers at once, each holding calls in a row until the step has
    `cfg.min_turns` turns. `served`: turns the server completed before this step (for the
    metrics' difference)."""
    step = Step(label, concurrency, repeat)
    calls = cfg.calls_per_caller(concurrency)
    step.log(
        f"start: {concurrency} concurrent {cfg.mode} calls x {calls}, "
        f"{cfg.turns} turns each, cut at {cfg.step_timeout_s:.0f} s"
    )
    async with httpx.AsyncClient(base_url=cfg.url) as client:
        before = await server_metrics.settled_scrape(client, served)
        workers = [
            asyncio.create_task(
                _worker(
                    cfg,
                    step,
                    scripts,
                    random.Random(f"{cfg.seed}-{repeat}-{concurrency}-{w}"),
                    calls,
                )  # fmt: skip
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
    if cfg.mode == "stream":  # the first streamed turn loads the server's VAD, too
        samples, rate = clip.samples()
        held = stream_call(cfg.url, call_id, [(clip.text, samples)], rate=rate, hang_up=True)
        await asyncio.wait_for(held, cfg.step_timeout_s)
    elif cfg.mode == "voice":
        await asyncio.wait_for(converse(cfg.url, call_id, [clip.wav]), cfg.step_timeout_s)
        await _end_call(cfg.url, call_id)
    else:
        async with httpx.AsyncClient(base_url=cfg.url, timeout=cfg.turn_timeout_s) as client:
            r = await client.post(f"{API}/respond/{call_id}", json={"message": clip.text})
            r.raise_for_status()
        await _end_call(cfg.url, call_id)
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
    """One step per concurrency level, in order, the whole sweep `cfg.repeats` times; none
    starts after `deadline` (monotonic). `served`: turns the server completed before the
    sweep (the warm-up)."""
    steps = []
    for repeat in range(1, cfg.repeats + 1):
        for n, concurrency in enumerate(concurrencies):
            if deadline is not None and time.monotonic() > deadline:
                print(
                    f"[{label}] time bound reached: skipping repetition {repeat} from "
                    f"concurrency {concurrencies[n]}"
                )
                return steps
            steps.append(await run_step(cfg, concurrency, scripts, label, served, repeat))
            served += steps[-1]["turns_ok"]
            await asyncio.sleep(cfg.pause_s)
    return steps


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=sorted(CALLERS), default="stream")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--turns", type=int, default=MAX_TURNS, choices=range(1, MAX_TURNS + 1))
    parser.add_argument("--calls-per-worker", type=int, default=1, help="at least")
    parser.add_argument("--min-turns", type=int, default=30, help="turns per step, at least")
    parser.add_argument("--repeats", type=int, default=3, help="times the sweep is run")
    parser.add_argument(
        "--think-s", type=float, nargs=2, default=(1.0, 2.0), metavar=("MIN", "MAX")
    )
    parser.add_argument(
        "--no-listen", action="store_true", help="do not wait while the agent's reply plays"
    )
    parser.add_argument("--ramp-s", type=float, default=4.0)
    parser.add_argument("--turn-timeout-s", type=float, default=120.0)
    parser.add_argument("--step-timeout-s", type=float, default=900.0)
    parser.add_argument(
        "--bound-s", type=float, help="p95 voice-to-voice bound (default: stream 5 s, else 10 s)"
    )
    parser.add_argument("--max-error-rate", type=float, default=0.01)
    parser.add_argument("--no-warm-up", action="store_true")
    parser.add_argument("--seed", type=int, default=0)


def load_config(args: argparse.Namespace, url: str) -> LoadConfig:
    return LoadConfig(
        url=url,
        mode=args.mode,
        turns=args.turns,
        calls_per_worker=args.calls_per_worker,
        min_turns=args.min_turns,
        repeats=args.repeats,
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
    args.bound_s = args.bound_s or DEFAULT_BOUND_S[args.mode]
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
