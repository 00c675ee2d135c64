"""Ingress deployment: the FastAPI app of the contract (REST and WebSocket).

HTTP concerns only: parse, call `SalesCallService`, map its exceptions to statuses.
The model deployments are reached through the clients in `deployments.clients`.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import suppress

from fastapi import FastAPI, Request, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from redis.exceptions import RedisError

from deployments.clients import ServeLLMClient, ServeSTTClient, ServeTTSClient
from deployments.health_report import HealthReporter
from deployments.telemetry import RayMetrics, scrape_cluster
from salesagent.audio import AudioError, AudioTooLarge
from salesagent.catalog import load_catalog
from salesagent.metrics import only_own_metrics
from salesagent.schemas import (
    ErrorResponse,
    HealthResponse,
    RespondRequest,
    RespondResponse,
    StartCallRequest,
    StartCallResponse,
)
from salesagent.service import (
    DoNotCall,
    LLMUnavailable,
    NoSpeech,
    SalesCallService,
    STTFailed,
    STTUnavailable,
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
    DoNotCall: 403,
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
        self.telemetry = RayMetrics()
        self.store = SessionStore(settings.redis, metrics=self.telemetry)
        timeout, ready_timeout = settings.llm.request_timeout_s, settings.health_timeout_s
        llm_client = ServeLLMClient(llm, timeout, ready_timeout)
        stt_client = ServeSTTClient(stt, timeout, ready_timeout)
        tts_client = ServeTTSClient(tts, timeout, ready_timeout)
        self.service = SalesCallService(
            self.store,
            llm_client,
            load_catalog(settings.catalog_path),
            settings.conversation,
            stt=stt_client,
            tts=tts_client,
            audio=settings.audio,
            metrics=self.telemetry,
        )
        self.health_reporter = HealthReporter(
            settings, llm_client, stt_client, tts_client, self.store
        )
        self.open_websockets = 0

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
        # Never read more than one byte past the limit: that is enough to answer 413.
        data = await audio_file.read(self.settings.audio.max_bytes + 1)
        text = await self.service.hear(call_id, data)
        turn = await self.service.respond(call_id, text, channel="audio")
        return RespondResponse(reply=turn.reply, should_end_call=turn.should_end_call)

    @app.websocket("/ws/voice-chat/{call_id}")
    @app.websocket(f"{API_PREFIX}/ws/voice-chat/{{call_id}}")
    async def voice_chat(self, websocket: WebSocket, call_id: str) -> None:
        await websocket.accept()
        with suppress(CallNotFound):  # VoiceChat answers it with an error and code 1008
            call_id = _checked_call_id(call_id)
        self._count_websockets(+1)
        try:
            await VoiceChat(websocket, call_id, self.service).run()
        finally:
            self._count_websockets(-1)

    def _count_websockets(self, change: int) -> None:
        self.open_websockets += change
        self.telemetry.set("salesagent_websocket_connections", self.open_websockets)

    @app.get(f"{API_PREFIX}/conversation/{{call_id}}", response_model=CallSession)
    async def conversation(self, call_id: str) -> CallSession:
        return await self.service.conversation(_checked_call_id(call_id))

    @app.get("/health", response_model=HealthResponse)
    @app.get(f"{API_PREFIX}/health", response_model=HealthResponse)
    async def health(self) -> HealthResponse:
        """Readiness of every service, with replicas, recent p95 latency and error rate."""
        return await self.health_reporter.report()

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(self) -> str:
        """The service's own metrics from every node, in Prometheus text format."""
        text = await scrape_cluster(self.settings.metrics_scrape_timeout_s)
        return only_own_metrics(text)
