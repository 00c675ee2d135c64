"""Call admission and the call-aware autoscaling policy: the pure parts, and admission on
the real graph (Ray Serve, Redis, the tiny model)."""

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from salesagent.platform.capacity import (
    CapacitySettings,
    fleet_capacity,
    replicas_for,
    report,
    wanted_replicas,
)
from salesagent.platform.sessions import SessionStore
from salesagent.platform.settings import RedisSettings
from tests.conftest import API, deploy_graph, tiny_args, wait_until


def test_the_fleet_holds_its_calls_per_replica_times_the_replicas_running():
    settings = CapacitySettings(calls_per_llm_replica=4)
    assert fleet_capacity(settings, 1) == 4
    assert fleet_capacity(settings, 3) == 12
    assert fleet_capacity(settings, 0) == 0  # none running yet: no call is admitted
    assert fleet_capacity(CapacitySettings(), 3) is None  # off: every call is admitted


def test_the_report_gives_the_room_left_never_below_zero():
    settings = CapacitySettings(calls_per_llm_replica=4)
    assert report(settings, 2, 5).model_dump() == {
        "capacity": 8,
        "active_calls": 5,
        "headroom": 3,
        "llm_replicas": 2,
    }
    assert report(settings, 1, 6).headroom == 0  # replicas went away under their calls
    assert report(CapacitySettings(), 1, 6).headroom is None


def test_replicas_for_the_active_calls():
    assert [replicas_for(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [1, 1, 1, 2, 2, 3]
    assert replicas_for(10, 0) == 1  # no figure: the floor decides
    # Kept at three quarters of their capacity: the fourth call of four asks for another.
    assert [replicas_for(n, 4, 0.75) for n in (3, 4, 6, 7)] == [1, 2, 2, 3]


def test_each_model_deployment_with_a_figure_is_sized_from_the_calls():
    settings = CapacitySettings(calls_per_llm_replica=4, calls_per_stt_replica=12)
    assert wanted_replicas(settings, 0) == {"LLMDeployment": 1, "STTDeployment": 1}
    assert wanted_replicas(settings, 10) == {"LLMDeployment": 4, "STTDeployment": 2}
    assert wanted_replicas(CapacitySettings(), 10) == {}  # no figures: the queue decides



def _context(name: str, replicas: int, ongoing: float, metrics: dict | None = None):
    """What Serve's controller hands a policy for one deployment."""
    from ray.serve._private.common import DeploymentID
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    return AutoscalingContext(
        deployment_id=DeploymentID(name=name, app_name="sales"),
        deployment_name=name,
        app_name="sales",
        current_num_replicas=replicas,
        target_num_replicas=replicas,
        running_replicas=[],
        total_num_requests=ongoing,
        total_queued_requests=0,
        aggregated_metrics=metrics or {},
        raw_metrics={},
        capacity_adjusted_min_replicas=1,
        capacity_adjusted_max_replicas=8,
        policy_state={},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=None,
        config=AutoscalingConfig(min_replicas=1, max_replicas=8, target_ongoing_requests=4),
    )


def test_the_policy_asks_for_what_the_calls_need_with_the_queue_as_the_floor():
    from deployments.autoscaling import scale_on_calls

    reports = {  # two ingress replicas; one saw the latest call, one not yet
        "active_calls": {"ingress-1": 6.5, "ingress-2": 7.0},
        "wanted_replicas.LLMDeployment": {"ingress-1": 2.5, "ingress-2": 3.0},
    }
    contexts = {
        ctx.deployment_id: ctx
        for ctx in (
            _context("SalesIngress", 2, 4, reports),
            _context("LLMDeployment", 1, 2),  # calls between turns: a short queue
            _context("STTDeployment", 1, 12),  # no call figure: the queue alone
        )
    }
    decisions, _ = scale_on_calls(contexts)
    assert {d.name: n for d, n in decisions.items()} == {
        "SalesIngress": 1,  # 4 requests, 4 a replica
        "LLMDeployment": 3,
        "STTDeployment": 3,
    }
    busy = _context("LLMDeployment", 1, 20)  # the queue wants more than the calls
    decisions, _ = scale_on_calls({**contexts, busy.deployment_id: busy})
    assert decisions[busy.deployment_id] == 5


ROOM = 2


@pytest.fixture(scope="module")
def admission_app(serve_instance, redis_server, tiny_model_dir, tiny_app) -> Iterator[str]:
    """The graph with admission control (sharing the tiny app's LLM replica, so this app
    runs none of its own and counts one), sized to the calls active now plus ROOM."""
    from ray import serve

    active = asyncio.run(_active_calls(redis_server.url))
    args = tiny_args(tiny_model_dir, redis_server.url)
    args["capacity"] = {"calls_per_llm_replica": active + ROOM, "retry_after_s": 7}
    yield deploy_graph("admission", serve_instance, args)
    serve.delete("admission")


async def _active_calls(redis_url: str) -> int:
    store = SessionStore(RedisSettings(url=redis_url))
    try:
        return await store.active_count()
    finally:
        await store.close()


async def _end(redis_url: str, call_id: str) -> None:
    store = SessionStore(RedisSettings(url=redis_url))
    try:
        await store.append_turn(call_id, [], end_call=True)
    finally:
        await store.close()


def test_a_full_fleet_refuses_new_calls_and_keeps_serving_its_own(admission_app, redis_server):
    start = {"phone_number": "555-010-0100", "customer_name": "Ann Lee"}
    with httpx.Client(base_url=f"{admission_app}{API}", timeout=120) as client:
        health = client.get("/health").json()["capacity"]
        assert health["headroom"] == ROOM and health["llm_replicas"] == 1
        admitted = [client.post("/start-call", json=start) for _ in range(ROOM)]
        assert [r.status_code for r in admitted] == [201] * ROOM

        refused = client.post("/start-call", json=start)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "7"
        body = refused.json()
        assert "at capacity" in body["detail"] and body["retry_after_s"] == 7
        assert body["active_calls"] == body["capacity"] == health["capacity"]
        assert client.get("/health").json()["capacity"]["headroom"] == 0

        # An admitted call is never refused a turn for capacity.
        call_id = admitted[0].json()["call_id"]
        turn = client.post(f"/respond/{call_id}", json={"message": "Tell me more."})
        assert turn.status_code == 200 and turn.json()["reply"]

        # A call that ends gives its place to the next one.
        asyncio.run(_end(redis_server.url, call_id))
        assert client.post("/start-call", json=start).status_code == 201
        assert client.post("/start-call", json=start).status_code == 503
    wait_until(  # Ray exports the replicas' metrics every few seconds
        lambda: all(
            name in httpx.get(f"{admission_app}/metrics", timeout=30).text
            for name in ("salesagent_calls_refused_total", "salesagent_call_capacity")
        ),
        60,
        what="the admission metrics",
    )
    assert 'kind="AtCapacity"' not in httpx.get(f"{admission_app}/metrics").text  # no error
