"""The HTTP contract through real Ray Serve, real Redis and the real vLLM engine (tiny model).

The tiny model's random weights label customer lines arbitrarily, so these tests
assert what holds for any label; `test_real_model.py` checks the conversation
itself, and many turns on one call, with the real Qwen model.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import API

START = {"phone_number": "123-456-7890", "customer_name": "John Doe"}


def start_call(client: httpx.Client) -> str:
    r = client.post(f"{API}/start-call", json=START)
    assert r.status_code == 201, r.text
    return r.json()["call_id"]


def test_start_call_returns_201_with_greeting(client):
    r = client.post(f"{API}/start-call", json=START)
    assert r.status_code == 201
    body = r.json()
    uuid.UUID(body["call_id"], version=4)
    assert "John" in body["first_message"] and body["first_message"].endswith("?")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"phone_number": "123"},
        {"customer_name": "John"},
        {"phone_number": "123", "customer_name": "   "},
        {"phone_number": "", "customer_name": "John"},
        {"phone_number": 123, "customer_name": ["John"]},
        {"phone_number": "1" * 33, "customer_name": "John"},
        {"phone_number": "123-456-7890", "customer_name": "J" * 101},
        {"phone_number": "123", "customer_name": "John"},
        {"phone_number": "call me maybe", "customer_name": "John"},
        {"phone_number": "+1 555 0100 0100 0100", "customer_name": "John"},
        {"phone_number": "123-456-7890", "customer_name": "12345"},
        {"phone_number": "123-456-7890", "customer_name": "Jo\x00hn"},
        [],
        "text",
    ],
)
def test_start_call_rejects_bad_bodies_with_400(client, body):
    r = client.post(f"{API}/start-call", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("Invalid request")


def test_start_call_rejects_malformed_json_with_400(client):
    r = client.post(
        f"{API}/start-call", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert "detail" in r.json()


def test_respond_and_conversation(client):
    call_id = start_call(client)
    r = client.post(f"{API}/respond/{call_id}", json={"message": "Tell me more."})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"reply", "should_end_call"}
    assert body["reply"].strip() and isinstance(body["should_end_call"], bool)

    convo = client.get(f"{API}/conversation/{call_id}").json()
    assert convo["call_id"] == call_id
    assert convo["customer_name"] == "John Doe" and convo["phone_number"] == "+11234567890"
    assert [(e["speaker"], e["text"]) for e in convo["history"][1:]] == [
        ("customer", "Tell me more."),
        ("agent", body["reply"]),
    ]
    # The call's state agrees with what the agent decided.
    assert convo["is_active"] is not body["should_end_call"]
    assert (convo["end_time"] is None) is convo["is_active"]


@pytest.mark.parametrize("message", ["", "   ", "\n\t"])
def test_respond_rejects_empty_message_with_400(client, message):
    call_id = start_call(client)
    r = client.post(f"{API}/respond/{call_id}", json={"message": message})
    assert r.status_code == 400
    assert "empty" in r.json()["detail"]
    assert len(client.get(f"{API}/conversation/{call_id}").json()["history"]) == 1


@pytest.mark.parametrize("body", [{}, {"message": 5}, {"msg": "hi"}, None])
def test_respond_rejects_bad_bodies_with_400(client, body):
    call_id = start_call(client)
    assert client.post(f"{API}/respond/{call_id}", json=body).status_code == 400


def test_respond_rejects_oversized_message_with_413(client):
    call_id = start_call(client)
    r = client.post(f"{API}/respond/{call_id}", json={"message": "x" * 2001})
    assert r.status_code == 413
    assert "too long" in r.json()["detail"]


@pytest.mark.parametrize("call_id", [str(uuid.uuid4()), "not-a-uuid", "x" * 300])
def test_unknown_call_is_404(client, call_id):
    assert client.post(f"{API}/respond/{call_id}", json={"message": "hi"}).status_code == 404
    assert client.get(f"{API}/conversation/{call_id}").status_code == 404


def test_call_ends_and_then_refuses_turns(client, tiny_app):
    call_id = start_call(client)
    r = client.post(f"{API}/respond/{call_id}", json={"message": "No thanks, goodbye."})
    assert r.status_code == 200
    if not r.json()["should_end_call"]:
        # The random tiny model's labels may not end it: then the client does.
        url = tiny_app.replace("http", "ws") + f"/ws/voice-chat/{call_id}"
        with connect(url, max_size=None) as ws:
            ws.recv(timeout=30)
            ws.send(json.dumps({"type": "control", "command": "end_call"}))
            assert json.loads(ws.recv(timeout=10))["message"] == "Call ended by client."
    convo = client.get(f"{API}/conversation/{call_id}").json()
    assert convo["is_active"] is False and convo["end_time"] and len(convo["history"]) == 3
    assert client.post(f"{API}/respond/{call_id}", json={"message": "hi"}).status_code == 404
    # The ended call stays readable, unchanged.
    assert client.get(f"{API}/conversation/{call_id}").json() == convo


@pytest.mark.parametrize("path", ["/health", f"{API}/health"])
def test_health_reports_ready_services(client, path):
    r = client.get(path)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["app_title"] and body["app_version"]
    assert body["llm_service_status"] == "ok" and "ready" in body["llm_service_details"]
    assert set(body["services"]) == {"stt", "llm", "tts", "redis"}
    assert all(service["status"] == "ok" for service in body["services"].values())
    assert body["services"]["llm"]["ready_replicas"] == 1


def test_openapi_schema_lists_the_contract(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ["/start-call", "/respond/{call_id}", "/conversation/{call_id}", "/health"]:
        assert f"{API}{path}" in paths


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "offset=-1", "limit=ten"])
def test_calls_list_rejects_bad_paging_with_400(client, query):
    r = client.get(f"{API}/calls?{query}")
    assert r.status_code == 400 and "Invalid request" in r.json()["detail"]


def test_calls_list_summarizes_each_call_as_its_conversation_says(client, tiny_app):
    call_id = client.post(
        f"{API}/start-call", json={"phone_number": "555-010-0199", "customer_name": "Lee Page"}
    ).json()["call_id"]
    r = client.post(f"{API}/respond/{call_id}", json={"message": "No thanks, goodbye."})
    if not r.json()["should_end_call"]:  # the random tiny model's labels: the client ends it
        with connect(tiny_app.replace("http", "ws") + f"/ws/voice-chat/{call_id}") as ws:
            ws.recv(timeout=30)
            ws.send(json.dumps({"type": "control", "command": "end_call"}))
            assert json.loads(ws.recv(timeout=10))["message"] == "Call ended by client."
    convo = client.get(f"{API}/conversation/{call_id}").json()
    listed = {c["call_id"]: c for c in client.get(f"{API}/calls?limit=100").json()["calls"]}
    row = listed[call_id]
    assert row["turns"] == 1 and not row["is_active"] and row["end_time"] == convo["end_time"]
    assert row["disposition"] == convo["state"]["disposition"] and row["duration_s"] >= 0
    assert (row["customer_name"], row["stage"]) == ("Lee Page", convo["state"]["stage"])
