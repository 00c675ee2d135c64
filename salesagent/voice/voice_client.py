"""A command-line voice client: holds a call over the WebSocket voice chat.

    python -m salesagent.voice.voice_client --name "John Doe" --say "Sure, what is it about?" \
        --say "How much is it?" --out replies/
    python -m salesagent.voice.voice_client --call-id <id> --wav question1.wav --wav question2.wav
    python -m salesagent.voice.voice_client --stream --say "Sure, what is it about?" \
        --say "How much is it?" --say "Wait, are there evening classes?" --interrupt-after 1.0

With --stream it uses the streaming mode: each line is streamed as PCM in real time, with
silence between turns, and the agent's sentences are played on a simulated speaker; with
--interrupt-after S, the last line is spoken S seconds into the reply to the one before
it (a barge-in). It saves what it heard of each reply as a WAV file.

Against a service that requires API keys, pass --api-key (or set SALES_API_KEY).

It starts a call (unless --call-id is given), then sends each customer turn as audio:
WAV files as they are, or text spoken by the project's TTS. It prints the transcripts
and the agent's words, and saves the agent's audio as numbered WAV files.
`converse()` is also the building block of the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import soxr
from websockets.asyncio.client import connect

from salesagent.voice.audio import decode_audio, encode_wav
from salesagent.voice.stream_client import stream_call

API = "/api/v1/sales"


@dataclass
class TurnResult:
    """What the server sent back for one customer turn, with client-side timings."""

    transcript: str = ""
    agent_text: str = ""  # only when the server fell back to text
    agent_audio: bytes = b""
    errors: list[str] = field(default_factory=list)
    ended: bool = False
    # End of the customer's audio sent -> the agent's reply (audio, or text) received.
    voice_to_voice_s: float | None = None


@dataclass
class Conversation:
    call_id: str
    greeting_audio: bytes = b""
    greeting_text: str = ""
    turns: list[TurnResult] = field(default_factory=list)


def _key_header(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


def start_call(
    base_url: str, customer_name: str, phone_number: str, api_key: str | None = None
) -> str:
    r = httpx.post(
        f"{base_url}{API}/start-call",
        json={"customer_name": customer_name, "phone_number": phone_number},
        headers=_key_header(api_key),
        timeout=60,
    )
    r.raise_for_status()
    return r.json()["call_id"]


async def converse(
    base_url: str,
    call_id: str,
    clips: list[bytes],
    timeout_s: float = 120,
    api_key: str | None = None,
) -> Conversation:
    """Send each clip as one customer turn; stop early when the agent ends the call."""
    ws_url = base_url.replace("http", "ws", 1) + f"/ws/voice-chat/{call_id}"
    conversation = Conversation(call_id)
    headers = _key_header(api_key)
    async with connect(
        ws_url, max_size=None, open_timeout=timeout_s, additional_headers=headers
    ) as ws:
        first = await asyncio.wait_for(ws.recv(), timeout_s)
        if isinstance(first, bytes):
            conversation.greeting_audio = first
        else:
            message = json.loads(first)
            conversation.greeting_text = message.get("text") or message.get("message", "")
            if message["type"] == "error":
                raise RuntimeError(f"voice chat refused: {conversation.greeting_text}")
        for clip in clips:
            turn = await send_turn(ws, clip, timeout_s)
            conversation.turns.append(turn)
            if turn.ended:
                break
        else:
            await ws.send("END_CONNECTION_REQUEST_BY_CLIENT")
    return conversation


async def send_turn(ws, clip: bytes, timeout_s: float) -> TurnResult:
    """Send one customer clip on an open voice-chat socket and collect the reply."""
    turn = TurnResult()
    await ws.send(clip)
    sent = time.perf_counter()
    while True:
        message = await asyncio.wait_for(ws.recv(), timeout_s)
        if isinstance(message, bytes):
            turn.agent_audio = message
        else:
            data = json.loads(message)
            kind = data["type"]
            if kind == "user_text":
                turn.transcript = data["text"]
                continue
            if kind == "error":
                turn.errors.append(data["message"])
                return turn  # the server keeps the connection open for the next turn
            if kind == "system":
                turn.ended = True
                return turn
            turn.agent_text = data["text"]  # agent_text: TTS failed
        turn.voice_to_voice_s = time.perf_counter() - sent
        # The agent's speech is the last message of a turn, unless the call ends next.
        try:
            follow = await asyncio.wait_for(ws.recv(), 0.5)
        except TimeoutError:
            return turn
        turn.ended = isinstance(follow, str) and json.loads(follow)["type"] == "system"
        return turn


def _speak(texts: list[str]) -> list[bytes]:
    from salesagent.voice.tts import TTSSettings, make_tts

    voice = make_tts(TTSSettings())
    return [voice.synthesize(text).to_wav() for text in texts]


def main() -> None:
    parser = argparse.ArgumentParser(description="Hold a sales call over the voice WebSocket.")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--call-id", help="join this call instead of starting one")
    parser.add_argument("--name", default="John Doe", help="customer name for a new call")
    parser.add_argument("--phone", default="555-010-0100")
    parser.add_argument("--wav", action="append", default=[], type=Path, help="a turn's audio")
    parser.add_argument("--say", action="append", default=[], help="a turn's text, spoken by TTS")
    parser.add_argument("--out", type=Path, default=Path("voice-replies"))
    parser.add_argument("--api-key", default=os.environ.get("SALES_API_KEY"))
    parser.add_argument("--stream", action="store_true", help="use the streaming mode")
    parser.add_argument("--rate", type=int, default=16000, help="streaming: input sample rate")
    parser.add_argument(
        "--interrupt-after", type=float, help="streaming: barge in with the last line after S s"
    )
    args = parser.parse_args()
    if not args.wav and not args.say:
        parser.error("give at least one --wav or --say")

    clips = [path.read_bytes() for path in args.wav] + _speak(args.say)
    call_id = args.call_id or start_call(args.url, args.name, args.phone, args.api_key)
    print(f"call {call_id}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stream:
        _stream(args, call_id, clips, [str(p) for p in args.wav] + args.say)
    else:
        _contract(args, call_id, clips)
    _print_history(args, call_id)


def _stream(args: argparse.Namespace, call_id: str, clips: list[bytes], said: list[str]) -> None:
    lines = []
    for text, clip in zip(said, clips, strict=True):
        samples = decode_audio(clip, max_bytes=len(clip) + 1, max_seconds=120).samples
        if args.rate != 16000:
            samples = soxr.resample(samples, 16000, args.rate)
        lines.append((text, samples))
    interrupt_turn = len(lines) - 1 if args.interrupt_after is not None else 1
    call = asyncio.run(
        stream_call(
            args.url,
            call_id,
            lines,
            rate=args.rate,
            interrupt_after=args.interrupt_after,
            interrupt_turn=interrupt_turn,
            api_key=args.api_key,
        )
    )

    def save(name: str, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
        (args.out / name).write_bytes(encode_wav(samples, call.output_rate))

    save("agent-00.wav", bytes(call.greeting))
    for n, turn in enumerate(call.turns, start=1):
        save(f"agent-{n:02d}.wav", bytes(turn.audio))
        timing = f" [first audio {turn.first_audio_s:.2f} s]" if turn.first_audio_s else ""
        print(f"turn {n}: heard {turn.transcript or '(not understood)'!r}{timing}")
        for sentence in turn.sentences:
            print(f"  agent: {sentence}")
        if turn.interrupted:
            stop = (
                f", audio stopped {turn.stop_s:.2f} s after the first word" if turn.stop_s else ""
            )
            print(f"  (interrupted after {turn.heard!r}{stop})")
        for error in turn.errors:
            print(f"  error: {error}")


def _contract(args: argparse.Namespace, call_id: str, clips: list[bytes]) -> None:
    conversation = asyncio.run(converse(args.url, call_id, clips, api_key=args.api_key))
    audio = [conversation.greeting_audio] + [t.agent_audio for t in conversation.turns]
    for n, wav in enumerate(audio):
        if wav:
            (args.out / f"agent-{n:02d}.wav").write_bytes(wav)
    for n, turn in enumerate(conversation.turns, start=1):
        heard = turn.transcript or "(not understood)"
        timing = f" [{turn.voice_to_voice_s:.2f} s voice to voice]" if turn.voice_to_voice_s else ""
        print(f"turn {n}: heard {heard!r}{timing}")
        for error in turn.errors:
            print(f"  error: {error}")


def _print_history(args: argparse.Namespace, call_id: str) -> None:
    """The words behind the agent's audio are in the call's history."""
    history = httpx.get(
        f"{args.url}{API}/conversation/{call_id}", headers=_key_header(args.api_key), timeout=30
    ).json()
    print("\nconversation:")
    for line in history["history"]:
        cut = " (interrupted)" if line.get("interrupted") else ""
        print(f"  {line['speaker']:8s} {line['text']}{cut}")
    print(f"call {'active' if history['is_active'] else 'ended'}; agent audio in {args.out}/")


if __name__ == "__main__":
    main()
