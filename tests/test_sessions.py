"""Call sessions against a real Redis server."""

import asyncio
import uuid
from contextlib import suppress

import pytest

from salesagent.platform.capacity import AtCapacity
from salesagent.platform.sessions import (
    CallBusy,
    CallInUse,
    CallNotFound,
    SessionStore,
    Speaker,
    entry,
)
from salesagent.platform.settings import RedisSettings


@pytest.fixture()
async def store(redis_server):
    s = SessionStore(RedisSettings(url=redis_server.url, ended_call_ttl_s=600, idle_call_ttl_s=900))
    yield s
    await s.close()


async def test_create_and_read_back(store):
    created = await store.create("John Doe", "123-456-7890", "Hi John")
    uuid.UUID(created.call_id, version=4)
    read = await store.get(created.call_id)
    assert read == created
    assert read.is_active and read.end_time is None
    assert read.history[0].speaker is Speaker.AGENT
    assert read.start_time.endswith("Z") and "T" in read.start_time


async def test_append_turn_and_end_call_atomically(store, redis_server):
    call = await store.create("Jane", "555", "Hello")
    turn = [entry(Speaker.CUSTOMER, "hi"), entry(Speaker.AGENT, "hello again")]
    assert await store.append_turn(call.call_id, turn) is None
    end_time = await store.append_turn(
        call.call_id, [entry(Speaker.CUSTOMER, "bye"), entry(Speaker.AGENT, "goodbye")], True
    )
    read = await store.get(call.call_id)
    assert [e.text for e in read.history] == ["Hello", "hi", "hello again", "bye", "goodbye"]
    assert not read.is_active and read.end_time == end_time
    # Ended calls are kept for the configured time, then Redis expires them.
    ttl = await store._redis.ttl(f"sales:call:{call.call_id}")
    assert 590 < ttl <= 600


async def test_ended_or_unknown_call_refuses_writes_and_keeps_history(store):
    call = await store.create("Jane", "555", "Hello")
    await store.end(call.call_id)
    with pytest.raises(CallNotFound):
        await store.append_turn(call.call_id, [entry(Speaker.CUSTOMER, "late")])
    with pytest.raises(CallNotFound):
        await store.get_active(call.call_id)
    assert [e.text for e in (await store.get(call.call_id)).history] == ["Hello"]
    with pytest.raises(CallNotFound):
        await store.get(str(uuid.uuid4()))


async def test_turn_lock_serializes_turns(store):
    call = await store.create("Jane", "555", "Hello")
    order: list[str] = []

    async def turn(name: str):
        async with store.turn_lock(call.call_id):
            order.append(f"{name}-in")
            await asyncio.sleep(0.05)
            order.append(f"{name}-out")

    await asyncio.gather(*(turn(str(i)) for i in range(5)))
    # No two turns overlap: every "in" is followed by its own "out".
    assert all(order[i][:-3] == order[i + 1][:-4] for i in range(0, len(order), 2))


async def test_turn_lock_gives_up_after_its_wait(redis_server):
    impatient = SessionStore(RedisSettings(url=redis_server.url, turn_lock_wait_s=0.2))
    call = await impatient.create("Jane", "555", "Hello")
    async with impatient.turn_lock(call.call_id):
        with pytest.raises(CallBusy):
            async with impatient.turn_lock(call.call_id):
                pass
    await impatient.close()


async def test_a_turn_cancelled_anywhere_leaves_the_lock_free(redis_server):
    """A streamed reply is cancelled whenever the lead talks on, also while Redis is
    granting it the call's lock: it must end (redis-py can swallow that cancellation, and
    the turn went on holding the lock), and the next turn must get the lock at once, not
    after the lock's TTL. Cancelled at points spread over the acquisition's round trips."""
    impatient = SessionStore(RedisSettings(url=redis_server.url, turn_lock_wait_s=1.0))
    call = await impatient.create("Jane", "555", "Hello")

    async def hold() -> None:
        async with impatient.turn_lock(call.call_id):
            await asyncio.sleep(10)

    for n in range(60):
        task = asyncio.ensure_future(hold())
        for _ in range(n % 6):  # 0-5 turns of the event loop: mid-request, mid-reply, held
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        if not done:  # the cancellation was lost: the turn went on, holding the lock
            task.cancel()
        assert done, f"cancelled after {n % 6} loop turns, the turn went on"
        with suppress(asyncio.CancelledError):
            await task
        async with impatient.turn_lock(call.call_id):  # CallBusy if it was left taken
            pass
    await impatient.close()


async def test_the_owner_is_stored_but_never_sent(store):
    call = await store.create("Jane", "+15550100100", "Hello", owner="key-a")
    assert (await store.owner_of(call.call_id)) == "key-a"
    assert (await store.get(call.call_id)).owner == "key-a"
    assert "owner" not in (await store.get(call.call_id)).model_dump()
    assert await store.owner_of(str(uuid.uuid4())) is None


async def test_one_websocket_claim_per_call(store):
    call = await store.create("Jane", "+15550100100", "Hello")
    async with store.websocket_claim(call.call_id, ttl_s=5):
        with pytest.raises(CallInUse):
            async with store.websocket_claim(call.call_id, ttl_s=5):
                pass
    async with store.websocket_claim(call.call_id, ttl_s=5):  # released: free again
        pass


async def test_admission_takes_exactly_the_room_left_under_concurrency(store, redis_server):
    room = 3
    capacity = await store.active_count() + room
    calls_before = len(await store.redis.keys("sales:call:*"))
    results = await asyncio.gather(
        *(store.create(f"Lead {n}", "555-010-0100", "Hi", capacity=capacity) for n in range(10)),
        return_exceptions=True,
    )
    admitted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, AtCapacity)]
    assert len(admitted) == room and len(refused) == 10 - room  # no other outcome
    assert all(r.capacity == capacity and r.active == capacity for r in refused)
    assert await store.active_count() == capacity
    # A refused call stores nothing (a call is two keys); an ended call gives its place back.
    assert len(await store.redis.keys("sales:call:*")) == calls_before + 2 * room
    await store.append_turn(admitted[0].call_id, [], end_call=True)
    again = await store.create("Lead again", "555-010-0100", "Hi", capacity=capacity)
    assert (await store.get(again.call_id)).is_active
    with pytest.raises(AtCapacity):
        await store.create("One too many", "555-010-0100", "Hi", capacity=capacity)
