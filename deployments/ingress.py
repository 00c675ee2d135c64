"""Ingress deployment: the FastAPI app of the contract (REST and WebSocket).

HTTP concerns only: parse, call `SalesCallService`, map its exceptions to statuses.
The model deployments are reached through the clients in `deployments.clients`.
"""

from __future__ import annotations

import logging
import uuid
from importlib.resources import files
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.handle import DeploymentHandle
from redis.exceptions import RedisError

from deployments.autoscaling import ACTIVE_CALLS, WANTED
from deployments.body_limit import BodyLimit
from deployments.clients import ServeLLMClient, ServeSTTClient, ServeTTSClient
from deployments.fleet import Fleet
from deployments.health_report import HealthReporter
from deployments.telemetry import RayMetrics, scrape_cluster
from salesagent.platform.auth import KeyStore, RateLimited, Unauthorized
from salesagent.platform.capacity import AtCapacity, fleet_capacity, wanted_replicas
from salesagent.platform.metrics import only_own_metrics
from salesagent.platform.schemas import (
    CallList,
    DialResponse,
    ErrorResponse,
    HealthResponse,
    RespondRequest,
    RespondResponse,
    StartCallRequest,
    StartCallResponse,
)
from salesagent.platform.sessions import CallBusy, CallNotFound, CallSession, SessionStore
from salesagent.platform.settings import Settings
from salesagent.sales.catalog import load_catalog
from salesagent.sales.service import (
    CallLimitReached,
    DoNotCall,
    LLMUnavailable,
    NoSpeech,
    SalesCallService,
    STTFailed,
    STTUnavailable,
)
from salesagent.telephony.bridge import PhoneBridge
from salesagent.telephony.carrier import (
    STATUS_PATH,
    STREAM_PATH,
    VOICE_PATH,
    BadSignature,
    CarrierError,
    TelephonyNotConfigured,
)
from salesagent.voice.audio import AudioError, AudioTooLarge
from salesagent.voice.pcm import STREAM_RATES
from salesagent.voice.realtime import RealtimeVoiceChat
from salesagent.voice.voice_chat import VoiceChat, key_from_subprotocols, refuse

API_PREFIX = "/api/v1/sales"
logger = logging.getLogger("salesagent.ingress")


app = FastAPI(
    title="AI Voice Sales Agent",
    description="Outbound sales calls held by an AI agent: text, audio and live voice.",
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
    Unauthorized: 401,
    BadSignature: 403,
    CallNotFound: 404,
    CallBusy: 409,
    CallLimitReached: 409,
    STTFailed: 500,
    CarrierError: 502,
    LLMUnavailable: 503,
    TelephonyNotConfigured: 503,
    STTUnavailable: 503,
}


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    status = next(code for cls, code in _STATUS_OF.items() if isinstance(exc, cls))
    return _error(status, str(exc))


for _exc_class in _STATUS_OF:
    app.add_exception_handler(_exc_class, _domain_error)


@app.exception_handler(RateLimited)
async def _rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
    response = _error(429, str(exc))
    response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


@app.exception_handler(AtCapacity)
async def _at_capacity(request: Request, exc: AtCapacity) -> JSONResponse:
    """A dialer is told to come back; the body says why, with the figures."""
    retry_after_s = request.app.state.retry_after_s
    response = JSONResponse(
        status_code=503,
        content={
            "detail": str(exc),
            "capacity": exc.capacity,
            "active_calls": exc.active,
            "retry_after_s": retry_after_s,
        },
    )
    response.headers["Retry-After"] = str(retry_after_s)
    return response


@app.exception_handler(RedisError)
async def _store_unavailable(_: Request, exc: RedisError) -> JSONResponse:
    logger.error("session store error: %r", exc)
    return _error(503, "Session store unavailable; nothing was changed, retry shortly")


app.add_middleware(BodyLimit)

# The call console: static files shipped in the package, no build step (salesagent/console).
app.mount("/console/", StaticFiles(directory=str(files("salesagent") / "console"), html=True))


@app.get("/console", include_in_schema=False)
async def _console() -> RedirectResponse:
    # Relative, so it holds under any route prefix; the page's own links are relative too.
    return RedirectResponse("console/")


_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")
_bearer = HTTPBearer(auto_error=False, description="An API key as a Bearer token")


def presented_key(
    header: Annotated[str | None, Security(_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> str | None:
    """The API key a request carries, as `X-API-Key` or `Authorization: Bearer`."""
    return header or (bearer.credentials if bearer else None)


PresentedKey = Annotated[str | None, Depends(presented_key)]


_DESCRIPTIONS = {
    400: "Malformed body or parameters, empty message, or unreadable audio",
    401: "Missing, unknown or revoked API key (when keys are required)",
    403: "The number asked not to be called again",
    404: "No such call, it has ended, or it belongs to another API key",
    409: "Another turn holds the call, or the call has reached its turn or time limit",
    413: "Body, message or audio over its limit",
    429: "The API key's rate limit; see Retry-After",
    500: "Speech-to-text failed on this audio",
    502: "The phone carrier (Twilio) refused the request or could not be reached",
    503: (
        "A model service or the session store is unavailable, telephony is not set up, or "
        "the service is at capacity (start-call, dial: see Retry-After)"
    ),
}


def _errors(*codes: int) -> dict:
    """OpenAPI entries for the error statuses a route can answer, all `{"detail": ...}`."""
    return {c: {"model": ErrorResponse, "description": _DESCRIPTIONS[c]} for c in codes}


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
        self.fleet = Fleet(settings.health_timeout_s)
        app.state.retry_after_s = settings.capacity.retry_after_s
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
            limits=settings.limits,
            capacity=self._capacity,
        )
        self.health_reporter = HealthReporter(
            settings, llm_client, stt_client, tts_client, self.store, self.fleet
        )
        self.keys = KeyStore(self.store.redis, settings.auth.requests_per_minute)
        # Read by BodyLimit; an upload may carry the audio limit plus the form around it.
        app.state.body_limits = (
            settings.limits.max_json_body_bytes,
            settings.audio.max_bytes + 64 * 1024,
        )
        self.open_websockets = 0
        try:
            self.phone: PhoneBridge | None = PhoneBridge(
                settings.telephony, self.service, settings.limits, settings.turns
            )
        except TelephonyNotConfigured as exc:
            self.phone, self.phone_missing = None, exc

    async def _capacity(self) -> int | None:
        """The calls the LLM replicas running now hold (None: admission control is off)."""
        if not self.settings.capacity.calls_per_llm_replica:
            return None
        running = await self.fleet.running("LLMDeployment")
        capacity = fleet_capacity(self.settings.capacity, running)
        self.telemetry.set("salesagent_call_capacity", capacity)
        return capacity

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve asks every replica for these; the call-aware autoscaling policy
        (deployments/autoscaling.py) sizes the model deployments from them."""
        try:
            active = await self.store.active_count()
        except RedisError:  # no figure this time: the request-queue policy decides
            return {}
        wanted = wanted_replicas(self.settings.capacity, active)
        return {ACTIVE_CALLS: active, **{WANTED + name: n for name, n in wanted.items()}}

    async def _caller(self, key: str | None) -> str:
        """The id of the caller's API key ("" with auth off): 401 without a valid key, 429
        past the key's rate limit."""
        if not self.settings.auth.enabled:
            return ""
        api_key = await self.keys.authenticate(key)
        await self.keys.count_request(api_key)
        return api_key.id

    async def _owned(self, call_id: str, key: str | None) -> str:
        """The checked call id, once the caller may use it: another key's call is 404, as if
        it did not exist."""
        caller = await self._caller(key)  # 401 before anything about the call
        call_id = _checked_call_id(call_id)
        if self.settings.auth.enabled and await self.store.owner_of(call_id) != caller:
            raise CallNotFound(call_id)
        return call_id

    @app.post(
        f"{API_PREFIX}/start-call",
        status_code=201,
        response_model=StartCallResponse,
        responses=_errors(400, 401, 403, 413, 429, 503),
    )
    async def start_call(self, body: StartCallRequest, key: PresentedKey) -> StartCallResponse:
        owner = await self._caller(key)
        session = await self.service.start_call(body.customer_name, body.phone_number, owner)
        return StartCallResponse(call_id=session.call_id, first_message=session.history[0].text)

    @app.post(
        f"{API_PREFIX}/respond/{{call_id}}",
        response_model=RespondResponse,
        responses=_errors(400, 401, 404, 409, 413, 429, 503),
    )
    async def respond(
        self, call_id: str, body: RespondRequest, key: PresentedKey
    ) -> RespondResponse | JSONResponse:
        call_id = await self._owned(call_id, key)
        message = body.message.strip()
        if not message:
            return _error(400, "message must not be empty")
        limit = self.settings.conversation.max_message_chars
        if len(message) > limit:
            return _error(413, f"message is too long ({len(message)} characters, limit {limit})")
        turn = await self.service.respond(call_id, message)
        return RespondResponse(reply=turn.reply, should_end_call=turn.should_end_call)

    @app.post(
        f"{API_PREFIX}/respond-audio/{{call_id}}",
        response_model=RespondResponse,
        responses=_errors(400, 401, 404, 409, 413, 429, 500, 503),
    )
    async def respond_audio(
        self, call_id: str, audio_file: UploadFile, key: PresentedKey
    ) -> RespondResponse:
        """The customer's speech as a file (WAV, MP3, OGG/Opus, WebM/Opus, ...)."""
        call_id = await self._owned(call_id, key)
        # Never read more than one byte past the limit: that is enough to answer 413.
        data = await audio_file.read(self.settings.audio.max_bytes + 1)
        text = await self.service.hear(call_id, data)
        turn = await self.service.respond(call_id, text, channel="audio")
        return RespondResponse(reply=turn.reply, should_end_call=turn.should_end_call)

    @app.websocket("/ws/voice-chat/{call_id}")
    @app.websocket(f"{API_PREFIX}/ws/voice-chat/{{call_id}}")
    async def voice_chat(self, websocket: WebSocket, call_id: str) -> None:
        """The contract's voice chat (one WAV per audio message), or with `?mode=stream` live
        PCM16 frames (`rate`, default 16000) and the agent's sentences as PCM16 at
        `output_rate` (default 24000), with barge-in. Browsers, which cannot set headers
        here, send the key as the `token` query parameter or as the subprotocol
        `api-key.<key>` beside `salesagent`."""
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="salesagent" if "salesagent" in offered else None)
        key = (
            websocket.headers.get("x-api-key")
            or websocket.headers.get("authorization", "").removeprefix("Bearer ").strip()
            or websocket.query_params.get("token")
            or key_from_subprotocols(offered)
        )
        try:
            call_id = await self._owned(call_id, key)
        except (CallNotFound, Unauthorized, RateLimited) as exc:
            return await refuse(websocket, str(exc))  # an error message, then code 1008
        try:
            chat = self._voice_chat(websocket, call_id)
        except ValueError as exc:  # AudioError included: a rate or mode it does not take
            return await refuse(websocket, str(exc))
        self._count_websockets(+1)
        try:
            await chat.run()
        finally:
            self._count_websockets(-1)

    def _voice_chat(self, websocket: WebSocket, call_id: str) -> VoiceChat | RealtimeVoiceChat:
        query = websocket.query_params
        mode = query.get("mode", "contract")
        if mode == "contract":
            return VoiceChat(websocket, call_id, self.service, self.settings.limits)
        if mode != "stream":
            raise ValueError(f"unknown mode {mode[:32]!r}; use mode=stream or leave it out")
        rates = {}
        for name, default in (("rate", 16000), ("output_rate", 24000)):
            value = query.get(name, str(default))
            if not value.isdigit() or int(value) not in STREAM_RATES:
                raise ValueError(
                    f"{name} must be one of {', '.join(map(str, STREAM_RATES))}, not {value[:16]!r}"
                )
            rates[name] = int(value)
        return RealtimeVoiceChat(
            websocket,
            call_id,
            self.service,
            self.settings.limits,
            self.settings.turns,
            input_rate=rates["rate"],
            output_rate=rates["output_rate"],
        )

    def _count_websockets(self, change: int) -> None:
        self.open_websockets += change
        self.telemetry.set("salesagent_websocket_connections", self.open_websockets)

    # --- phone calls (Twilio) -------------------------------------------------------------

    def _bridge(self) -> PhoneBridge:
        if self.phone is None:
            raise self.phone_missing
        return self.phone

    async def _twilio_form(self, request: Request, path: str) -> dict[str, str]:
        """A Twilio webhook's form, once its signature is proven (403 otherwise; 404 with
        telephony off, as the route would not exist)."""
        if self.phone is None:
            raise HTTPException(404, str(self.phone_missing))
        form = {k: str(v) for k, v in (await request.form()).items()}
        query = request.url.query
        url = self.phone.carrier.url(path) + (f"?{query}" if query else "")
        self.phone.carrier.check_signature(url, form, request.headers.get("x-twilio-signature"))
        return form

    @app.post(
        f"{API_PREFIX}/dial",
        status_code=201,
        response_model=DialResponse,
        responses=_errors(400, 401, 403, 413, 429, 502, 503),
    )
    async def dial(self, body: StartCallRequest, key: PresentedKey) -> DialResponse:
        """Start a call and have Twilio ring the lead's phone; the agent speaks when the
        lead answers. GET /conversation shows the call's carrier status as it goes."""
        owner = await self._caller(key)
        session, call_sid = await self._bridge().dial(body.customer_name, body.phone_number, owner)
        return DialResponse(
            call_id=session.call_id,
            first_message=session.history[0].text,
            call_sid=call_sid,
            carrier_status="queued",
        )

    @app.post(VOICE_PATH, include_in_schema=False)
    async def twilio_voice(self, request: Request) -> Response:
        """Twilio's voice webhook: TwiML for a call we placed (answered) or one coming in."""
        form = await self._twilio_form(request, VOICE_PATH)
        twiml = await self.phone.answer(request.query_params.get("call_id"), form)
        return Response(twiml, media_type="application/xml")

    @app.post(STATUS_PATH, include_in_schema=False, status_code=204)
    async def twilio_status(self, request: Request) -> Response:
        """Twilio's call status callbacks, recorded on the call."""
        form = await self._twilio_form(request, STATUS_PATH)
        await self.phone.status(request.query_params.get("call_id", ""), form)
        return Response(status_code=204)

    @app.websocket(STREAM_PATH)
    async def twilio_media_stream(self, websocket: WebSocket) -> None:
        """Twilio Media Streams: the call's audio both ways, let in by the TwiML's token."""
        await websocket.accept()
        if self.phone is None:
            return await refuse(websocket, str(self.phone_missing))
        self._count_websockets(+1)
        try:
            await self.phone.hold_stream(websocket)
        finally:
            self._count_websockets(-1)

    @app.get(
        f"{API_PREFIX}/conversation/{{call_id}}",
        response_model=CallSession,
        responses=_errors(401, 404, 429, 503),
    )
    async def conversation(self, call_id: str, key: PresentedKey) -> CallSession:
        return await self.service.conversation(await self._owned(call_id, key))

    @app.get(f"{API_PREFIX}/calls", response_model=CallList, responses=_errors(400, 401, 429, 503))
    async def calls(
        self,
        key: PresentedKey,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> CallList:
        """The caller's calls (its API key's, when keys are on), newest first."""
        owner = await self._caller(key)
        calls, total = await self.store.list_calls(owner, limit, offset)
        more = offset + len(calls) < total
        return CallList(
            calls=calls,
            total=total,
            limit=limit,
            offset=offset,
            next_offset=offset + len(calls) if more and calls else None,
        )

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
