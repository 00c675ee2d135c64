"""Scaling on calls: an application-level Serve autoscaling policy.

A call's load sits between its requests too (the lead is talking), so the request-queue
policy sees a ramp of calls only once their turns queue up, when latency already suffers.
The ingress reports the active calls and, from the profile's `capacity` settings, the
replicas each model deployment needs for them (`SalesIngress.record_autoscaling_stats`);
this policy asks Serve for that many, with Serve's request-queue policy as the floor. The
delays, factors and min/max bounds stay Serve's, from each deployment's autoscaling_config.

Set in a Serve config under the application:
    autoscaling_policy: {policy_function: deployments.autoscaling:scale_on_calls}
"""

from __future__ import annotations

from collections.abc import Iterable

from ray.serve._private.common import DeploymentID
from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy
from ray.serve.config import AutoscalingContext

ACTIVE_CALLS = "active_calls"
WANTED = "wanted_replicas."  # + a deployment's name


def scale_on_calls(
    contexts: dict[DeploymentID, AutoscalingContext],
) -> tuple[dict[DeploymentID, float], dict]:
    """{deployment id: replicas}: the most of what the calls need and what the queue needs."""
    reported = _reported(contexts.values())
    decisions = {}
    for deployment, ctx in contexts.items():
        floor, _ = replica_queue_length_autoscaling_policy(ctx)
        decisions[deployment] = max(floor, reported.get(WANTED + ctx.deployment_name, 0))
    return decisions, {}


def _reported(contexts: Iterable[AutoscalingContext]) -> dict[str, float]:
    """The ingress replicas' figures over Serve's look-back window. Every replica reads the
    same count from Redis, so the most any of them saw stands (a replica that just started
    reports nothing yet)."""
    figures: dict[str, float] = {}
    for ctx in contexts:
        for name, per_replica in (ctx.aggregated_metrics or {}).items():
            if (name == ACTIVE_CALLS or name.startswith(WANTED)) and per_replica:
                figures[name] = max(figures.get(name, 0.0), *per_replica.values())
    return figures

