"""STT deployment: owns one speech-to-text engine (faster-whisper)."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from deployments.telemetry import RayMetrics
from salesagent.platform.metrics import timed
from salesagent.voice.stt import SpeechToText, STTSettings, Transcript, WhisperSTT


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class STTDeployment:
    def __init__(self, settings: STTSettings, engine: SpeechToText | None = None):
        # `engine` lets a test inject a faulty engine; production loads Whisper from settings.
        self._engine = engine or WhisperSTT(settings)
        self._metrics = RayMetrics()
        # CTranslate2 uses its own threads; one transcription at a time per replica keeps
        # latency predictable, and Serve queues (or autoscales) the rest.
        self._busy = asyncio.Lock()

    async def transcribe(self, samples: np.ndarray) -> Transcript:
        async with self._busy:
            with timed(self._metrics, "stt"):
                transcript = await asyncio.to_thread(self._engine.transcribe, samples)
        self._metrics.inc("salesagent_stt_audio_seconds_total", transcript.audio_seconds)
        return transcript

    async def ready(self) -> str:
        caps = self._engine.capabilities
        return f"{caps.engine} on {caps.device}"
