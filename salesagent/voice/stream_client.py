"""A real-time client of the streaming voice mode, as a microphone and a speaker would be.

It streams PCM16 frames every 20 ms without a break (the customer's lines, silence between
them), plays the agent's audio on a simulated speaker clock, acknowledges what it has
played, drops its queue when the server says `interrupted`, and can talk over the agent
(`interrupt_after`). Used by the command-line client (`voice_client --stream`), the tests
and the benchmarks; it keeps, per turn, client-side timings:

- `first_audio_s`: the end of the customer's speech sent -> the reply's first audio in;
- `stop_s`: the start of the interrupting speech sent -> the last agent audio received.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import numpy as np
from websockets.asyncio.client import connect

from salesagent.voice.pcm import pcm16

FRAME_S = 0.02
_SPEECH_LEVEL = 0.02  # a sample this loud counts as speech when timing a clip


@dataclass
class StreamTurn:
    said: str = ""
    transcript: str = ""
    sentences: list[str] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)  # agent PCM16 received for this turn
    first_audio_s: float | None = None
    interrupted: bool = False
    heard: str = ""  # what the server says the customer heard, when interrupted
    stop_s: float | None = None
    ended: bool = False
    errors: list[str] = field(default_factory=list)
    done: bool = False
    timeline: dict[str, float] = field(default_factory=dict)  # the server's, from turn_done
    end_of_turn_wait_s: float | None = None  # the server's: end of speech -> end of turn
    rewritten: bool = False  # the server wrote the reply again after reading the line
    worded_by: str = ""  # the server's: "model" (written for this turn) or "catalog"
    audio_at: float | None = None  # when its first agent audio came (time.monotonic)
    done_at: float | None = None  # when `turn_done` came (time.monotonic)
    sentence_at: list[float] = field(default_factory=list)  # when each sentence was announced


class StreamTimeout(TimeoutError):
    """The server did not answer in time; `call` holds what came until then."""

    def __init__(self, message: str, call: StreamCall):
        super().__init__(message)
        self.call = call


@dataclass
class StreamCall:
    call_id: str
    output_rate: int = 24000
    greeting: bytearray = field(default_factory=bytearray)
    turns: list[StreamTurn] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)


def speech_bounds(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """Seconds from a clip's start to its first and to its last loud sample."""
    loud = np.flatnonzero(np.abs(samples) > _SPEECH_LEVEL)
    if not len(loud):
        return 0.0, 0.0
    return loud[0] / rate, (loud[-1] + 1) / rate


class _Speaker:
    """The client's playback: audio plays in arrival order at real time."""

    def __init__(self, rate: int):
        self.rate = rate
        self.ends_at = 0.0
        self.sentence: tuple[int, float] | None = None  # (id, its first chunk's play start)

    def add(self, sentence_id: int, chunk: bytes) -> None:
        now = time.monotonic()
        start = max(now, self.ends_at)
        if self.sentence is None or self.sentence[0] != sentence_id:
            self.sentence = (sentence_id, start)
        self.ends_at = start + len(chunk) / 2 / self.rate

    def clear(self) -> None:
        self.ends_at, self.sentence = time.monotonic(), None

    def played(self) -> tuple[int, float] | None:
        if self.sentence is None:
            return None
        sentence_id, start = self.sentence
        return sentence_id, max(0.0, min(time.monotonic(), self.ends_at) - start) * 1000

    async def drained(self, extra_s: float = 0.0) -> None:
        """Until all audio has played and `extra_s` more passed without any: a slow server's
        next sentence can come after the last one has played, and a listener waits for it."""
        while True:
            while (left := self.ends_at - time.monotonic()) > 0:
                await asyncio.sleep(left)
            await asyncio.sleep(extra_s)
            if self.ends_at <= time.monotonic():
                return


async def stream_call(
    base_url: str,
    call_id: str,
    lines: list[tuple[str, np.ndarray]],
    *,
    rate: int = 16000,
    output_rate: int = 24000,
    pause_s: float = 1.0,
    interrupt_after: float | None = None,
    interrupt_turn: int = 1,
    api_key: str | None = None,
    timeout_s: float = 120.0,
    hang_up: bool = False,
) -> StreamCall:
    """Hold a call: each (text, samples at `rate`) line is spoken after the agent has
    finished (and `pause_s`); with `interrupt_after`, line `interrupt_turn + 1` is spoken
    that many seconds into the agent's reply to line `interrupt_turn` (1-based). After the
    last line the connection closes and the call stays open, or with `hang_up` the call
    ends (`end_call`), as a caller hanging up."""
    url = base_url.replace("http", "ws", 1) + (
        f"/ws/voice-chat/{call_id}?mode=stream&rate={rate}&output_rate={output_rate}"
    )
    headers = {"X-API-Key": api_key} if api_key else {}
    call = StreamCall(call_id, output_rate)
    speaker = _Speaker(output_rate)
    mic: asyncio.Queue[np.ndarray] = asyncio.Queue()
    frame = round(rate * FRAME_S)
    state = {"turn": None, "sentence": 0, "speech_end": None, "barge_start": None}
    turn_over = asyncio.Event()
    reply_audio = asyncio.Event()
    ready = asyncio.Event()
    greeted = asyncio.Event()  # the greeting's first audio is in

    opened = connect(url, max_size=None, open_timeout=timeout_s, additional_headers=headers)
    async with opened as ws:

        async def send_mic() -> None:
            """20 ms frames in real time: queued speech, else silence."""
            pending = np.zeros(0, np.float32)
            next_at = time.monotonic()
            while True:
                if not len(pending) and not mic.empty():
                    pending = mic.get_nowait()
                chunk = pending[:frame] if len(pending) else np.zeros(frame, np.float32)
                pending = pending[frame:]
                await ws.send(pcm16(chunk))
                next_at += FRAME_S
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        async def acknowledge() -> None:
            while True:
                await asyncio.sleep(0.2)
                if (played := speaker.played()) and speaker.ends_at > time.monotonic():
                    await ws.send(json.dumps({"type": "played", "id": played[0], "ms": played[1]}))

        async def receive() -> None:
            async for message in ws:
                now = time.monotonic()
                turn: StreamTurn | None = state["turn"]
                if isinstance(message, bytes):
                    speaker.add(state["sentence"], message)
                    if turn is None:
                        call.greeting += message
                        greeted.set()
                        continue
                    turn.audio += message
                    if turn.audio_at is None:
                        turn.audio_at = now
                    if turn.first_audio_s is None and state["speech_end"]:
                        turn.first_audio_s = now - state["speech_end"]
                        reply_audio.set()
                    if state["barge_start"] is not None and not turn.interrupted:
                        turn.stop_s = now - state["barge_start"]
                    continue
                data = json.loads(message)
                kind = data["type"]
                call.events.append((now, kind))
                if kind == "ready":
                    ready.set()
                elif kind == "agent_sentence":
                    state["sentence"] = data["id"]
                    if turn is not None:
                        turn.sentences.append(data["text"])
                        turn.sentence_at.append(now)
                elif kind == "user_text" and turn is not None:
                    turn.transcript = data["text"]
                elif kind == "interrupted":
                    speaker.clear()
                    # Before any of its reply came, this turn's words cut what the agent was
                    # saying before it (the greeting): its reply is still to come.
                    if turn is not None and turn.audio_at is not None:
                        turn.interrupted, turn.heard = True, data["heard"]
                        turn_over.set()
                elif kind == "turn_done" and turn is not None:
                    turn.done, turn.timeline = True, data.get("timeline", {})
                    turn.done_at = now
                    turn.ended = bool(data.get("should_end_call"))  # `system` follows
                    turn.end_of_turn_wait_s = data.get("end_of_turn_wait_s")
                    turn.rewritten = bool(data.get("rewritten"))
                    turn.worded_by = data.get("worded_by", "")
                    turn_over.set()
                elif kind == "error":
                    if turn is not None:
                        turn.errors.append(data["message"])
                        if data.get("turn_failed"):  # no reply comes to these words
                            turn_over.set()
                    else:
                        raise RuntimeError(f"voice chat refused: {data['message']}")
                elif kind == "system":
                    if turn is not None:
                        turn.ended = True
                    turn_over.set()
                    return

        tasks = [asyncio.ensure_future(t()) for t in (send_mic, acknowledge, receive)]
        receiver = tasks[2]
        try:
            await _first(ready, timeout_s, receiver)
            await _first(greeted, timeout_s, receiver)  # a lead hears the greeting out
            await speaker.drained(pause_s)
            for n, (text, samples) in enumerate(lines, start=1):
                turn = StreamTurn(said=text)
                call.turns.append(turn)
                start_s, end_s = speech_bounds(samples, rate)
                turn_over.clear()
                reply_audio.clear()
                sent_at = time.monotonic()
                barging = interrupt_after is not None and n == interrupt_turn + 1
                if barging and not call.turns[-2].done:
                    # Spoken over the last reply: its audio keeps arriving until the server
                    # says `interrupted` (or the reply ends first).
                    state["barge_start"] = sent_at + start_s
                    await mic.put(samples)
                    await _first(turn_over, timeout_s, receiver)
                    turn_over.clear()
                    state["barge_start"] = None
                else:
                    await mic.put(samples)
                state["turn"], state["speech_end"] = turn, sent_at + end_s
                if interrupt_after is not None and n == interrupt_turn and n < len(lines):
                    await _first(reply_audio, timeout_s, receiver)
                    await asyncio.sleep(interrupt_after)
                    continue
                await _first(turn_over, timeout_s, receiver)
                if turn.ended:
                    break
                await speaker.drained(pause_s)
            else:
                if not hang_up:
                    await ws.send("END_CONNECTION_REQUEST_BY_CLIENT")
                else:  # the server ends the call, says so (`system`), and closes
                    turn_over.clear()
                    await ws.send(json.dumps({"type": "control", "command": "end_call"}))
                    await _first(turn_over, timeout_s, receiver)
        except TimeoutError as exc:
            errors = call.turns[-1].errors if call.turns else []
            since = state["speech_end"] or time.monotonic()  # the events' times: from there
            events = [f"{kind} {at - since:+.1f}s" for at, kind in call.events[-10:]]
            raise StreamTimeout(
                f"turn {len(call.turns)}: no answer within {timeout_s:g} s; last events "
                f"(seconds from the end of the lead's speech) {events}, errors {errors}",
                call,
            ) from exc
        finally:
            for task in tasks:
                task.cancel()
    return call


async def _first(event: asyncio.Event, timeout_s: float, receiver: asyncio.Task) -> None:
    """Wait for `event`, but fail at once if the receiver died (a refused connection). An
    event it set before it ended counts: the agent ending the call sends `turn_done`, then
    `system`, and the receiver is over before this waiter has run."""
    waiting = asyncio.ensure_future(asyncio.wait_for(event.wait(), timeout_s))
    done, _ = await asyncio.wait({waiting, receiver}, return_when=asyncio.FIRST_COMPLETED)
    if waiting in done:
        return waiting.result()
    waiting.cancel()
    if event.is_set():
        return
    receiver.result()  # raises what killed it
    raise RuntimeError("the server closed the voice connection")
