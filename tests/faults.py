"""Engines that fail on purpose, injected into real deployments to test fault handling."""

from __future__ import annotations

import numpy as np

from salesagent.stt import STTCapabilities, Transcript
from salesagent.tts import Speech


class BrokenSTT:
    capabilities = STTCapabilities(engine="broken", model="none", device="cpu", languages=())

    def transcribe(self, samples16k: np.ndarray) -> Transcript:
        raise RuntimeError("decoder exploded")


class BrokenTTS:
    sample_rate = 24000

    def synthesize(self, text: str) -> Speech:
        raise RuntimeError("voice unavailable")
