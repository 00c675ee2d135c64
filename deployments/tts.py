"""TTS deployment: owns one text-to-speech engine and returns WAV bytes."""

from __future__ import annotations

import asyncio

from ray import serve

from deployments.telemetry import RayMetrics
from salesagent.platform.metrics import timed
from salesagent.voice.tts import TextToSpeech, TTSSettings, make_tts


@serve.deployment(ray_actor_options={"num_cpus": 0.3}, max_ongoing_requests=16)
class TTSDeployment:
    def __init__(self, settings: TTSSettings, engine: TextToSpeech | None = None):
        # `engine` lets a test inject a faulty engine; production builds it from settings.
        self._engine = engine or make_tts(settings)
        self._metrics = RayMetrics()
        self._busy = asyncio.Lock()  # ONNX sessions run one synthesis at a time per replica

    async def synthesize(self, text: str) -> bytes:
        """The text as WAV, PCM 16-bit mono at the engine's rate (24 kHz for Hibari)."""
        async with self._busy:
            with timed(self._metrics, "tts"):
                speech = await asyncio.to_thread(self._engine.synthesize, text)
        self._metrics.inc("salesagent_tts_audio_seconds_total", speech.duration_s)
        return speech.to_wav()

    async def ready(self) -> str:
        return f"{type(self._engine).__name__}, {self._engine.sample_rate} Hz"
