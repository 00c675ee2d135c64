"""The GPU profile on a two-node Ray cluster on this machine: `ray start` head and worker
on loopback, one logical GPU each. The profile's placement (GPU fractions, two LLM replicas
spread over the nodes, auth on) runs with the models in CPU mode: the real Qwen on vLLM's
CPU build, Whisper tiny.en, the Hibari voice. A call goes on across the loss of the worker
node, and all replicas come back once a worker node rejoins."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from salesagent.platform.settings import default_llm_model
from tests.cluster import LocalCluster
from tests.conftest import API, free_port, make_key, wait_until

ROOT = Path(__file__).resolve().parent.parent
LLM_REPLICAS = 2


def cluster_config(redis_url: str, http_port: int) -> dict:
    """serve_config.yaml with its GPU fractions and auth, the models swapped for CPU ones,
    CPU requests scaled to this machine, and fixed replica counts."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    # One machine: proxies on every node would all want the same port.
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {"host": "127.0.0.1", "port": http_port}
    (app,) = config["applications"]
    gpu_llm = app["args"]["llm"]
    app["args"].update(
        llm={
            "model": default_llm_model(),
            "max_model_len": 2048,
            "max_tokens": 48,
            "enforce_eager": True,
            "gpu_memory_utilization": gpu_llm["gpu_memory_utilization"],
            "gpu_memory_gib": 80,  # the start-up fit check runs as on an H100
        },
        stt={"cpu_threads": 1},
        redis={"url": redis_url},
    )
    for d in app["deployments"]:
        replicas = LLM_REPLICAS if d["name"] == "LLMDeployment" else 1
        d["autoscaling_config"].update(min_replicas=replicas, max_replicas=replicas)
        d["ray_actor_options"]["num_cpus"] = 1 if d["name"] == "LLMDeployment" else 0.3
    return config


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    model = Path(default_llm_model())
    if not (model / "prepared.json").exists():
        pytest.fail(f"the Qwen model is not prepared at {model}; run scripts/setup.sh")
    cluster = LocalCluster(free_port(), tmp_path_factory.mktemp("ray-cluster"), free_port())
    try:
        cluster.start_head(num_cpus=6, num_gpus=1)
        cluster.add_worker(num_cpus=6, num_gpus=1)
        yield cluster
    finally:
        cluster.stop()


def ready(base: str, llm_replicas: int) -> dict | None:
    body = httpx.get(f"{base}/health", timeout=10).json()
    services = body["services"]
    done = body["status"] == "ok" and services["llm"]["ready_replicas"] == llm_replicas
    return body if done else None


def test_a_call_survives_losing_the_worker_node(two_nodes, redis_server, tmp_path):
    port = two_nodes.http_port
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "cluster_config.yaml"
    config.write_text(yaml.safe_dump(cluster_config(redis_server.url, port)))
    two_nodes.serve_run(config)
    wait_until(lambda: ready(base, LLM_REPLICAS), 600, interval_s=2, what="the GPU profile")

    before = two_nodes.placement()
    print(f"\nplacement: {before}")
    assert len(set(before["LLMDeployment"])) == LLM_REPLICAS  # spread over both nodes
    assert len(before["STTDeployment"]) == 1

    key = {"X-API-Key": make_key(redis_server.url, "cluster-test")}
    with httpx.Client(base_url=base, headers=key, timeout=120) as c:
        r = c.post(
            f"{API}/start-call", json={"phone_number": "+15550100177", "customer_name": "Kim"}
        )
        call_id = r.json()["call_id"]
        lines = ["Sure, I have a minute, go ahead.", "I'm a nurse and I'd like to learn Python."]
        assert c.post(f"{API}/respond/{call_id}", json={"message": lines[0]}).status_code == 200

        assert two_nodes.kill_workers() == 1
        lost = time.monotonic()

        def next_turn() -> bool:
            reply = c.post(f"{API}/respond/{call_id}", json={"message": lines[1]}, timeout=60)
            return reply.status_code == 200

        wait_until(next_turn, 300, interval_s=1, what="a turn after losing the worker")
        turn_after_s = time.monotonic() - lost
        history = c.get(f"{API}/conversation/{call_id}").json()["history"]
        assert [e["text"] for e in history if e["speaker"] == "customer"] == lines
        assert len(history) == 5

        two_nodes.add_worker(num_cpus=6, num_gpus=1)
        wait_until(lambda: ready(base, LLM_REPLICAS), 600, interval_s=2, what="replicas back")
        back_s = time.monotonic() - lost
        after = two_nodes.placement()
        assert len(after["LLMDeployment"]) == LLM_REPLICAS
    print(
        f"worker lost: next turn answered after {turn_after_s:.1f} s, all replicas back "
        f"{back_s:.1f} s after the loss; placement after: {after}"
    )


def test_an_llm_that_does_not_fit_its_gpu_share_fails_at_once_with_the_reason(two_nodes):
    result = two_nodes.overcommitted_llm()
    assert result["status"] == "DEPLOY_FAILED", result
    assert "set llm.gpu_memory_utilization to at most 0.25" in result["message"]


def scaling_config(redis_url: str, http_port: int) -> dict:
    """The cluster profile scaled on calls: each LLM replica holds 2 calls, one more
    replica is asked for past 3/4 of that, and the LLM deployment runs 1 to 2 replicas."""
    config = cluster_config(redis_url, http_port)
    (app,) = config["applications"]
    app["autoscaling_policy"] = {"policy_function": "deployments.autoscaling:scale_on_calls"}
    app["args"]["capacity"] = {"calls_per_llm_replica": 2, "scale_at": 0.75, "retry_after_s": 5}
    for d in app["deployments"]:
        d["autoscaling_config"].update(metrics_interval_s=1, look_back_period_s=2)
        if d["name"] == "LLMDeployment":
            d["autoscaling_config"].update(
                min_replicas=1, max_replicas=2, upscale_delay_s=2, downscale_delay_s=20
            )
    return config


def test_a_ramp_of_calls_adds_an_llm_replica_and_idle_calls_going_away_remove_it(
    two_nodes, redis_server, tmp_path
):
    port = two_nodes.http_port
    base = f"http://127.0.0.1:{port}"
    # Its own Redis database: the other tests' calls are not this fleet's.
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/3"
    config = tmp_path / "scaling_config.yaml"
    config.write_text(yaml.safe_dump(scaling_config(redis_url, port)))
    two_nodes.serve_run(config)
    wait_until(lambda: ready(base, 1), 600, interval_s=2, what="one LLM replica")

    key = make_key(redis_url, "scaling-test")
    lead = {"phone_number": "+15550100178", "customer_name": "Ana"}
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=120) as c:

        def start() -> httpx.Response:
            return c.post(f"{API}/start-call", json=lead)

        def capacity() -> dict:
            return c.get("/health").json()["capacity"]

        ramp = time.monotonic()
        calls = [start().json()["call_id"] for _ in range(2)]
        # Two calls fill one replica's capacity: a third is refused while the second
        # replica loads, cleanly and with a time to retry.
        refused = start()
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "5"
        assert refused.json()["capacity"] == 2
        assert c.post(f"{API}/respond/{calls[0]}", json={"message": "Hi, who is this?"}).is_success

        wait_until(lambda: ready(base, 2), 600, interval_s=1, what="a second LLM replica")
        added_s = time.monotonic() - ramp
        assert capacity()["capacity"] == 4
        third = start()
        assert third.status_code == 201, third.text
        calls.append(third.json()["call_id"])
        placement = two_nodes.placement()
        assert len(placement["LLMDeployment"]) == 2

        for call_id in calls:
            with connect(f"ws://127.0.0.1:{port}{API}/ws/voice-chat/{call_id}?token={key}") as ws:
                ws.send(json.dumps({"type": "control", "command": "end_call"}))
                with pytest.raises(ConnectionClosed):
                    while True:
                        ws.recv(timeout=30)
        ended = time.monotonic()
        assert capacity()["active_calls"] == 0
        wait_until(lambda: ready(base, 1), 300, interval_s=1, what="back to one LLM replica")
        removed_s = time.monotonic() - ended
    print(
        f"\nscaling on calls: second LLM replica ready {added_s:.1f} s after the ramp began "
        f"(placement {placement}); back to one replica {removed_s:.1f} s after the calls "
        "ended (downscale delay 20 s)"
    )
