"""Clients of the model deployments, over their Serve handles, as the service expects them.

Every call has a timeout, and every failure surfaces as the service's own exception:
a replica that is missing, dead or slow means "unavailable" (503), while an error the
STT engine raised (a `RayTaskError`) means that transcription itself failed (500).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress

import numpy as np
from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from salesagent.platform.engine import Message
from salesagent.sales.service import LLMUnavailable, STTFailed, STTUnavailable, TTSFailed
from salesagent.voice.stt import Transcript


class _DeploymentClient:
    """Timeouts and error mapping shared by the clients; subclasses name their error."""

    def __init__(self, handle: DeploymentHandle, timeout_s: float, ready_timeout_s: float):
        self._handle = handle
        self._timeout_s = timeout_s
        self._ready_timeout_s = ready_timeout_s

    def _error(self, exc: Exception) -> Exception:
        raise NotImplementedError

    async def _call(self, method: str, *args, timeout_s: float | None = None):
        response: DeploymentResponse | None = None
        try:
            # `.remote()` itself raises for a deployment that failed to deploy.
            response = getattr(self._handle, method).remote(*args)
            # `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` swallows the task's
            # cancellation when the answer lands at the same moment, and a streamed reply
            # cancelled that way would run on, holding the call's turn lock.
            async with asyncio.timeout(timeout_s or self._timeout_s):
                return await response
        except Exception as exc:  # timeouts, missing or dead replicas, engine errors
            _cancel(response)
            raise self._error(exc) from exc
        except asyncio.CancelledError as exc:
            _cancel(response)
            if _asked_to_stop():
                raise
            raise self._error(exc) from exc

    async def ready(self) -> str:
        """Answers only when a replica is up, within the health bound."""
        return await self._call("ready", timeout_s=self._ready_timeout_s)


def _asked_to_stop() -> bool:
    """Whether a CancelledError is this task's own: Serve also raises a bare one when the
    replica's side of a call was cancelled, and a caller that took that for its own
    cancellation would wait for an answer that never comes. That one is a failure."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _cancel(response) -> None:
    """Cancel a handle call, if it was made; cancelling one that failed re-raises its error."""
    if response is not None:
        with suppress(Exception):
            response.cancel()


def _unavailable(service: str, exc: Exception) -> str:
    reason = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
    return f"{service} service unavailable: {reason}"


class ServeLLMClient(_DeploymentClient):
    def _error(self, exc: Exception) -> Exception:
        return LLMUnavailable(_unavailable("LLM", exc))

    async def stream(
        self, messages: list[Message], max_tokens: int | None = None
    ) -> AsyncIterator[str]:
        responses = None
        try:
            responses = self._handle.options(stream=True).stream.remote(messages, max_tokens)
            while True:
                try:
                    async with asyncio.timeout(self._timeout_s):
                        delta = await anext(responses)
                except StopAsyncIteration:
                    return
                yield delta
        except Exception as exc:
            raise self._error(exc) from exc
        except asyncio.CancelledError as exc:
            if _asked_to_stop():
                raise
            raise self._error(exc) from exc
        finally:
            _cancel(responses)  # stops generation when the caller has enough

    async def choose(self, messages: list[Message], choices: list[str]) -> str:
        return await self._call("choose", messages, choices)


class ServeSTTClient(_DeploymentClient):
    def _error(self, exc: Exception) -> Exception:
        if isinstance(exc, RayTaskError):
            return STTFailed(f"STT failed: {exc.cause!r}"[:300])
        return STTUnavailable(_unavailable("STT", exc))

    async def transcribe(self, samples: np.ndarray) -> Transcript:
        await self.ready()  # tells "unavailable" (503) apart from a slow transcription
        return await self._call("transcribe", samples)


class ServeTTSClient(_DeploymentClient):
    def _error(self, exc: Exception) -> Exception:
        return TTSFailed(f"TTS failed: {type(exc).__name__}")

    async def synthesize(self, text: str) -> bytes:
        return await self._call("synthesize", text)
