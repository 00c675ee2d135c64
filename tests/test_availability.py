"""503s and health when the LLM is pending, and calls that outlive their ingress."""

from __future__ import annotations

import httpx
import pytest
from ray import serve
from ray.serve.api import _run

from deployments.ingress import SalesIngress
from deployments.llm import LLMDeployment
from deployments.stt import STTDeployment
from deployments.tts import TTSDeployment
from salesagent.platform.settings import Settings
from tests.conftest import API, kill_replicas, tiny_args, wait_until


@pytest.fixture(scope="module")
def pending_llm_app(serve_instance, redis_server, tiny_model_dir):
    """The graph with an LLM replica that asks for a GPU this machine lacks: it stays
    pending forever while the ingress answers, as on a cluster short of GPUs."""
    settings = Settings.from_args(tiny_args(tiny_model_dir, redis_server.url))
    llm = LLMDeployment.options(ray_actor_options={"num_cpus": 0.1, "num_gpus": 1})
    stt = STTDeployment.options(ray_actor_options={"num_cpus": 0.1, "num_gpus": 1})
    ingress = SalesIngress.bind(
        settings,
        llm.bind(settings.llm),
        stt.bind(settings.stt),
        TTSDeployment.bind(settings.tts),
    )
    _run(
        ingress,
        name="nollm",
        route_prefix="/nollm",
        _blocking=False,
    )
    url = f"{serve_instance}/nollm"
    wait_until(
        lambda: httpx.get(f"{url}/health", timeout=5).status_code == 200,
        120,
        what="the ingress of the app without an LLM",
    )
    yield url
    serve.delete("nollm")


def test_health_reports_a_pending_llm_without_hanging(pending_llm_app):
    # The bound is 1.5 s per service; the client's 5 s timeout fails the test on a hang.
    r = httpx.get(f"{pending_llm_app}/health", timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "issues_present"
    assert body["llm_service_status"] == "critical_issue"
    assert "not ready" in body["llm_service_details"]
    assert body["services"]["llm"]["status"] == "critical_issue"
    assert body["services"]["stt"]["status"] == "critical_issue"
    assert body["services"]["tts"]["status"] == "ok"
    assert body["services"]["redis"]["status"] == "ok"


def test_start_call_is_503_while_the_llm_is_pending(pending_llm_app):
    r = httpx.post(
        f"{pending_llm_app}{API}/start-call",
        json={"phone_number": "555-010-0100", "customer_name": "Ann"},
        timeout=10,
    )
    assert r.status_code == 503
    assert "LLM service unavailable" in r.json()["detail"]


def test_respond_is_503_while_the_llm_is_pending_and_the_call_is_kept(pending_llm_app, tiny_app):
    # A call started while the LLM was up (same Redis) meets an LLM that is gone.
    with httpx.Client(timeout=30) as c:
        call_id = c.post(
            f"{tiny_app}{API}/start-call",
            json={"phone_number": "555-010-0100", "customer_name": "Ann"},
        ).json()["call_id"]
        r = c.post(f"{pending_llm_app}{API}/respond/{call_id}", json={"message": "Hello?"})
        assert r.status_code == 503
        history = c.get(f"{pending_llm_app}{API}/conversation/{call_id}").json()["history"]
        assert len(history) == 1  # the failed turn left nothing behind


def test_a_call_survives_an_ingress_restart(tiny_app):
    with httpx.Client(base_url=tiny_app, timeout=60) as c:
        call_id = c.post(
            f"{API}/start-call", json={"phone_number": "555-010-0100", "customer_name": "Ann"}
        ).json()["call_id"]
        before = c.get(f"{API}/conversation/{call_id}").json()

        assert kill_replicas("tiny", "SalesIngress"), "no ingress replica found"

        after = wait_until(
            lambda: c.get(f"{API}/conversation/{call_id}").json(), 120, what="the restarted ingress"
        )
        assert after == before
        r = c.post(f"{API}/respond/{call_id}", json={"message": "Still there?"})
        assert r.status_code == 200
        assert len(c.get(f"{API}/conversation/{call_id}").json()["history"]) == 3
