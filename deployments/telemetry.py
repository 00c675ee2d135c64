"""Ray-backed metrics for the replicas, and reading them back from the cluster.

Each replica creates its metrics when it starts (a module-level metric would be a copy
pickled with the class). Ray's metrics agent on every node exports them on the node's
metrics export port, with `deployment`, `replica` and `application` tags; Prometheus
finds those ports through the file Ray writes for service discovery (see
cluster/prometheus.yml). `scrape_cluster` reads the same endpoints for /metrics and /health.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import ray
from ray.serve import metrics as serve_metrics

from salesagent.platform.metrics import DEFINITIONS, LATENCY_BUCKETS_S, Kind

_FACTORY = {
    Kind.COUNTER: serve_metrics.Counter,
    Kind.GAUGE: serve_metrics.Gauge,
    Kind.HISTOGRAM: serve_metrics.Histogram,
}


class RayMetrics:
    """`salesagent.platform.metrics.Metrics` on `ray.serve.metrics`, created inside the replica.

    Ray drops a gauge that has not been set for a while, so the last value of each gauge
    is set again every `GAUGE_REFRESH_S` from a daemon thread.
    """

    GAUGE_REFRESH_S = 5.0

    def __init__(self) -> None:
        self._gauges: dict[tuple[str, tuple], float] = {}
        self._metrics = {}
        for name, definition in DEFINITIONS.items():
            options = {"description": definition.description, "tag_keys": definition.labels}
            if definition.kind is Kind.HISTOGRAM:
                options["boundaries"] = LATENCY_BUCKETS_S
            self._metrics[name] = _FACTORY[definition.kind](name, **options)
        threading.Thread(target=self._refresh_gauges, daemon=True).start()

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._metrics[name].observe(value, tags=labels or None)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        if value > 0:
            self._metrics[name].inc(value, tags=labels or None)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._gauges[(name, tuple(sorted(labels.items())))] = value
        self._metrics[name].set(value, tags=labels or None)

    def _refresh_gauges(self) -> None:
        while True:
            time.sleep(self.GAUGE_REFRESH_S)
            for (name, labels), value in list(self._gauges.items()):
                self._metrics[name].set(value, tags=dict(labels) or None)


def _metrics_endpoints() -> list[str]:
    return [
        f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        for node in ray.nodes()
        if node["Alive"] and node.get("MetricsExportPort")
    ]


async def scrape_cluster(timeout_s: float) -> str:
    """Every alive node's metrics export, concatenated (nodes that do not answer are skipped)."""
    endpoints = await asyncio.to_thread(_metrics_endpoints)
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        replies = await asyncio.gather(
            *(client.get(url) for url in endpoints), return_exceptions=True
        )
    return "\n".join(r.text for r in replies if isinstance(r, httpx.Response) and r.is_success)
