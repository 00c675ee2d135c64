"""The replicas of this application that run now, from Serve's controller.

Read at most every `ttl_s` (admission asks on every start-call) and each read bounded by
`timeout_s`; when the controller does not answer, the last counts stand.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ray import serve

logger = logging.getLogger("salesagent.platform.fleet")

# {deployment: ((running, wanted), Serve's message about it)}
Replicas = dict[str, tuple[tuple[int, int], str]]


class Fleet:
    def __init__(self, timeout_s: float, ttl_s: float = 2.0):
        self._timeout_s, self._ttl_s = timeout_s, ttl_s
        self._replicas: Replicas = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def replicas(self, fresh: bool = False) -> Replicas:
        async with self._lock:  # one read at a time; the others take its answer
            if fresh or time.monotonic() - self._read_at >= self._ttl_s:
                try:
                    self._replicas = await asyncio.wait_for(
                        asyncio.to_thread(_read), self._timeout_s
                    )
                    self._read_at = time.monotonic()
                except Exception as exc:  # the last counts stand
                    logger.warning("replica counts unavailable: %r", exc)
            return self._replicas

    async def running(self, deployment: str) -> int | None:
        """Replicas of `deployment` running now (None when never read)."""
        counts = (await self.replicas()).get(deployment)
        return counts[0][0] if counts else None


def _read() -> Replicas:
    status = serve.status()
    app = status.applications[serve.get_replica_context().app_name]
    return {
        name: (
            (
                sum(n for state, n in d.replica_states.items() if str(state) == "RUNNING"),
                sum(d.replica_states.values()),
            ),
            _gist(d.message),
        )
        for name, d in app.deployments.items()
    }


def _gist(message: str) -> str:
    """Serve's message about a deployment, without the traceback's middle: its first line
    and its last (the error a failing constructor raised, which says what to fix)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    gist = " ... ".join([lines[0], lines[-1]]) if len(lines) > 2 else " ".join(lines)
    return gist[:800]
