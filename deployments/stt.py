"""STT deployment: owns one speech-to-text engine (faster-whisper)."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from salesagent.stt import SpeechToText, STTSettings, Transcript, WhisperSTT


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class STTDeployment:
    def __init__(self, settings: STTSettings, engine: SpeechToText | None = None):
        # `engine` lets a test inject a faulty engine; production loads Whisper from settings.
        self._engine = engine or WhisperSTT(settings)
        # CTranslate2 uses its own threads; one transcription at a time per replica keeps
        # latency predictable, and Serve queues (or autoscales) the rest.
        self._busy = asyncio.Lock()

    async def transcribe(self, samples: np.ndarray) -> Transcript:
        async with self._busy:
            return await asyncio.to_thread(self._engine.transcribe, samples)

    async def ready(self) -> str:
        return "ready"
