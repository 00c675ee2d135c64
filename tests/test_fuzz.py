"""Schemathesis against the running app's OpenAPI schema: generated valid and invalid
requests to every operation; no 5xx, and every response matches the documented schema,
status codes and content type. (Driven through Hypothesis directly: schemathesis's
pytest plugin does not load under this pytest.)"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
EXAMPLES = 30  # per operation and generation mode


@pytest.fixture(scope="module")
def operations(tiny_app):
    schema = schemathesis.openapi.from_url(f"{tiny_app}/openapi.json")
    return [op.ok() for op in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_generated_requests_as_documented(operations, mode, tiny_app):
    statuses: Counter[int] = Counter()
    for operation in operations:
        # Valid requests go to a live call too, so generated messages and audio reach the
        # model and the store (random ids only ever get 404).
        call = {"call_id": start_call(tiny_app)} if "{call_id}" in operation.path else None
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=call)
        if mode is GenerationMode.NEGATIVE:
            strategy = strategy | operation.as_strategy(generation_mode=mode)

        @given(case=strategy)
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case):
            response = case.call_and_validate(base_url=tiny_app, timeout=60, checks=CHECKS)
            statuses[response.status_code] += 1

        try:
            fuzz()
        except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
            continue
    seen = dict(sorted(statuses.items()))
    print(f"\n{mode.value}: {sum(statuses.values())} requests, statuses {seen}")
    assert statuses and not [code for code in statuses if code >= 500]


def start_call(base_url: str) -> str:
    r = httpx.post(
        f"{base_url}/api/v1/sales/start-call",
        json={"phone_number": "+1 555 010 0142", "customer_name": "Fuzz Tester"},
    )
    r.raise_for_status()
    return r.json()["call_id"]
