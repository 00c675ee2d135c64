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
