"""Speech helpers for tests: word error rate, and WAV clips spoken by the project's TTS."""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import soxr

from salesagent.voice.audio import read_wav
from salesagent.voice.tts import HibariTTS, TTSSettings


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by edit distance."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / max(len(ref), 1)


@cache
def _voice() -> HibariTTS:
    return HibariTTS(TTSSettings())


def spoken_wav(text: str) -> bytes:
    """`text` spoken by the Hibari voice, as WAV bytes (24 kHz PCM16 mono)."""
    return _voice().synthesize(text).to_wav()


def speech(text: str, rate: int = 16000) -> tuple[str, np.ndarray]:
    """(`text`, its clip as float32 samples at `rate`), for the streaming clients."""
    samples, source_rate = read_wav(spoken_wav(text))
    return text, soxr.resample(samples, source_rate, rate).astype(np.float32)
