"""Call sessions in Redis: one hash of call fields and one list of history entries per call.

Writes that belong together happen in one step: a turn's customer and agent entries,
and the end of the call, go through a Lua script that first checks the call is still
active, so a turn is stored whole or not at all. Turns on one call are serialized
by `turn_lock` (a Redis lock, so it holds across ingress replicas).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from enum import StrEnum

import redis.asyncio as aioredis
from pydantic import BaseModel, Field
from redis.exceptions import LockError, RedisError

from salesagent.platform.capacity import AtCapacity
from salesagent.platform.metrics import Metrics, NoMetrics, timed
from salesagent.platform.settings import RedisSettings
from salesagent.sales.call_state import CallState

KEY_PREFIX = "sales:call:"


class Speaker(StrEnum):
    AGENT = "agent"
    CUSTOMER = "customer"


class HistoryEntry(BaseModel):
    speaker: Speaker
    text: str
    timestamp: str
    # Beyond the contract: the customer spoke over this agent line, and `text` is the part
    # they heard.
    interrupted: bool = False


class CarrierEvent(BaseModel):
    status: str  # Twilio's CallStatus: queued, ringing, in-progress, completed, busy, ...
    at: str


class CarrierRecord(BaseModel):
    """A call placed or taken through the phone carrier, as the carrier reported it."""

    provider: str = "twilio"
    call_sid: str = ""
    direction: str = ""  # outbound or inbound
    status: str = ""  # the latest status
    answered_by: str | None = None  # answering-machine detection: human, machine_..., fax
    error: str | None = None
    events: list[CarrierEvent] = Field(default_factory=list)


class CallSession(BaseModel):
    call_id: str
    customer_name: str
    phone_number: str
    history: list[HistoryEntry]
    is_active: bool
    start_time: str
    end_time: str | None
    # Beyond the contract's fields: stage, qualification, objections, disposition.
    state: CallState = Field(default_factory=CallState)
    # Phone calls only: what the carrier said of the call.
    carrier: CarrierRecord | None = None
    # The id of the API key that started the call ("" without auth); never sent to clients.
    owner: str = Field(default="", exclude=True)


class CallSummary(BaseModel):
    """One line of the calls list: who, when, how long, and how it ended."""

    call_id: str
    customer_name: str
    phone_number: str
    is_active: bool
    start_time: str
    end_time: str | None
    duration_s: float  # to the end, or to now for an active call
    turns: int  # customer lines
    stage: str
    disposition: str | None


class CallNotFound(Exception):
    """No such call, or (for writes) the call has already ended."""

    def __init__(self, call_id: str):
        super().__init__(f"Call {call_id[:64]} not found or already ended")


class CallBusy(Exception):
    """Another turn held the call's lock for longer than we were willing to wait."""

    def __init__(self, call_id: str):
        super().__init__(f"Call {call_id} is busy with another turn; retry shortly")


class CallInUse(Exception):
    """Another WebSocket is already connected to the call."""

    def __init__(self, call_id: str):
        super().__init__(f"Call {call_id} already has an open voice connection")


def utc_now() -> str:
    """ISO-8601 UTC with millisecond precision and a Z suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def entry(speaker: Speaker, text: str, interrupted: bool = False) -> HistoryEntry:
    return HistoryEntry(speaker=speaker, text=text, timestamp=utc_now(), interrupted=interrupted)


ACTIVE_KEY = "sales:active"  # sorted set: active call ids scored by their last activity
# Sorted set per API key id ("" without auth): its calls scored by start time, newest last.
# Entries outlive their call's keys (which expire); listing drops those it finds gone.
CALLS_BY_OWNER_PREFIX = "sales:calls-of:"
DO_NOT_CALL_KEY = "sales:do-not-call"  # set of normalized phone numbers

# Compare-and-renew / compare-and-delete of a WebSocket's claim on its call.
_RENEW_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
_RELEASE_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""

# KEYS: call hash, history list. ARGV: index, heard text. The agent entry at the index, cut
# to what was heard and marked interrupted, if the call is active. Returns 1 when cut.
_CUT_AGENT_ENTRY = """
if redis.call('HGET', KEYS[1], 'is_active') ~= '1' then return 0 end
local raw = redis.call('LINDEX', KEYS[2], ARGV[1])
if not raw then return 0 end
local item = cjson.decode(raw)
if item.speaker ~= 'agent' then return 0 end
item.text = ARGV[2]
item.interrupted = true
redis.call('LSET', KEYS[2], ARGV[1], cjson.encode(item))
return 1
"""

# KEYS: call hash. ARGV: JSON of the fields to set on the call's carrier record, with an
# optional `event` appended to its events. Returns 0 when the call is gone.
_RECORD_CARRIER = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local raw = redis.call('HGET', KEYS[1], 'carrier')
local record = raw and cjson.decode(raw) or {}
local update = cjson.decode(ARGV[1])
for k, v in pairs(update) do
  if k ~= 'event' then record[k] = v end
end
if update.event then
  local events = record.events or {}
  if type(events) ~= 'table' or next(events) == nil then events = {} end
  table.insert(events, update.event)
  record.events = events
end
redis.call('HSET', KEYS[1], 'carrier', cjson.encode(record))
return 1
"""

# KEYS: call hash, history list, active set, do-not-call set.
# ARGV[1]: JSON {end, end_time, ttl_active, ttl_ended, now, call_id, state, do_not_call};
# ARGV[2..]: history entries. Returns 0 when the call is missing or already ended (nothing
# is written), else 1.
_APPEND_TURN = """
if redis.call('HGET', KEYS[1], 'is_active') ~= '1' then return 0 end
local turn = cjson.decode(ARGV[1])
for i = 2, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
if turn.state ~= '' then redis.call('HSET', KEYS[1], 'state', turn.state) end
if turn.do_not_call ~= '' then redis.call('SADD', KEYS[4], turn.do_not_call) end
local ttl = turn.ttl_active
if turn['end'] then
  redis.call('HSET', KEYS[1], 'is_active', '0', 'end_time', turn.end_time)
  redis.call('ZREM', KEYS[3], turn.call_id)
  ttl = turn.ttl_ended
else
  redis.call('ZADD', KEYS[3], turn.now, turn.call_id)
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return 1
"""


# KEYS: active set. ARGV: idle-since time, capacity, call id, now. Drops idle calls, then
# holds a place for the call when fewer than `capacity` are active. Returns {admitted (0 or
# 1), active calls before it}: one atomic step, so two dialers never take the last place.
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local active = redis.call('ZCARD', KEYS[1])
if active >= tonumber(ARGV[2]) then return {0, active} end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
return {1, active}
"""


class SessionStore:
    def __init__(
        self,
        settings: RedisSettings,
        client: aioredis.Redis | None = None,
        metrics: Metrics | None = None,
    ):
        self._settings = settings
        self._metrics = metrics or NoMetrics()
        self._redis = client or aioredis.from_url(
            settings.url,
            decode_responses=True,
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.socket_timeout_s,
        )
        self._append_turn = self._redis.register_script(_APPEND_TURN)
        self._renew_claim = self._redis.register_script(_RENEW_CLAIM)
        self._release_claim = self._redis.register_script(_RELEASE_CLAIM)
        self._cut_agent_entry = self._redis.register_script(_CUT_AGENT_ENTRY)
        self._record_carrier = self._redis.register_script(_RECORD_CARRIER)
        self._admit = self._redis.register_script(_ADMIT)

    @property
    def redis(self) -> aioredis.Redis:
        """The client, for other Redis-backed parts of the service (API keys)."""
        return self._redis

    @staticmethod
    def _keys(call_id: str) -> tuple[str, str]:
        return f"{KEY_PREFIX}{call_id}", f"{KEY_PREFIX}{call_id}:history"

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def create(
        self,
        customer_name: str,
        phone_number: str,
        first_message: str,
        owner: str = "",
        capacity: int | None = None,
    ) -> CallSession:
        """A new active call; with `capacity`, only while fewer calls than that are active
        (else AtCapacity, and nothing is stored)."""
        first = entry(Speaker.AGENT, first_message)
        session = CallSession(
            call_id=str(uuid.uuid4()),
            customer_name=customer_name,
            phone_number=phone_number,
            history=[first],
            is_active=True,
            start_time=first.timestamp,
            end_time=None,
            owner=owner,
        )
        if capacity is not None:
            with timed(self._metrics, "redis"):
                idle_since = time.time() - self._settings.idle_call_ttl_s
                admitted, active = await self._admit(
                    keys=[ACTIVE_KEY], args=[idle_since, capacity, session.call_id, time.time()]
                )
            if not admitted:  # a refusal (counted by the service), not a Redis error
                raise AtCapacity(capacity, int(active))
        with timed(self._metrics, "redis"):
            try:
                await self._create(session, first)
            except BaseException:
                if capacity is not None:  # give the place back
                    await self._redis.zrem(ACTIVE_KEY, session.call_id)
                raise
        return session

    async def _create(self, session: CallSession, first: HistoryEntry) -> None:
        call_id, ttl = session.call_id, self._settings.idle_call_ttl_s
        call_key, history_key = self._keys(call_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                call_key,
                mapping={
                    "customer_name": session.customer_name,
                    "phone_number": session.phone_number,
                    "is_active": "1",
                    "start_time": first.timestamp,
                    "end_time": "",
                    "owner": session.owner,
                },
            )
            pipe.rpush(history_key, first.model_dump_json())
            pipe.expire(call_key, ttl)
            pipe.expire(history_key, ttl)
            pipe.zadd(ACTIVE_KEY, {call_id: time.time()})
            calls_of = CALLS_BY_OWNER_PREFIX + session.owner
            pipe.zadd(calls_of, {call_id: time.time()})
            pipe.expire(calls_of, self._settings.ended_call_ttl_s + ttl)  # the newest's life
            await pipe.execute()

    async def get(self, call_id: str) -> CallSession:
        call_key, history_key = self._keys(call_id)
        with timed(self._metrics, "redis"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(call_key)
                pipe.lrange(history_key, 0, -1)
                fields, raw_history = await pipe.execute()
        if not fields:
            raise CallNotFound(call_id)
        return CallSession(
            call_id=call_id,
            customer_name=fields["customer_name"],
            phone_number=fields["phone_number"],
            history=[HistoryEntry.model_validate_json(item) for item in raw_history],
            is_active=fields["is_active"] == "1",
            start_time=fields["start_time"],
            end_time=fields["end_time"] or None,
            state=_state(fields),
            carrier=CarrierRecord.model_validate_json(fields["carrier"])
            if "carrier" in fields
            else None,
            owner=fields.get("owner", ""),
        )

    async def list_calls(
        self, owner: str, limit: int, offset: int
    ) -> tuple[list[CallSummary], int]:
        """The owner's calls, newest first, `limit` from `offset`; and how many there are."""
        calls_of = CALLS_BY_OWNER_PREFIX + owner
        with timed(self._metrics, "redis"):
            while True:
                ids = await self._redis.zrevrange(calls_of, offset, offset + limit - 1)
                async with self._redis.pipeline(transaction=False) as pipe:
                    for call_id in ids:
                        call_key, history_key = self._keys(call_id)
                        pipe.hgetall(call_key)
                        pipe.lrange(history_key, 0, -1)
                    replies = await pipe.execute()
                rows = list(zip(ids, replies[::2], replies[1::2], strict=True))
                gone = [call_id for call_id, fields, _ in rows if not fields]
                if not gone:
                    break
                await self._redis.zrem(calls_of, *gone)  # expired: list the page again
            total = await self._redis.zcard(calls_of)
        return [_summary(call_id, fields, history) for call_id, fields, history in rows], total

    async def owner_of(self, call_id: str) -> str | None:
        """The id of the key that started the call ("" without auth); None: no such call."""
        with timed(self._metrics, "redis"):
            fields = await self._redis.hmget(self._keys(call_id)[0], ["is_active", "owner"])
        return None if fields[0] is None else fields[1] or ""

    async def get_active(self, call_id: str) -> CallSession:
        session = await self.get(call_id)
        if not session.is_active:
            raise CallNotFound(call_id)
        return session

    async def append_turn(
        self,
        call_id: str,
        entries: list[HistoryEntry],
        end_call: bool = False,
        state: CallState | None = None,
        do_not_call: str = "",
    ) -> str | None:
        """Store a turn atomically: its entries, the call's new state, the end of the call,
        and a do-not-call request for `do_not_call` (a normalized number). Returns the end
        time when the call ended."""
        end_time = utc_now() if end_call else ""
        turn = {
            "end": end_call,
            "end_time": end_time,
            "ttl_active": self._settings.idle_call_ttl_s,
            "ttl_ended": self._settings.ended_call_ttl_s,
            "now": time.time(),
            "call_id": call_id,
            "state": state.model_dump_json() if state else "",
            "do_not_call": do_not_call,
        }
        with timed(self._metrics, "redis"):
            stored = await self._append_turn(
                keys=[*self._keys(call_id), ACTIVE_KEY, DO_NOT_CALL_KEY],
                args=[json.dumps(turn), *(e.model_dump_json() for e in entries)],
            )
        if not stored:
            raise CallNotFound(call_id)
        return end_time or None

    async def cut_agent_entry(self, call_id: str, index: int, heard: str) -> bool:
        """The agent's line at `index` as far as the customer heard it, marked interrupted
        (the greeting, which is stored before it is spoken); False if nothing was cut."""
        with timed(self._metrics, "redis"):
            return bool(await self._cut_agent_entry(keys=self._keys(call_id), args=[index, heard]))

    async def record_carrier(
        self, call_id: str, status: str | None = None, **fields: str | None
    ) -> bool:
        """Set fields of the call's carrier record, and log `status` as its latest event;
        False when the call is gone (expired)."""
        update: dict = {k: v for k, v in fields.items() if v is not None}
        if status:
            update["status"] = status
            update["event"] = {"status": status, "at": utc_now()}
        with timed(self._metrics, "redis"):
            return bool(
                await self._record_carrier(keys=[self._keys(call_id)[0]], args=[json.dumps(update)])
            )

    async def end(self, call_id: str, state: CallState | None = None) -> str | None:
        """End an active call without adding history (a client hung up)."""
        return await self.append_turn(call_id, [], end_call=True, state=state)

    async def is_do_not_call(self, phone_number: str) -> bool:
        with timed(self._metrics, "redis"):
            return bool(await self._redis.sismember(DO_NOT_CALL_KEY, phone_number))

    async def active_count(self) -> int:
        """Active calls touched within the idle TTL (older ones have expired from Redis)."""
        with timed(self._metrics, "redis"):
            idle_since = time.time() - self._settings.idle_call_ttl_s
            await self._redis.zremrangebyscore(ACTIVE_KEY, "-inf", idle_since)
            return await self._redis.zcard(ACTIVE_KEY)

    @asynccontextmanager
    async def turn_lock(self, call_id: str) -> AsyncIterator[None]:
        """Serialize turns on one call, across every ingress replica. Safe to cancel at any
        point: a turn cancelled while Redis granted it the lock, or while it gave it back,
        must not leave the lock to stall the call's next turns for the lock's whole TTL."""
        lock = self._redis.lock(
            f"{KEY_PREFIX}{call_id}:lock",
            timeout=self._settings.turn_lock_ttl_s,
            blocking_timeout=self._settings.turn_lock_wait_s,
        )
        token = uuid.uuid4().hex.encode()  # ours, so a grant we never heard of can be undone
        try:
            acquired = await lock.acquire(token=token)
            if asyncio.current_task().cancelling():  # redis-py can swallow a cancellation
                raise asyncio.CancelledError
        except BaseException:
            with suppress(Exception):
                await asyncio.shield(lock.do_release(token))
            raise
        if not acquired:
            raise CallBusy(call_id)
        try:
            yield
        finally:
            with suppress(LockError):  # expired while held; the next turn already owns it
                await asyncio.shield(lock.release())

    @asynccontextmanager
    async def websocket_claim(self, call_id: str, ttl_s: float) -> AsyncIterator[None]:
        """Hold the call's one WebSocket slot while the block runs; CallInUse when another
        socket holds it. The claim is renewed while held and expires `ttl_s` after its
        holder dies, so a crashed replica frees the call within that time."""
        key, token, ttl_ms = f"{KEY_PREFIX}{call_id}:socket", uuid.uuid4().hex, int(ttl_s * 1000)
        if not await self._redis.set(key, token, nx=True, px=ttl_ms):
            raise CallInUse(call_id)

        async def renew() -> None:
            with suppress(RedisError):  # Redis gone: the claim lapses after its TTL
                while await self._renew_claim(keys=[key], args=[token, ttl_ms]):
                    await asyncio.sleep(ttl_s / 3)

        renewing = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewing.cancel()
            with suppress(RedisError):  # Redis gone: the claim expires on its own
                await self._release_claim(keys=[key], args=[token])

    async def close(self) -> None:
        await self._redis.aclose()


def _state(fields: dict[str, str]) -> CallState:
    return CallState.model_validate_json(fields["state"]) if "state" in fields else CallState()


def _summary(call_id: str, fields: dict[str, str], raw_history: list[str]) -> CallSummary:
    state = _state(fields)
    end_time = fields["end_time"] or None
    end = datetime.fromisoformat(end_time) if end_time else datetime.now(UTC)
    started = datetime.fromisoformat(fields["start_time"])
    turns = sum(
        HistoryEntry.model_validate_json(item).speaker is Speaker.CUSTOMER for item in raw_history
    )
    return CallSummary(
        call_id=call_id,
        customer_name=fields["customer_name"],
        phone_number=fields["phone_number"],
        is_active=fields["is_active"] == "1",
        start_time=fields["start_time"],
        end_time=end_time,
        duration_s=round(max((end - started).total_seconds(), 0.0), 1),
        turns=turns,
        stage=state.stage.value,
        disposition=state.disposition.value if state.disposition else None,
    )
