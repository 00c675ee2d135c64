"""Faults on a deployed graph: Redis down or crashed, replicas killed mid-turn, and 50
concurrent turns on one call.

The app runs on its own Redis, which fsyncs every write to its append-only file before
acknowledging it. Its engines are scripted (tests/faults.py) so calls never end on their
own and a kill can land mid-operation; the real engines' own paths are tested elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from ray import serve
from websockets.sync.client import connect

from tests.conftest import API, RedisServer, deploy_graph, kill_replicas, tiny_args, wait_until
from tests.faults import ScriptedEngine, SlowSTT, SlowTTS
from tests.speech import spoken_wav

START = {"phone_number": "+1 555 010 0199", "customer_name": "Rita Faults"}


@pytest.fixture(scope="module")
def aof_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis-aof"), aof=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stalls(tmp_path_factory) -> Path:
    """Where the stalling engines touch a file (llm, stt, tts) when a stall begins."""
    return tmp_path_factory.mktemp("stalls")


@pytest.fixture(scope="module")
def faults_app(serve_instance, aof_redis, tiny_model_dir, tiny_app, stalls):
    args = tiny_args(tiny_model_dir, aof_redis.url)
    args["redis"]["socket_timeout_s"] = 2
    url = deploy_graph(
        "faults",
        serve_instance,
        args,
        llm_engine=ScriptedEngine(slow_s=5, stall_flag=str(stalls / "llm")),
        stt_engine=SlowSTT("This is turn 99.", delay_s=4, stall_flag=str(stalls / "stt")),
        tts_engine=SlowTTS(delay_s=3, stall_flag=str(stalls / "tts")),
    )
    yield url
    serve.delete("faults")


@pytest.fixture()
def client(faults_app):
    with httpx.Client(base_url=faults_app, timeout=60) as c:
        yield c


def start(client) -> str:
    r = client.post(f"{API}/start-call", json=START)
    assert r.status_code == 201, r.text
    return r.json()["call_id"]


def say(client, call_id: str, n: int) -> httpx.Response:
    return client.post(f"{API}/respond/{call_id}", json={"message": f"This is turn {n}."})


def history(client, call_id: str) -> list[tuple[str, str]]:
    convo = client.get(f"{API}/conversation/{call_id}").json()
    return [(e["speaker"], e["text"]) for e in convo["history"]]


def assert_turns(entries: list[tuple[str, str]], numbers: list[int]) -> None:
    """The greeting, then each numbered customer line directly followed by its reply."""
    assert entries[0][0] == "agent"
    pairs = [entries[i : i + 2] for i in range(1, len(entries), 2)]
    assert [p[0] for p in pairs] == [("customer", f"This is turn {n}.") for n in numbers]
    for (_, line), (speaker, reply) in pairs:
        assert speaker == "agent" and reply.startswith(f"Got {line[8:-1]}."), (line, reply)


def test_redis_unreachable_is_503_and_writes_nothing(client, aof_redis):
    call_id = start(client)
    assert say(client, call_id, 1).status_code == 200
    before = history(client, call_id)
    aof_redis.stop()
    try:
        for method, path, body in [
            ("POST", "/start-call", START),
            ("POST", f"/respond/{call_id}", {"message": "This is turn 2."}),
            ("GET", f"/conversation/{call_id}", None),
        ]:
            r = client.request(method, f"{API}{path}", json=body)
            assert r.status_code == 503, (path, r.text)
            assert "Session store unavailable" in r.json()["detail"]
    finally:
        aof_redis.start()
    after = wait_until(lambda: history(client, call_id), 30, what="Redis back")
    assert after == before  # nothing half-written by the failed turn
    assert say(client, call_id, 3).status_code == 200
    assert_turns(history(client, call_id), [1, 3])


def test_a_redis_crash_loses_no_acknowledged_turn(client, aof_redis):
    call_id = start(client)
    for n in range(1, 6):
        assert say(client, call_id, n).status_code == 200
    aof_redis.crash()  # SIGKILL: no save on shutdown
    aof_redis.start()
    entries = wait_until(lambda: history(client, call_id), 30, what="Redis back")
    assert_turns(entries, [1, 2, 3, 4, 5])
    assert say(client, call_id, 6).status_code == 200
    assert_turns(history(client, call_id), [1, 2, 3, 4, 5, 6])


def kill_once_stalled(flag: Path, deployment: str) -> threading.Thread:
    """A started thread that kills the replicas of `deployment` once its engine is in the
    middle of an operation (it touched `flag`)."""
    flag.unlink(missing_ok=True)

    def kill() -> None:
        wait_until(flag.exists, 60, interval_s=0.05, what=f"{deployment} to stall")
        kill_replicas("faults", deployment)

    killer = threading.Thread(target=kill)
    killer.start()
    return killer


def during(request, flag: Path, deployment: str) -> httpx.Response:
    """Send `request`, killing `deployment` in the middle of it; the request's response."""
    killer = kill_once_stalled(flag, deployment)
    try:
        return request()
    finally:
        killer.join()


def recovered(client, call_id: str, n: int) -> bool:
    return say(client, call_id, n).status_code == 200


def test_llm_replica_killed_mid_turn(client, stalls):
    call_id = start(client)
    assert say(client, call_id, 1).status_code == 200
    r = during(
        lambda: client.post(f"{API}/respond/{call_id}", json={"message": "This is turn 2 slowly."}),
        stalls / "llm",
        "LLMDeployment",
    )
    assert r.status_code == 503 and "LLM service unavailable" in r.json()["detail"], r.text
    assert_turns(history(client, call_id), [1])  # the failed turn left nothing behind
    killed = time.monotonic()
    wait_until(lambda: recovered(client, call_id, 3), 120, interval_s=1, what="a new LLM replica")
    print(
        f"LLM replica killed mid-turn: next turn answered {time.monotonic() - killed:.1f} s later"
    )
    assert_turns(history(client, call_id), [1, 3])


def test_a_reply_cancelled_in_the_llm_replica_is_503_not_a_hang(client):
    """Serve hands the caller a bare CancelledError when the replica's side of a stream was
    cancelled; the turn must fail as unavailable (it once waited for the reply forever)."""
    call_id = start(client)
    r = client.post(
        f"{API}/respond/{call_id}", json={"message": "This is turn 1 cancelled."}, timeout=30
    )
    assert r.status_code == 503 and "LLM service unavailable" in r.json()["detail"], r.text
    assert len(history(client, call_id)) == 1  # the greeting only
    assert say(client, call_id, 2).status_code == 200


def test_stt_replica_killed_mid_transcription(client, stalls):
    call_id = start(client)
    assert say(client, call_id, 1).status_code == 200
    wav = spoken_wav("Hello there.")
    r = during(
        lambda: client.post(
            f"{API}/respond-audio/{call_id}", files={"audio_file": ("turn.wav", wav)}
        ),
        stalls / "stt",
        "STTDeployment",
    )
    assert r.status_code in (500, 503) and "STT" in r.json()["detail"], r.text
    assert_turns(history(client, call_id), [1])
    killed = time.monotonic()
    wait_until(
        lambda: (
            client.post(
                f"{API}/respond-audio/{call_id}", files={"audio_file": ("turn.wav", wav)}
            ).status_code
            == 200
        ),
        120,
        interval_s=1,
        what="a new STT replica",
    )
    print(
        f"STT replica killed mid-turn: next turn answered {time.monotonic() - killed:.1f} s later"
    )
    assert_turns(history(client, call_id), [1, 99])


def test_tts_replica_killed_mid_speech_falls_back_to_text(client, faults_app, stalls):
    call_id = start(client)
    url = faults_app.replace("http://", "ws://") + f"/ws/voice-chat/{call_id}"
    killer = kill_once_stalled(stalls / "tts", "TTSDeployment")
    with connect(url, max_size=None) as ws:
        greeting = json.loads(ws.recv(timeout=30))  # the spoken greeting died with its replica
        killer.join()
        assert greeting["type"] == "agent_text" and "Rita" in greeting["text"]
        # The next turn is whole: heard, answered and spoken once a new replica is up.
        ws.send(spoken_wav("Hello there."))
        assert json.loads(ws.recv(timeout=60)) == {"type": "user_text", "text": "This is turn 99."}
        reply = ws.recv(timeout=120)
        assert reply[:4] == b"RIFF" or json.loads(reply)["type"] == "agent_text"
    assert_turns(history(client, call_id), [99])


def test_fifty_concurrent_turns_on_one_call_are_stored_whole_and_in_order(client, faults_app):
    call_id = start(client)

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=faults_app, timeout=300) as c:
            return await asyncio.gather(
                *(
                    c.post(f"{API}/respond/{call_id}", json={"message": f"This is turn {n}."})
                    for n in range(50)
                )
            )

    started = time.monotonic()
    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * 50
    entries = history(client, call_id)
    assert len(entries) == 1 + 100
    # Turns ran one at a time in some order; each reply sits right after its own line.
    order = [int(text.split()[-1].rstrip(".")) for speaker, text in entries[1::2]]
    assert sorted(order) == list(range(50))
    assert_turns(entries, order)
    print(f"50 concurrent turns on one call: {time.monotonic() - started:.1f} s")
