"""API keys and per-key rate limits, kept in Redis.

A key is shown once, when it is created:

    python -m salesagent.platform.auth create --name dialer-1 [--redis-url redis://...]
    python -m salesagent.platform.auth list
    python -m salesagent.platform.auth revoke KEY_ID

Redis keeps only the key's SHA-256 (keys are 256 random bits, so a fast hash is enough;
there is nothing to guess). A key's id, the first 16 hex digits of that hash, owns the
calls the key starts and names its rate-limit counter; it is safe to log.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import time

import redis.asyncio as aioredis
from pydantic import BaseModel

from salesagent.platform.sessions import utc_now
from salesagent.platform.settings import Settings

KEYS_HASH = "sales:api-keys"  # hash: SHA-256 hex of a key -> ApiKey JSON
RATE_PREFIX = "sales:rate:"  # string per key and minute: requests counted in that minute
KEY_PREFIX = "sk_"  # so a leaked key is recognisable in logs and secret scanners


class ApiKey(BaseModel):
    id: str
    name: str
    created_at: str
    requests_per_minute: int | None = None  # None: the service's default


class Unauthorized(Exception):
    """No API key, or one that is unknown or revoked."""


class RateLimited(Exception):
    def __init__(self, limit: int, retry_after_s: int):
        super().__init__(f"Rate limit of {limit} requests per minute reached; retry later")
        self.retry_after_s = retry_after_s


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class KeyStore:
    def __init__(self, redis: aioredis.Redis, default_requests_per_minute: int):
        self._redis = redis
        self._default_rpm = default_requests_per_minute

    async def create(self, name: str, requests_per_minute: int | None = None) -> tuple[str, ApiKey]:
        """A new key: the raw key (show it once, it is not stored) and its record."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = hash_key(raw)
        key = ApiKey(
            id=digest[:16], name=name, created_at=utc_now(), requests_per_minute=requests_per_minute
        )
        await self._redis.hset(KEYS_HASH, digest, key.model_dump_json())
        return raw, key

    async def list(self) -> list[ApiKey]:
        return [ApiKey.model_validate_json(v) for v in (await self._redis.hvals(KEYS_HASH))]

    async def revoke(self, key_id: str) -> bool:
        for digest in await self._redis.hkeys(KEYS_HASH):
            if digest.startswith(key_id) and len(key_id) >= 8:
                return bool(await self._redis.hdel(KEYS_HASH, digest))
        return False

    async def authenticate(self, raw: str | None) -> ApiKey:
        if not raw:
            raise Unauthorized("An API key is required: send it as 'X-API-Key' or a Bearer token")
        record = await self._redis.hget(KEYS_HASH, hash_key(raw.strip()))
        if record is None:
            raise Unauthorized("Unknown or revoked API key")
        return ApiKey.model_validate_json(record)

    async def count_request(self, key: ApiKey) -> None:
        """Count one request in the key's current minute; RateLimited past its limit."""
        limit = key.requests_per_minute or self._default_rpm
        now = time.time()
        minute = int(now // 60)
        counter = f"{RATE_PREFIX}{key.id}:{minute}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(counter)
            pipe.expire(counter, 120)
            count, _ = await pipe.execute()
        if count > limit:
            raise RateLimited(limit, retry_after_s=max(1, int((minute + 1) * 60 - now + 0.999)))


async def _main(args: argparse.Namespace) -> None:
    settings = Settings()
    client = aioredis.from_url(args.redis_url or settings.redis.url, decode_responses=True)
    keys = KeyStore(client, settings.auth.requests_per_minute)
    try:
        if args.command == "create":
            raw, key = await keys.create(args.name, args.requests_per_minute)
            print(f"id {key.id}  name {key.name}\n{raw}\n(shown once: store it in your secrets)")
        elif args.command == "list":
            for key in await keys.list():
                rpm = key.requests_per_minute or f"{settings.auth.requests_per_minute} (default)"
                print(f"{key.id}  {key.name}  created {key.created_at}  {rpm}/min")
        elif not await keys.revoke(args.key_id):
            raise SystemExit(f"no key with id {args.key_id}")
        else:
            print(f"revoked {args.key_id}")
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="Manage the service's API keys.")
    parser.add_argument("--redis-url", help="default: SALES_REDIS__URL or the local Redis")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="who uses it, e.g. dialer-eu-1")
    create.add_argument("--requests-per-minute", type=int, help="this key's own rate limit")
    commands.add_parser("list", help="list keys (ids and names, never the keys)")
    revoke = commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
