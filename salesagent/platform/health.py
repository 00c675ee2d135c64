"""The health report's rules: how probes, replicas and recent metrics make a status.

Per service (stt, llm, tts, redis):
- `critical_issue`: its probe failed, i.e. no replica answered within the health bound
  (pending, dead or overloaded), or Redis did not answer a PING.
- `degraded`: it answers, but fewer replicas run than Serve wants, or more than
  `max_error_rate` of its recent requests failed (once there are `min_requests`).
- `ok`: otherwise.
The report's `status` is `ok` when every service is `ok`, else `issues_present`.
"""

from __future__ import annotations

from pydantic import BaseModel

from salesagent.platform.metrics import StageStats


class HealthRules(BaseModel):
    max_error_rate: float = 0.2
    min_requests: int = 5
    # Recent = the metrics' change over this window (or since start-up, when younger).
    window_s: float = 300.0


class ServiceHealth(BaseModel):
    status: str  # ok, degraded or critical_issue
    details: str
    ready_replicas: int | None = None
    wanted_replicas: int | None = None
    requests: float = 0
    error_rate: float = 0.0
    p95_latency_s: float | None = None


def assess(
    probe_ok: bool,
    details: str,
    stats: StageStats,
    rules: HealthRules,
    replicas: tuple[int, int] | None = None,
) -> ServiceHealth:
    ready, wanted = replicas if replicas else (None, None)
    status = "ok"
    if not probe_ok:
        status = "critical_issue"
    elif ready is not None and wanted is not None and ready < wanted:
        status, details = "degraded", f"{details}; {ready} of {wanted} replicas running"
    elif stats.requests >= rules.min_requests and stats.error_rate > rules.max_error_rate:
        status = "degraded"
        details = f"{details}; {stats.error_rate:.0%} of recent requests failed"
    return ServiceHealth(
        status=status,
        details=details,
        ready_replicas=ready,
        wanted_replicas=wanted,
        requests=stats.requests,
        error_rate=round(stats.error_rate, 4),
        p95_latency_s=None if stats.p95_s is None else round(stats.p95_s, 4),
    )


def overall(services: dict[str, ServiceHealth]) -> str:
    return "ok" if all(s.status == "ok" for s in services.values()) else "issues_present"
