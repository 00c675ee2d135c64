"""LLM deployment: owns one chat engine (vLLM) and streams replies through its handle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from time import perf_counter

import ray
from ray import serve

from deployments.telemetry import RayMetrics
from salesagent.platform.engine import ChatEngine, Message, SampleTurn, VLLMChatEngine, warm_up
from salesagent.platform.fit import check_llm_share
from salesagent.platform.metrics import timed
from salesagent.platform.settings import LLMSettings

logger = logging.getLogger("ray.serve")  # Serve writes it to the replica's log


def _cuda_memory_gib() -> float | None:
    """The GPU's memory, where CUDA is there to ask (not on the CPU build)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**30


@serve.deployment(
    ray_actor_options={"num_cpus": 1},
    # A replica takes 15-40 s to load the model; Serve must not give up on it.
    health_check_period_s=10,
    health_check_timeout_s=30,
    graceful_shutdown_timeout_s=20,
    max_ongoing_requests=32,
)
class LLMDeployment:
    async def __init__(
        self,
        settings: LLMSettings,
        engine: ChatEngine | None = None,
        sample_turn: SampleTurn | None = None,
    ):
        # `engine` lets a test inject a faulty engine; production builds vLLM from settings,
        # once the replica's GPU share is known to hold it (DoesNotFit says what to change).
        # With `sample_turn`, the engine is warmed up before the replica takes requests.
        if engine is None:
            check_llm_share(
                settings.model,
                settings.dtype,
                settings.gpu_memory_utilization,
                ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0),
                settings.gpu_memory_gib or _cuda_memory_gib(),
            )
        self._engine = engine or VLLMChatEngine(settings)
        self._metrics = RayMetrics()
        if sample_turn is not None and settings.warm_up_calls:
            started = perf_counter()
            await warm_up(self._engine, sample_turn, settings.warm_up_calls)
            logger.info("engine warmed up in %.1f s", perf_counter() - started)

    async def stream(
        self, messages: list[Message], max_tokens: int | None = None
    ) -> AsyncIterator[str]:
        """The reply, token by token. Times the first token and the whole stream, also when
        the caller stops early (which aborts the generation)."""
        started = perf_counter()
        first_token_at = None
        tokens = 0
        try:
            with timed(self._metrics, "llm_total"):
                async for delta in self._engine.stream_chat(messages, max_tokens):
                    tokens += delta.tokens
                    if first_token_at is None:
                        first_token_at = perf_counter()
                        self._metrics.observe(
                            "salesagent_stage_duration_seconds",
                            first_token_at - started,
                            stage="llm_first_token",
                        )
                    if delta.text:
                        yield delta.text
        finally:
            self._metrics.inc("salesagent_llm_tokens_generated_total", tokens)

    async def choose(self, messages: list[Message], choices: list[str]) -> str:
        return await self._engine.choose(messages, choices)

    async def ready(self) -> str:
        """Answers only when the engine is up: the ingress uses it for /health and for 503s."""
        await self._engine.check_health()
        return self._engine.describe()

    async def check_health(self) -> None:
        # Serve calls this periodically; a dead engine makes Serve replace the replica.
        await self._engine.check_health()

    def __del__(self) -> None:
        # Serve calls this when the replica stops: vLLM's engine core and worker processes
        # would otherwise outlive it (several GB of memory each).
        if engine := getattr(self, "_engine", None):  # None if __init__ failed
            engine.shutdown()
