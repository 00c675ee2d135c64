"""Request and response bodies of the HTTP API (`shared/spec/api.md`).

GET /conversation answers with `salesagent.sessions.CallSession` as it is.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, StringConstraints

from salesagent.health import ServiceHealth

# Surrounding whitespace is dropped before the length checks, so "   " is rejected as empty.
PhoneNumber = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
CustomerName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)
]


class StartCallRequest(BaseModel):
    phone_number: PhoneNumber
    customer_name: CustomerName


class StartCallResponse(BaseModel):
    call_id: str
    first_message: str


class RespondRequest(BaseModel):
    message: str


class RespondResponse(BaseModel):
    reply: str
    should_end_call: bool


class HealthResponse(BaseModel):
    status: str  # "ok" or "issues_present"
    app_title: str
    app_version: str
    llm_service_status: str  # "ok" or "critical_issue" (or "degraded")
    llm_service_details: str
    # stt, llm, tts and redis: replicas, recent p95 latency and error rate (salesagent.health).
    services: dict[str, ServiceHealth]


class ErrorResponse(BaseModel):
    detail: str
