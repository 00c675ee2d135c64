"""A naive voice agent server: the same models and turn logic, served the simple way.

    python benchmarks/baseline_server.py --port 8100 --redis-url redis://127.0.0.1:26379/0

How simple voice agents are usually built: one FastAPI + uvicorn process and one global
lock, so only one model call (Whisper, Qwen, the voice) runs at a time: requests never
batch, stages never overlap. Everything else is the service's own code, so a turn does the
same work in both servers (the intent choice, the streamed reply with its cleanup, the
voice): `SalesCallService` for the workflow and prompts, `VoiceChat` for the WebSocket
protocol, `SessionStore` for the calls (Redis costs milliseconds a turn, and an in-memory
copy of the store would drift from the service's), `VLLMChatEngine`, `WhisperSTT` and the
TTS engine, with the settings of the Serve config's `args`. Only what the load generator
needs is served: POST start-call, POST respond, GET conversation, WS voice-chat (both
modes: the contract's, and `?mode=stream` with `RealtimeVoiceChat`) and GET /health. The
ingress's request checks (400/413) are left out.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import numpy as np
import uvicorn
import yaml
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse

from salesagent.platform.engine import Message, VLLMChatEngine
from salesagent.platform.schemas import (
    RespondRequest,
    RespondResponse,
    StartCallRequest,
    StartCallResponse,
)
from salesagent.platform.sessions import CallNotFound, CallSession, SessionStore
from salesagent.platform.settings import Settings
from salesagent.sales.catalog import load_catalog
from salesagent.sales.service import LLMUnavailable, SalesCallService, STTFailed, TTSFailed
from salesagent.voice.realtime import RealtimeVoiceChat
from salesagent.voice.stt import Transcript, WhisperSTT
from salesagent.voice.tts import TextToSpeech, make_tts
from salesagent.voice.voice_chat import VoiceChat

API = "/api/v1/sales"
ROOT = Path(__file__).resolve().parent.parent


class OneAtATime:
    """The three models behind one lock: the service's LLM, STT and TTS clients in one."""

    def __init__(self, llm: VLLMChatEngine, stt: WhisperSTT, tts: TextToSpeech):
        self._llm, self._stt, self._tts = llm, stt, tts
        self._lock = asyncio.Lock()

    async def ready(self) -> str:
        await self._llm.check_health()
        return self._llm.describe()

    async def choose(self, messages: list[Message], choices: list[str]) -> str:
        async with self._lock:
            try:
                return await self._llm.choose(messages, choices)
            except Exception as exc:
                raise LLMUnavailable(f"LLM failed: {type(exc).__name__}") from exc

    async def stream(
        self, messages: list[Message], max_tokens: int | None = None
    ) -> AsyncIterator[str]:
        # aclosing: when the service stops reading (two sentences), vLLM aborts the request
        # before the next model call takes the lock.
        async with self._lock, aclosing(self._llm.stream_chat(messages, max_tokens)) as deltas:
            try:
                async for delta in deltas:
                    if delta.text:
                        yield delta.text
            except Exception as exc:
                raise LLMUnavailable(f"LLM failed: {type(exc).__name__}") from exc

    async def transcribe(self, samples: np.ndarray) -> Transcript:
        async with self._lock:
            try:
                return await asyncio.to_thread(self._stt.transcribe, samples)
            except Exception as exc:
                raise STTFailed(f"STT failed: {exc!r}"[:300]) from exc

    async def synthesize(self, text: str) -> bytes:
        async with self._lock:
            try:
                speech = await asyncio.to_thread(self._tts.synthesize, text)
            except Exception as exc:
                raise TTSFailed(f"TTS failed: {type(exc).__name__}") from exc
        return speech.to_wav()


def config_args(config: Path) -> dict:
    """The `args` of the first application in a Serve config: the service's own settings."""
    return yaml.safe_load(config.read_text())["applications"][0].get("args") or {}


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        llm = VLLMChatEngine(settings.llm)  # ~40 s on 2 cores
        models = OneAtATime(llm, WhisperSTT(settings.stt), make_tts(settings.tts))
        store = SessionStore(settings.redis)
        app.state.service = SalesCallService(
            store,
            models,
            load_catalog(settings.catalog_path),
            settings.conversation,
            stt=models,
            tts=models,
            audio=settings.audio,
        )
        yield
        await store.close()
        llm.shutdown()

    app = FastAPI(title="Naive voice agent (baseline)", lifespan=lifespan)

    @app.exception_handler(CallNotFound)
    async def _not_found(_: Request, exc: CallNotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(LLMUnavailable)
    async def _unavailable(_: Request, exc: LLMUnavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.post(f"{API}/start-call", status_code=201, response_model=StartCallResponse)
    async def start_call(body: StartCallRequest, request: Request) -> StartCallResponse:
        session = await request.app.state.service.start_call(body.customer_name, body.phone_number)
        return StartCallResponse(call_id=session.call_id, first_message=session.history[0].text)

    @app.post(f"{API}/respond/{{call_id}}", response_model=RespondResponse)
    async def respond(call_id: str, body: RespondRequest, request: Request) -> RespondResponse:
        turn = await request.app.state.service.respond(call_id, body.message.strip())
        return RespondResponse(reply=turn.reply, should_end_call=turn.should_end_call)

    @app.get(f"{API}/conversation/{{call_id}}", response_model=CallSession)
    async def conversation(call_id: str, request: Request) -> CallSession:
        return await request.app.state.service.conversation(call_id)

    @app.websocket("/ws/voice-chat/{call_id}")
    async def voice_chat(websocket: WebSocket, call_id: str) -> None:
        await websocket.accept()
        service, query = websocket.app.state.service, websocket.query_params
        if query.get("mode") != "stream":
            return await VoiceChat(websocket, call_id, service).run()
        # The streaming mode: the service's own pipeline (VAD, end of turn, a sentence at a
        # time), its model calls behind the same one lock.
        await RealtimeVoiceChat(
            websocket,
            call_id,
            service,
            settings.limits,
            settings.turns,
            input_rate=int(query.get("rate", 16000)),
            output_rate=int(query.get("output_rate", 24000)),
        ).run()

    @app.get("/health")
    async def health(request: Request) -> dict[str, str]:
        return {"status": "ok", "llm": await request.app.state.service.llm.ready()}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.cpu.yaml")
    # Required: a benchmark must not write its calls into someone's Redis by default.
    parser.add_argument("--redis-url", required=True, help="a Redis of its own, on loopback")
    args = parser.parse_args()
    serve_args = config_args(args.config)
    serve_args["redis"] = {**serve_args.get("redis", {}), "url": args.redis_url}
    settings = Settings.from_args(serve_args)
    # Loopback only; messages up to 16 MiB, as the service's WebSocket server takes.
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        ws_max_size=16 * 1024 * 1024,
    )


if __name__ == "__main__":  # vLLM's engine process re-imports this module
    main()
