"""The health report: asks every deployment and Redis, then reads the recent metrics.

Each probe is bounded by `health_timeout_s` and all run at once, so the report answers
within ~2 s even when a replica is pending or dead. Replica counts come from Serve's
controller; p95 latency and error rate from the change in the cluster's metrics over the
rules' window (snapshots are kept in memory, one per report). The rules themselves are
in `salesagent.platform.health`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from redis.exceptions import RedisError

from deployments.fleet import Fleet
from deployments.telemetry import scrape_cluster
from salesagent.platform.capacity import CapacityReport
from salesagent.platform.capacity import report as capacity_report
from salesagent.platform.health import ServiceHealth, assess, overall
from salesagent.platform.metrics import StageStats, parse_prometheus, stage_stats
from salesagent.platform.schemas import HealthResponse
from salesagent.platform.sessions import SessionStore
from salesagent.platform.settings import Settings
from salesagent.sales.service import LLMUnavailable, STTUnavailable, TTSFailed

logger = logging.getLogger("salesagent.platform.health")

# service -> (deployment, the stage whose latency it reports)
SERVICES = {
    "stt": ("STTDeployment", "stt"),
    "llm": ("LLMDeployment", "llm_total"),
    "tts": ("TTSDeployment", "tts"),
    "redis": (None, "redis"),
}


class HealthReporter:
    def __init__(self, settings: Settings, llm, stt, tts, store: SessionStore, fleet: Fleet):
        self._settings = settings
        self._fleet = fleet
        self._probes = {
            "llm": (llm.ready, LLMUnavailable),
            "stt": (stt.ready, STTUnavailable),
            "tts": (tts.ready, TTSFailed),
        }
        self._store = store
        self._snapshots: deque[tuple[float, dict]] = deque()

    async def report(self) -> HealthResponse:
        timeout = self._settings.health_timeout_s
        names = [*self._probes, "redis"]
        probes = await asyncio.gather(*(self._probe(n) for n in self._probes), self._ping())
        replicas, metrics = await asyncio.gather(
            self._fleet.replicas(fresh=True), self._recent_metrics(timeout)
        )
        now, before = metrics
        services: dict[str, ServiceHealth] = {}
        for name, (ok, details) in zip(names, probes, strict=True):
            deployment, stage = SERVICES[name]
            stats = stage_stats(now, before, stage) if now else StageStats(0, 0, None)
            counts, why = replicas.get(deployment, (None, ""))
            if not ok and why:  # Serve's word on it: a replica that fails to start says why
                details = f"{details}; Serve: {why}"
            services[name] = assess(ok, details, stats, self._settings.health, counts)
        llm = services["llm"]
        return HealthResponse(
            status=overall(services),
            app_title=self._settings.app_title,
            app_version=self._settings.app_version,
            llm_service_status=llm.status,
            llm_service_details=llm.details,
            services=services,
            capacity=await self._capacity(),
        )

    async def _capacity(self) -> CapacityReport | None:
        try:
            active = await asyncio.wait_for(
                self._store.active_count(), self._settings.health_timeout_s
            )
        except (TimeoutError, RedisError, OSError):
            return None  # Redis's own entry says why
        running = await self._fleet.running("LLMDeployment")
        return capacity_report(self._settings.capacity, running, active)

    async def _probe(self, name: str) -> tuple[bool, str]:
        ready, unavailable = self._probes[name]
        try:
            return True, f"ready ({await ready()})"
        except unavailable as exc:
            return False, f"not ready: {exc}"

    async def _ping(self) -> tuple[bool, str]:
        try:
            await asyncio.wait_for(self._store.ping(), self._settings.health_timeout_s)
            return True, "redis reachable"
        except (TimeoutError, RedisError, OSError) as exc:
            return False, f"redis unreachable ({type(exc).__name__})"

    async def _recent_metrics(self, timeout_s: float) -> tuple[dict, dict]:
        """(metrics now, metrics at the start of the window) as parsed samples."""
        try:
            now = parse_prometheus(await scrape_cluster(timeout_s))
        except Exception as exc:
            logger.warning("metrics unavailable: %r", exc)
            return {}, {}
        t = time.monotonic()
        self._snapshots.append((t, now))
        window = self._settings.health.window_s
        while len(self._snapshots) > 1 and self._snapshots[1][0] <= t - window:
            self._snapshots.popleft()
        oldest_t, oldest = self._snapshots[0]
        # Younger than the window: everything since start-up is recent.
        return now, (oldest if oldest_t <= t - window else {})
