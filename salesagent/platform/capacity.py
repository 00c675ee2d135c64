"""Call admission: the fleet takes a new call only while it can hold it within the bound.

A call's load is not only its requests: between them the lead is talking, and the call
comes back. So the service counts calls, not requests. The calls one LLM replica holds
within the latency bound are measured by `benchmarks/sweep.sh` and set per profile
(`capacity.calls_per_llm_replica` in the Serve config); the fleet holds that many per LLM
replica running now. A call already admitted is never refused a turn for capacity.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field


class CapacitySettings(BaseModel):
    # Calls one LLM replica holds within the bound; 0 admits every call (no control).
    calls_per_llm_replica: int = Field(default=0, ge=0)
    # What a refused dialer is told to wait before it tries again.
    retry_after_s: int = Field(default=15, ge=1)
    # The autoscaling policy's share of a replica for the other deployments: calls per
    # STT and TTS replica (each turn's STT and TTS are short next to its LLM work); 0 leaves
    # a deployment to Serve's request-queue policy alone.
    calls_per_stt_replica: int = Field(default=0, ge=0)
    calls_per_tts_replica: int = Field(default=0, ge=0)
    # The autoscaler adds a replica once the calls pass this share of the running ones'
    # capacity: the new replica loads while admission still has room, so a ramp of calls
    # is not refused while the fleet could grow.
    scale_at: float = Field(default=0.75, gt=0, le=1)

    def calls_per_replica(self) -> dict[str, int]:
        """Calls one replica of each model deployment holds (those with a figure)."""
        figures = {
            "LLMDeployment": self.calls_per_llm_replica,
            "STTDeployment": self.calls_per_stt_replica,
            "TTSDeployment": self.calls_per_tts_replica,
        }
        return {name: calls for name, calls in figures.items() if calls}


class CapacityReport(BaseModel):
    """In /health: the calls the running replicas hold, the active ones and the room left
    (None when admission control is off)."""

    capacity: int | None
    active_calls: int
    headroom: int | None
    llm_replicas: int


class AtCapacity(Exception):
    """Every call the fleet can hold is taken: 503 with Retry-After; nothing is stored."""

    def __init__(self, capacity: int, active: int):
        super().__init__(
            f"The service is at capacity: {active} of the {capacity} calls it holds within "
            "its latency bound are active; retry later"
        )
        self.capacity, self.active = capacity, active


def fleet_capacity(settings: CapacitySettings, llm_replicas: int | None) -> int | None:
    """Calls the running LLM replicas hold, or None when admission control is off. Replicas
    not known (the controller never answered) count as one: the LLM's own probe says when
    it is down."""
    if not settings.calls_per_llm_replica:
        return None
    return settings.calls_per_llm_replica * (1 if llm_replicas is None else llm_replicas)


def report(settings: CapacitySettings, llm_replicas: int | None, active: int) -> CapacityReport:
    capacity = fleet_capacity(settings, llm_replicas)
    return CapacityReport(
        capacity=capacity,
        active_calls=active,
        headroom=None if capacity is None else max(0, capacity - active),
        llm_replicas=1 if llm_replicas is None else llm_replicas,
    )


def replicas_for(active_calls: int, calls_per_replica: int, scale_at: float = 1.0) -> int:
    """Replicas that hold `active_calls` with each at most `scale_at` of its
    `calls_per_replica` (at least one)."""
    if calls_per_replica <= 0:
        return 1
    return max(1, math.ceil(active_calls / (calls_per_replica * scale_at) - 1e-9))


def wanted_replicas(settings: CapacitySettings, active_calls: int) -> dict[str, int]:
    """The replicas each model deployment needs for the active calls, by deployment name:
    what the call-aware autoscaling policy asks Serve for (deployments/autoscaling.py)."""
    return {
        name: replicas_for(active_calls, calls, settings.scale_at)
        for name, calls in settings.calls_per_replica().items()
    }
