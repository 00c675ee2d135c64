"""Ingress deployment: the FastAPI app of the contract (REST and WebSocket).

HTTP concerns only: parse, call `SalesCallService`, map its exceptions to statuses.
The model deployments are reached through the clients in `deployments.clients`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import suppress

from fastapi import FastAPI, Request, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from redis.exceptions import RedisError

from deployments.clients import ServeLLMClient, ServeSTTClient, ServeTTSClient
from salesagent.audio import AudioError, AudioTooLarge, decode_audio
from salesagent.catalog import load_catalog
from salesagent.schemas import (
    ErrorResponse,
    HealthResponse,
    RespondRequest,
    RespondResponse,
    StartCallRequest,
    StartCallResponse,
)
from salesagent.service import (
    LLMUnavailable,
    NoSpeech,
    SalesCallService,
    STTFailed,
    STTUnavailable,
    TTSFailed,
)
from salesagent.sessions import CallBusy, CallNotFound, CallSession, SessionStore
from salesagent.settings import Settings
from salesagent.voice_chat import VoiceChat

API_PREFIX = "/api/v1/sales"
logger = logging.getLogger("salesagent.ingress")


app = FastAPI(
    title="AI Voice Sales Agent",
    description="Outbound sales calls held by an AI agent: text, audio and live voice.",
    responses={400: {"model": ErrorResponse}},
)


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail})


@app.exception_handler(RequestValidationError)
async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    # The contract answers malformed bodies with 400, where FastAPI defaults to 422.
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'] if p != 'body') or 'body'}: {err['msg']}"
        for err in exc.errors()
    )
    return _error(400, f"Invalid request: {problems}")


# Domain exceptions and the status each means; the body's detail is the exception's message.
# Checked in order: the first class the exception is an instance of decides.
_STATUS_OF: dict[type[Exception], int] = {
    AudioTooLarge: 413,
    AudioError: 400,
    NoSpeech: 400,
    CallNotFound: 404,
    CallBusy: 409,
    STTFailed: 500,
    LLMUnavailable: 503,
    STTUnavailable: 503,
}


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    status = next(code for cls, code in _STATUS_OF.items() if isinstance(exc, cls))
    return _error(status, str(exc))


for _exc_class in _STATUS_OF:
    app.add_exception_handler(_exc_class, _domain_error)


@app.exception_handler(RedisError)
async def _store_unavailable(_: Request, exc: RedisError) -> JSONResponse:
    logger.error("session store error: %r", exc)
    return _error(503, "Session store unavailable; nothing was changed, retry shortly")


def _checked_call_id(call_id: str) -> str:
    try:
        return str(uuid.UUID(call_id))
    except ValueError:
        raise CallNotFound(call_id) from None


async def _probe(ready, unavailable: type[Exception]) -> tuple[str, str]:
    # Defined above the class: Serve pickles the ingress class when it is decorated.
    try:
        return "ok", f"ready ({await ready})"
    except unavailable as exc:
        return "critical_issue", f"not ready: {exc}"


@serve.deployment(ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=256)
@serve.ingress(app)
class SalesIngress:
    def __init__(
        self,
        settings: Settings,
        llm: DeploymentHandle,
        stt: DeploymentHandle,
        tts: DeploymentHandle,
    ):
        self.settings = settings
        self.store = SessionStore(settings.redis)
        timeout, ready_timeout = settings.llm.request_timeout_s, settings.health_timeout_s
        self.llm = ServeLLMClient(llm, timeout, ready_timeout)
        self.stt = ServeSTTClient(stt, timeout, ready_timeout)
        self.tts = ServeTTSClient(tts, timeout, ready_timeout)
        self.service = SalesCallService(
            self.store,
            self.llm,
            load_catalog(settings.catalog_path),
            settings.conversation,
            stt=self.stt,
            tts=self.tts,
        )

    @app.post(f"{API_PREFIX}/start-call", status_code=201, response_model=StartCallResponse)
    async def start_call(self, body: StartCallRequest) -> StartCallResponse:
        session = await self.service.start_call(body.customer_name, body.phone_number)
        return StartCallResponse(call_id=session.call_id, first_message=session.history[0].text)

    @app.post(f"{API_PREFIX}/respond/{{call_id}}", response_model=RespondResponse)
    async def respond(self, call_id: str, body: RespondRequest) -> RespondResponse | JSONResponse:
        message = body.message.strip()
        if not message:
            return _error(400, "message must not be empty")
        limit = self.settings.conversation.max_message_chars
        if len(message) > limit:
            return _error(413, f"message is too long ({len(message)} characters, limit {limit})")
        turn = await self.service.respond(_checked_call_id(call_id), message)
        return RespondResponse(reply=turn.reply, should_end_call=turn.should_end_call)

    @app.post(f"{API_PREFIX}/respond-audio/{{call_id}}", response_model=RespondResponse)
    async def respond_audio(self, call_id: str, audio_file: UploadFile) -> RespondResponse:
        """The customer's speech as a file (WAV, MP3, OGG/Opus, WebM/Opus, ...)."""
        call_id = _checked_call_id(call_id)
        limits = self.settings.audio
        data = await audio_file.read(limits.max_bytes + 1)  # never more than one byte too many
        decoded = await asyncio.to_thread(
            decode_audio, data, max_bytes=limits.max_bytes, max_seconds=limits.max_seconds
        )
        text = await self.service.transcribe(call_id, decoded.samples)
        turn = await self.service.respond(call_id, text)
        return RespondResponse(reply=turn.reply, should_end_call=turn.should_end_call)

    @app.websocket("/ws/voice-chat/{call_id}")
    @app.websocket(f"{API_PREFIX}/ws/voice-chat/{{call_id}}")
    async def voice_chat(self, websocket: WebSocket, call_id: str) -> None:
        await websocket.accept()
        with suppress(CallNotFound):  # VoiceChat answers it with an error and code 1008
            call_id = _checked_call_id(call_id)
        await VoiceChat(websocket, call_id, self.service, self.settings.audio).run()

    @app.get(f"{API_PREFIX}/conversation/{{call_id}}", response_model=CallSession)
    async def conversation(self, call_id: str) -> CallSession:
        return await self.service.conversation(_checked_call_id(call_id))

    @app.get("/health", response_model=HealthResponse)
    @app.get(f"{API_PREFIX}/health", response_model=HealthResponse)
    async def health(self) -> HealthResponse:
        """Asks every deployment and Redis, each within the health bound, at the same time."""
        llm, stt, tts, store = await asyncio.gather(
            _probe(self.llm.ready(), LLMUnavailable),
            _probe(self.stt.ready(), STTUnavailable),
            _probe(self.tts.ready(), TTSFailed),
            self._store_health(),
        )
        healthy = all(status == "ok" for status, _ in (llm, stt, tts, store))
        return HealthResponse(
            status="ok" if healthy else "issues_present",
            app_title=self.settings.app_title,
            app_version=self.settings.app_version,
            llm_service_status=llm[0],
            llm_service_details=llm[1],
            stt_service_status=stt[0],
            stt_service_details=stt[1],
            tts_service_status=tts[0],
            tts_service_details=tts[1],
            session_store_status=store[0],
            session_store_details=store[1],
        )

    async def _store_health(self) -> tuple[str, str]:
        try:
            await asyncio.wait_for(self.store.ping(), self.settings.health_timeout_s)
            return "ok", "redis reachable"
        except (TimeoutError, RedisError, OSError) as exc:
            return "critical_issue", f"redis unreachable ({type(exc).__name__})"
