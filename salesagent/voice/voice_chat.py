"""The WebSocket voice chat protocol (`/ws/voice-chat/{call_id}` in the API contract).

Server to client: WAV bytes of agent speech; JSON `agent_text` (when TTS fails),
`user_text` (the transcript), `system` (the call ended) and `error` messages.
Client to server: audio bytes (any format `decode_audio` reads), or a control message:
`END_CONNECTION_REQUEST_BY_CLIENT` closes the connection and keeps the call open;
`{"type": "control", "command": "end_call"}` ends the call, then closes.

Each turn goes through `SalesCallService`, so it lands in the same history as REST
turns and is stored whole or not at all: a client that vanishes mid-turn leaves either
the complete turn or nothing. One socket per call: a second one is refused (code 1008).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from contextlib import suppress
from time import perf_counter
from typing import Any, Protocol

from salesagent.platform.sessions import CallInUse, CallNotFound
from salesagent.platform.settings import LimitsSettings
from salesagent.sales.service import (
    CallLimitReached,
    LLMUnavailable,
    NoSpeech,
    SalesCallService,
    STTFailed,
    STTUnavailable,
    TTSFailed,
)
from salesagent.voice.audio import AudioError

END_CONNECTION = "END_CONNECTION_REQUEST_BY_CLIENT"
POLICY_VIOLATION = 1008  # WebSocket close code for an invalid call id
NORMAL_CLOSURE = 1000


class VoiceSocket(Protocol):
    """The part of Starlette's WebSocket the protocol uses."""

    async def receive(self) -> dict[str, Any]: ...

    async def send_json(self, data: Any) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int = NORMAL_CLOSURE, reason: str | None = None) -> None: ...


KEY_SUBPROTOCOL = "api-key."  # a browser's way to send its key: ["salesagent", "api-key.<key>"]


def key_from_subprotocols(offered: list[str]) -> str | None:
    return next(
        (p.removeprefix(KEY_SUBPROTOCOL) for p in offered if p.startswith(KEY_SUBPROTOCOL)), None
    )


async def refuse(socket: VoiceSocket, message: str) -> None:
    """Turn an accepted connection away: an error message, then close code 1008."""
    with suppress(Exception):  # the client may already be gone
        await socket.send_json({"type": "error", "message": message})
        await socket.close(code=POLICY_VIOLATION)


class ClientGone(Exception):
    """The client disconnected; nothing more can be sent."""


# {"type": "control", "command": ...}: end the call; or (streaming mode) the lead asked not
# to be called again by other means than words (a phone's keypad).
CONTROL_COMMANDS = ("end_call", "do_not_call")


def parse_control(text: str) -> str | None:
    """The control command in a text message ("end_connection", "end_call",
    "do_not_call"), else None."""
    if text.strip() == END_CONNECTION:
        return "end_connection"
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("type") != "control":
        return None
    command = message.get("command")
    return command if command in CONTROL_COMMANDS else None


class VoiceChat:
    def __init__(
        self,
        socket: VoiceSocket,
        call_id: str,
        service: SalesCallService,
        limits: LimitsSettings | None = None,
    ):
        self.socket = socket
        self.call_id = call_id
        self.service = service
        self.limits = limits or LimitsSettings()

    async def run(self) -> None:
        with suppress(ClientGone):  # the call stays as the last complete turn left it
            await self._run()

    async def _run(self) -> None:
        store = self.service.store
        try:
            session = await store.get_active(self.call_id)
            async with store.websocket_claim(self.call_id, self.limits.ws_claim_ttl_s):
                await self._say(session.history[0].text)
                await self._converse()
        except (CallNotFound, CallInUse) as exc:
            await refuse(self.socket, str(exc))

    async def _converse(self) -> None:
        text_limit = self.limits.max_ws_text_bytes
        while True:
            message = await self.socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if (text := message.get("text")) is not None:
                if len(text.encode()) > text_limit:
                    await self._error(f"Text message too large (limit {text_limit} bytes)")
                elif await self._control(text):
                    return
                continue
            if await self._turn(message.get("bytes") or b""):
                return

    async def _control(self, text: str) -> bool:
        """Handle a text message; True when the connection is over."""
        command = parse_control(text)
        if command == "end_connection":
            await self.socket.close(code=NORMAL_CLOSURE)
            return True
        if command == "end_call":
            with suppress(CallNotFound):  # already ended: the outcome the client asked for
                await self.service.end_call(self.call_id)
            await self._send_json({"type": "system", "message": "Call ended by client."})
            await self.socket.close(code=NORMAL_CLOSURE)
            return True
        await self._error(
            f"Unknown text message; send audio bytes, {END_CONNECTION!r} or "
            '{"type": "control", "command": "end_call"}'
        )
        return False

    async def _turn(self, data: bytes) -> bool:
        """One spoken turn; True when the call has ended."""
        try:
            return await self._hear_and_answer(data)
        except CallNotFound:
            return await self._call_over()
        except CallLimitReached as exc:
            await refuse(self.socket, str(exc))
            return True

    async def _hear_and_answer(self, data: bytes) -> bool:
        """Errors a client can recover from are reported and keep the connection open;
        CallNotFound and CallLimitReached end it (in `_turn`)."""
        received = perf_counter()
        try:
            text = await self.service.hear(self.call_id, data)
        except AudioError as exc:
            await self._error(f"Bad audio: {exc}")
            return False
        except (NoSpeech, STTFailed, STTUnavailable, LLMUnavailable) as exc:
            await self._error(str(exc))  # the connection stays open for the next try
            return False

        await self._send_json({"type": "user_text", "text": text})
        try:
            turn = await self.service.respond(self.call_id, text, channel="websocket")
        except LLMUnavailable as exc:
            await self._error(str(exc))
            return False
        await self._say(turn.reply, since=received)
        if turn.should_end_call:
            await self._send_json({"type": "system", "message": "Call ended by agent."})
            await self.socket.close(code=NORMAL_CLOSURE)
            return True
        return False

    async def _call_over(self) -> bool:
        # Ended meanwhile through another channel (REST, another socket, expiry).
        await self._send_json({"type": "system", "message": "Call has ended."})
        await self.socket.close(code=NORMAL_CLOSURE)
        return True

    async def _say(self, text: str, since: float | None = None) -> None:
        """Agent speech as WAV bytes; the text itself when TTS fails. With `since` (when the
        customer's audio arrived), records the voice-to-voice latency."""
        try:
            audio = await self.service.speak(text)
        except TTSFailed:
            await self._send_json({"type": "agent_text", "text": text})
            return
        if since is not None:
            self.service.metrics.observe(
                "salesagent_voice_to_voice_seconds", perf_counter() - since
            )
        await self._send(self.socket.send_bytes(audio))

    async def _error(self, message: str) -> None:
        await self._send_json({"type": "error", "message": message})

    async def _send_json(self, data: dict[str, str]) -> None:
        await self._send(self.socket.send_json(data))

    @staticmethod
    async def _send(sending: Awaitable[None]) -> None:
        try:
            await sending
        except Exception as exc:  # Starlette raises WebSocketDisconnect or RuntimeError
            raise ClientGone from exc
