"""Metric definitions, reading scraped metrics, and the health rules."""

import re

import pytest

from salesagent.platform.health import HealthRules, assess, overall
from salesagent.platform.metrics import (
    DEFINITIONS,
    Kind,
    StageStats,
    histogram_quantile,
    only_own_metrics,
    parse_prometheus,
    stage_stats,
    timed,
)


def test_names_follow_prometheus_conventions():
    for name, definition in DEFINITIONS.items():
        assert re.fullmatch(r"salesagent_[a-z0-9_]+", name)
        assert name.endswith("_total") == (definition.kind is Kind.COUNTER)
        if definition.kind is Kind.HISTOGRAM:
            assert name.endswith("_seconds")
        assert not {"call_id", "phone_number", "customer_name"} & set(definition.labels)


SCRAPE = """
# HELP ray_salesagent_stage_duration_seconds Time per stage
# TYPE ray_salesagent_stage_duration_seconds histogram
ray_salesagent_stage_duration_seconds_bucket{replica="a",stage="tts",le="0.1"} 1
ray_salesagent_stage_duration_seconds_bucket{replica="a",stage="tts",le="1.0"} 3
ray_salesagent_stage_duration_seconds_bucket{replica="a",stage="tts",le="+Inf"} 4
ray_salesagent_stage_duration_seconds_count{replica="a",stage="tts"} 4
ray_salesagent_stage_duration_seconds_bucket{replica="b",stage="tts",le="0.1"} 0
ray_salesagent_stage_duration_seconds_bucket{replica="b",stage="tts",le="1.0"} 5
ray_salesagent_stage_duration_seconds_bucket{replica="b",stage="tts",le="+Inf"} 6
ray_salesagent_stage_duration_seconds_count{replica="b",stage="tts"} 6
ray_salesagent_errors_total{replica="b",stage="tts",kind="RuntimeError"} 2
ray_serve_num_http_requests_total{route="/"} 9
"""


def test_parse_sums_replicas_and_keeps_only_own_metrics():
    samples = parse_prometheus(SCRAPE)
    count = ("salesagent_stage_duration_seconds_count", (("stage", "tts"),))
    assert samples[count] == 10  # replicas a and b together
    assert not any("serve_num_http" in name for name, _ in samples)
    assert "ray_serve" not in only_own_metrics(SCRAPE)
    assert "# TYPE ray_salesagent_stage_duration_seconds histogram" in only_own_metrics(SCRAPE)


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = {0.1: 1, 1.0: 8, float("inf"): 10}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.9 * (5 - 1) / 7)
    assert histogram_quantile(0.95, buckets) == 1.0  # in the +Inf bucket: the last bound
    assert histogram_quantile(0.95, {}) is None


def test_stage_stats_over_a_window():
    now = parse_prometheus(SCRAPE)
    stats = stage_stats(now, {}, "tts")
    assert stats.requests == 10 and stats.errors == 2 and stats.error_rate == 0.2
    assert 0.1 < stats.p95_s <= 1.0 or stats.p95_s == 1.0
    assert stage_stats(now, now, "tts").requests == 0  # nothing new since the last snapshot


def test_timed_counts_errors_of_its_stage():
    seen = []

    class Recorder:
        def observe(self, name, value, **labels):
            seen.append(("observe", name, labels))

        def inc(self, name, value=1.0, **labels):
            seen.append(("inc", name, labels))

    with pytest.raises(ValueError), timed(Recorder(), "stt"):
        raise ValueError("bad")
    assert ("inc", "salesagent_errors_total", {"stage": "stt", "kind": "ValueError"}) in seen
    assert ("observe", "salesagent_stage_duration_seconds", {"stage": "stt"}) in seen


RULES = HealthRules(max_error_rate=0.2, min_requests=5)


def test_health_rules():
    quiet = StageStats(0, 0, None)
    assert assess(True, "ready", quiet, RULES, (1, 1)).status == "ok"
    assert assess(False, "not ready", quiet, RULES, (0, 1)).status == "critical_issue"
    assert assess(True, "ready", quiet, RULES, (1, 2)).status == "degraded"
    failing = StageStats(requests=10, errors=5, p95_s=0.3)
    assert assess(True, "ready", failing, RULES).status == "degraded"
    few = StageStats(requests=2, errors=2, p95_s=0.3)
    assert assess(True, "ready", few, RULES).status == "ok"  # too few requests to judge
    services = {"a": assess(True, "", quiet, RULES), "b": assess(False, "", quiet, RULES)}
    assert overall(services) == "issues_present"
    assert overall({"a": services["a"]}) == "ok"


def test_dashboard_queries_only_metrics_that_exist():
    import json
    from pathlib import Path

    dashboard = json.loads(
        (Path(__file__).parent.parent / "cluster" / "grafana-dashboard.json").read_text()
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"ray_(salesagent_[a-z_]+)", e)}
    exported = set()
    for name, definition in DEFINITIONS.items():
        exported.add(name)
        if definition.kind is Kind.HISTOGRAM:
            exported |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    assert used and used <= exported
    # The waterfall, throughput, errors and replicas panels are all there.
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for word in ("waterfall", "throughput", "errors", "replicas"):
        assert word in titles
