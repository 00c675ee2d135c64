"""Metrics and the health report on the real graph: two TTS replicas, a Redis to stop."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from ray import serve

from salesagent.platform.metrics import parse_prometheus
from salesagent.voice.voice_client import converse
from tests.conftest import API, RedisServer, deploy_graph, kill_replicas, tiny_args, wait_until
from tests.speech import spoken_wav


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis-observed"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def observed_app(serve_instance, own_redis, tiny_model_dir, tiny_app):
    url = deploy_graph(
        "observed", serve_instance, tiny_args(tiny_model_dir, own_redis.url), tts_replicas=2
    )
    yield url
    serve.delete("observed")


def scrape(url: str) -> tuple[str, dict]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return text, parse_prometheus(text)


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(
        value
        for (n, sample_labels), value in samples.items()
        if n == name and labels.items() <= dict(sample_labels).items()
    )


def test_metrics_move_as_a_voice_conversation_flows(observed_app):
    clip = spoken_wav("How much does the course cost?")
    call_id = httpx.post(
        f"{observed_app}{API}/start-call",
        json={"phone_number": "555-010-0100", "customer_name": "Ann"},
    ).json()["call_id"]
    conversation = asyncio.run(converse(observed_app, call_id, [clip, clip]))
    assert conversation.turns[0].transcript

    stage = "salesagent_stage_duration_seconds_count"

    def everything_recorded():
        _, samples = scrape(observed_app)
        stages = ("audio_decode", "stt", "llm_intent", "llm_first_token", "llm_total", "tts")
        recorded = all(total(samples, stage, stage=s) > 0 for s in (*stages, "redis"))
        return recorded and all(
            total(samples, name) > 0
            for name in (
                "salesagent_turn_duration_seconds_count",
                "salesagent_voice_to_voice_seconds_count",
                "salesagent_llm_tokens_generated_total",
                "salesagent_stt_audio_seconds_total",
                "salesagent_tts_audio_seconds_total",
                "salesagent_calls_started_total",
            )
        )

    wait_until(everything_recorded, 30, what="every metric")
    text, samples = scrape(observed_app)
    assert total(samples, "salesagent_turn_duration_seconds_count", channel="websocket") >= 1
    assert "salesagent_active_calls" in text and "salesagent_websocket_connections" in text
    assert "call_id" not in text and call_id not in text  # no per-call labels


def test_metrics_add_up_across_two_replicas(observed_app):
    _, before = scrape(observed_app)
    tts = serve.get_deployment_handle("TTSDeployment", app_name="observed")
    requests = 12
    for response in [tts.synthesize.remote(f"Line number {n}.") for n in range(requests)]:
        response.result()

    count = "salesagent_stage_duration_seconds_count"

    def counted() -> float:
        _, samples = scrape(observed_app)
        return total(samples, count, stage="tts") - total(before, count, stage="tts")

    wait_until(lambda: counted() >= requests, 30, what="TTS counts")
    assert counted() == requests  # each request once, summed over both replicas
    text, _ = scrape(observed_app)  # raw lines: parse_prometheus sums replicas away
    line_labels = [dict(re.findall(r'(\w+)="([^"]*)"', line)) for line in text.splitlines()]
    tts_replicas = {
        labels["replica"]
        for labels in line_labels
        if labels.get("deployment") == "TTSDeployment" and labels.get("application") == "observed"
    }
    assert len(tts_replicas) == 2  # (other apps' TTS replicas export to the same nodes)


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=10).json()


def test_health_reports_a_stopped_redis_and_recovers(observed_app, own_redis):
    assert health(observed_app)["status"] == "ok"
    own_redis.stop()
    try:
        body = wait_until(
            lambda: (b := health(observed_app))["status"] == "issues_present" and b,
            5,
            what="issues_present after Redis stopped",
        )
        assert body["services"]["redis"]["status"] == "critical_issue"
        assert body["services"]["llm"]["status"] == "ok"
        r = httpx.post(
            f"{observed_app}{API}/start-call",
            json={"phone_number": "555-010-0101", "customer_name": "A"},
        )
        assert r.status_code == 503 and "Session store unavailable" in r.json()["detail"]
    finally:
        own_redis.start()
    wait_until(lambda: health(observed_app)["status"] == "ok", 30, what="ok after restart")


def test_health_reports_a_killed_deployment_and_recovers(observed_app):
    assert kill_replicas("observed", "STTDeployment")
    body = wait_until(
        lambda: (b := health(observed_app))["status"] == "issues_present" and b,
        15,
        what="issues_present after the STT replica died",
    )
    assert body["services"]["stt"]["status"] != "ok"
    recovered = wait_until(
        lambda: (b := health(observed_app))["status"] == "ok" and b, 120, what="STT back"
    )
    assert recovered["services"]["stt"]["ready_replicas"] == 1
