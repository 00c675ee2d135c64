"""Request and response bodies of the HTTP API (`shared/spec/api.md`).

GET /conversation answers with `salesagent.platform.sessions.CallSession` as it is.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, StringConstraints

from salesagent.platform.capacity import CapacityReport
from salesagent.platform.health import ServiceHealth
from salesagent.platform.phone import normalize_phone
from salesagent.platform.sessions import CallSummary

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _checked_name(name: str) -> str:
    if _CONTROL.search(name):
        raise ValueError("must not contain control characters")
    if not any(c.isalpha() for c in name):
        raise ValueError("must contain at least one letter")
    return name


# Surrounding whitespace is dropped before the length checks, so "   " is rejected as empty.
# Numbers are stored in E.164, whatever format they came in.
PhoneNumber = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=32),
    AfterValidator(normalize_phone),
]
CustomerName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_checked_name),
]


class StartCallRequest(BaseModel):
    phone_number: PhoneNumber
    customer_name: CustomerName


class StartCallResponse(BaseModel):
    call_id: str
    first_message: str


class DialResponse(BaseModel):
    """POST /dial: the call session, and the phone call Twilio is placing for it."""

    call_id: str
    first_message: str
    call_sid: str
    carrier_status: str  # "queued": Twilio rings the lead; GET /conversation follows it


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
    # stt, llm, tts and redis: replicas, recent p95 latency and error rate (platform.health).
    services: dict[str, ServiceHealth]
    # Calls the running LLM replicas hold, active calls and the room left (admission).
    capacity: CapacityReport | None = None


class ErrorResponse(BaseModel):
    detail: str


class CallList(BaseModel):
    """GET /calls: the caller's calls, newest first, one page."""

    calls: list[CallSummary]
    total: int
    limit: int
    offset: int
    next_offset: int | None  # None on the last page
