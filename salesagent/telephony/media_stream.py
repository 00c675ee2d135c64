"""Twilio Media Streams as a thin codec over the streaming voice core.

`MediaStreamSocket` wraps the WebSocket Twilio opens and looks, to `RealtimeVoiceChat`,
like a streaming client: Twilio's `media` (base64 mu-law, 8 kHz) comes in as PCM16
frames; the core's PCM16 goes out as `media`, with a `mark` every ~200 ms of a sentence
and at its end; Twilio echoes a mark once the audio before it has played, and each echo
becomes the `played` acknowledgement a browser would send, so what the callee heard is
known. The core's `interrupted` becomes `clear` (Twilio drops its queued audio), the
opt-out key on the keypad becomes the `do_not_call` control, and `stop` (the callee hung
up) ends the connection. The core's other messages have no Twilio counterpart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

with warnings.catch_warnings():  # kept in 3.11-3.12; the audioop-lts package from 3.13
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from salesagent.voice.voice_chat import NORMAL_CLOSURE, VoiceSocket

RATE = 8000  # Twilio's media: mu-law, 8 kHz, mono
MARK_EVERY_MS = 200
logger = logging.getLogger("salesagent.telephony")


def mulaw_to_pcm16(payload: bytes) -> bytes:
    return audioop.ulaw2lin(payload, 2)


def pcm16_to_mulaw(pcm: bytes) -> bytes:
    return audioop.lin2ulaw(pcm, 2)


class StreamRefused(Exception):
    """The socket did not open a Media Stream as Twilio does."""


@dataclass
class StreamStart:
    """Twilio's `start` message: which stream, which call, what our TwiML passed."""

    stream_sid: str
    call_sid: str
    parameters: dict[str, str] = field(default_factory=dict)


async def read_start(socket: VoiceSocket, timeout_s: float = 10.0) -> StreamStart:
    """Read up to the `start` message (`connected` comes first); StreamRefused otherwise."""
    async with asyncio.timeout(timeout_s):
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                raise StreamRefused("the socket closed before the stream started")
            event = _decode(message.get("text"))
            if event is None or event.get("event") not in ("connected", "start"):
                raise StreamRefused("expected Twilio's connected and start messages")
            if event["event"] == "start":
                start = event.get("start") or {}
                media = start.get("mediaFormat") or {}
                if media.get("encoding") != "audio/x-mulaw" or media.get("sampleRate") != RATE:
                    raise StreamRefused(f"unsupported media format {media}")
                parameters = start.get("customParameters") or {}
                return StreamStart(
                    stream_sid=str(event.get("streamSid") or start.get("streamSid") or ""),
                    call_sid=str(start.get("callSid") or ""),
                    parameters={str(k): str(v) for k, v in parameters.items()},
                )


class MediaStreamSocket:
    """The `VoiceSocket` the core talks to, over the socket Twilio opened."""

    def __init__(
        self,
        socket: VoiceSocket,
        start: StreamStart,
        opt_out_digit: str,
        on_close: Callable[[], Awaitable[None]],
        last_mark_wait_s: float = 10.0,
    ):
        self._socket = socket
        self._sid = start.stream_sid
        self._opt_out_digit = opt_out_digit
        self._on_close = on_close  # hangs the call up, once the agent has finished
        self._last_mark_wait_s = last_mark_wait_s
        self._sentence: tuple[int, int] = (0, 0)  # (id, samples) of the sentence being sent
        self._sent = 0  # its samples sent so far
        self._marked = 0  # ... and up to where a mark was sent
        self._pending: set[str] = set()  # marks sent, not yet echoed
        self._all_played = asyncio.Event()
        self._all_played.set()
        self.hung_up = False  # Twilio said `stop`: the call is over on the phone side
        self._closed = False
        self._inbox: asyncio.Queue[dict] = asyncio.Queue()
        self._reader: asyncio.Task | None = None

    # --- Twilio -> core --------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        self._start_reading()
        return await self._inbox.get()

    def _start_reading(self) -> None:
        # One reader for the socket, so mark echoes are heard even while the core is not
        # receiving (it waits in `close` for the last one).
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            message = await self._socket.receive()
            if message["type"] == "websocket.disconnect":
                self._all_played.set()  # nothing more will be echoed
                await self._inbox.put(message)
                return
            event = _decode(message.get("text"))
            if event is None:
                logger.warning("not a Media Streams message; ignored")
                continue
            translated = self._translate(event)
            if translated is None:
                continue
            await self._inbox.put(translated)
            if translated["type"] == "websocket.disconnect":  # Twilio's `stop`
                return

    def _translate(self, event: dict) -> dict | None:
        kind = event.get("event")
        if kind == "media":
            media = event.get("media") or {}
            if media.get("track", "inbound") != "inbound":
                return None
            try:
                payload = base64.b64decode(media.get("payload") or "", validate=True)
            except (binascii.Error, TypeError):
                logger.warning("media payload is not base64; dropped")
                return None
            if not payload:
                return None
            return {"type": "websocket.receive", "bytes": mulaw_to_pcm16(payload)}
        if kind == "mark":
            return self._echoed(str((event.get("mark") or {}).get("name", "")))
        if kind == "dtmf":
            digit = str((event.get("dtmf") or {}).get("digit", ""))
            if digit == self._opt_out_digit:
                text = json.dumps({"type": "control", "command": "do_not_call"})
                return {"type": "websocket.receive", "text": text}
            return None
        if kind == "stop":
            self.hung_up = True
            self._all_played.set()
            return {"type": "websocket.disconnect", "code": NORMAL_CLOSURE}
        return None  # connected / start again, or events we do not use

    def _echoed(self, name: str) -> dict | None:
        """A mark Twilio echoed: that much of the sentence has played."""
        if name not in self._pending:
            return None  # cleared (the agent was interrupted), or not ours
        self._pending.discard(name)
        if not self._pending:
            self._all_played.set()
        sentence, _, played_ms = name.partition(":")
        text = json.dumps({"type": "played", "id": int(sentence), "ms": int(played_ms)})
        return {"type": "websocket.receive", "text": text}

    # --- core -> Twilio --------------------------------------------------------------------

    async def send_json(self, data: Any) -> None:
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "agent_sentence":
            self._sentence, self._sent, self._marked = (data["id"], data["samples"]), 0, 0
        elif kind == "interrupted":
            self._pending.clear()  # their echoes come back at once, and mean nothing played
            self._all_played.set()
            await self._send({"event": "clear", "streamSid": self._sid})
        elif kind == "error":
            logger.warning("voice stream error on a phone call: %s", data.get("message"))

    async def send_bytes(self, data: bytes) -> None:
        payload = base64.b64encode(pcm16_to_mulaw(data)).decode()
        await self._send({"event": "media", "streamSid": self._sid, "media": {"payload": payload}})
        self._sent += len(data) // 2
        sentence_id, samples = self._sentence
        sent_ms = self._sent * 1000 // RATE
        if sent_ms - self._marked >= MARK_EVERY_MS or self._sent >= samples:
            self._marked = sent_ms
            name = f"{sentence_id}:{sent_ms}"
            self._pending.add(name)
            self._all_played.clear()
            await self._send({"event": "mark", "streamSid": self._sid, "mark": {"name": name}})

    async def close(self, code: int = NORMAL_CLOSURE, reason: str | None = None) -> None:
        """The agent is done (it ended the call, or the call cannot go on): let the callee
        hear the last of it (Twilio echoes the last mark), hang up, close the stream."""
        if self._closed:
            return
        self._closed = True
        self._start_reading()
        if not self.hung_up:
            try:
                await asyncio.wait_for(self._all_played.wait(), self._last_mark_wait_s)
            except TimeoutError:
                logger.warning("no echo of the last mark within %.0f s", self._last_mark_wait_s)
            await self._on_close()
        self._reader.cancel()
        await self._socket.close(code=code, reason=reason)

    async def _send(self, message: dict) -> None:
        await self._socket.send_json(message)


def _decode(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
