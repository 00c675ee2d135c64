"""API keys and rate limits against a real Redis."""

import asyncio

import pytest
import redis.asyncio as aioredis

from salesagent.platform.auth import KeyStore, RateLimited, Unauthorized, hash_key
from tests.conftest import away_from_a_minute_boundary


@pytest.fixture()
async def keys(redis_server):
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    yield KeyStore(client, default_requests_per_minute=5)
    await client.aclose()


async def test_a_key_authenticates_until_it_is_revoked(keys):
    raw, key = await keys.create("dialer")
    assert raw.startswith("sk_") and key.id == hash_key(raw)[:16]
    assert (await keys.authenticate(raw)).name == "dialer"
    assert key.id in {k.id for k in await keys.list()}
    assert await keys.revoke(key.id)
    with pytest.raises(Unauthorized, match="revoked"):
        await keys.authenticate(raw)
    assert not await keys.revoke(key.id)


@pytest.mark.parametrize("raw", [None, "", "sk_made-up"])
async def test_missing_or_unknown_keys_are_refused(keys, raw):
    with pytest.raises(Unauthorized):
        await keys.authenticate(raw)


async def test_each_key_has_its_own_budget_per_minute(keys):
    await asyncio.sleep(away_from_a_minute_boundary())
    _, default = await keys.create("default budget")
    _, own = await keys.create("own budget", requests_per_minute=2)
    for _ in range(5):
        await keys.count_request(default)
    with pytest.raises(RateLimited) as limited:
        await keys.count_request(default)
    assert 1 <= limited.value.retry_after_s <= 60
    await keys.count_request(own)
    await keys.count_request(own)
    with pytest.raises(RateLimited, match="2 requests per minute"):
        await keys.count_request(own)
