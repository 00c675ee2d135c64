"""Ingress deployment: the FastAPI app of the contract, over `SalesCallService`.

HTTP concerns only: parse, call the service, map its exceptions to statuses. The
LLM is reached through its deployment handle, wrapped so that every failure or
timeout surfaces as `LLMUnavailable` (503).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from redis.exceptions import RedisError

from salesagent.catalog import load_catalog
from salesagent.engine import Message
from salesagent.schemas import (
    ErrorResponse,
    HealthResponse,
    RespondRequest,
    RespondResponse,
    StartCallRequest,
    StartCallResponse,
)
from salesagent.service import LLMUnavailable, SalesCallService
from salesagent.sessions import CallBusy, CallNotFound, CallSession, SessionStore
from salesagent.settings import Settings

API_PREFIX = "/api/v1/sales"
logger = logging.getLogger("salesagent.ingress")


class ServeLLMClient:
    """`LLMClient` over the LLM deployment's handle, with timeouts."""

    def __init__(self, handle: DeploymentHandle, timeout_s: float, ready_timeout_s: float):
        self._handle = handle
        self._timeout_s = timeout_s
        self._ready_timeout_s = ready_timeout_s

    async def stream(
        self, messages: list[Message], max_tokens: int | None = None
    ) -> AsyncIterator[str]:
        responses = self._handle.options(stream=True).stream.remote(messages, max_tokens)
        try:
            while True:
                try:
                    delta = await asyncio.wait_for(anext(responses), self._timeout_s)
                except StopAsyncIteration:
                    return
                yield delta
        except Exception as exc:  # timeouts, dead replicas, engine errors
            raise LLMUnavailable(_describe(exc)) from exc
        finally:
            responses.cancel()  # stops generation when the caller has enough

    async def choose(self, messages: list[Message], choices: list[str]) -> str:
        return await self._call(self._handle.choose.remote(messages, choices), self._timeout_s)

    async def ready(self) -> str:
        return await self._call(self._handle.ready.remote(), self._ready_timeout_s)

    @staticmethod
    async def _call(response, timeout_s: float):
        try:
            return await asyncio.wait_for(response, timeout_s)
        except Exception as exc:  # timeouts, dead replicas, engine errors: all mean "not available"
            response.cancel()
            raise LLMUnavailable(_describe(exc)) from exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "LLM service unavailable: no answer in time"
    return f"LLM service unavailable: {type(exc).__name__}"


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
_STATUS_OF: dict[type[Exception], int] = {
    CallNotFound: 404,
    CallBusy: 409,
    LLMUnavailable: 503,
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
    def __init__(self, settings: Settings, llm: DeploymentHandle):
        self.settings = settings
        self.store = SessionStore(settings.redis)
        self.llm = ServeLLMClient(llm, settings.llm.request_timeout_s, settings.health_timeout_s)
        self.service = SalesCallService(
            self.store, self.llm, load_catalog(settings.catalog_path), settings.conversation
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

    @app.get(f"{API_PREFIX}/conversation/{{call_id}}", response_model=CallSession)
    async def conversation(self, call_id: str) -> CallSession:
        return await self.service.conversation(_checked_call_id(call_id))

    @app.get("/health", response_model=HealthResponse)
    @app.get(f"{API_PREFIX}/health", response_model=HealthResponse)
    async def health(self) -> HealthResponse:
        """Asks the LLM deployment and Redis, each within the health bound, at the same time."""
        llm, store = await asyncio.gather(self._llm_health(), self._store_health())
        healthy = llm[0] == "ok" and store[0] == "ok"
        return HealthResponse(
            status="ok" if healthy else "issues_present",
            app_title=self.settings.app_title,
            app_version=self.settings.app_version,
            llm_service_status=llm[0],
            llm_service_details=llm[1],
            session_store_status=store[0],
            session_store_details=store[1],
        )

    async def _llm_health(self) -> tuple[str, str]:
        try:
            return "ok", f"ready ({await self.llm.ready()})"
        except LLMUnavailable as exc:
            return "critical_issue", f"not ready: {exc}"

    async def _store_health(self) -> tuple[str, str]:
        try:
            await asyncio.wait_for(self.store.ping(), self.settings.health_timeout_s)
            return "ok", "redis reachable"
        except (TimeoutError, RedisError, OSError) as exc:
            return "critical_issue", f"redis unreachable ({type(exc).__name__})"
