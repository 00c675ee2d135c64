"""Engines that fail or stall on purpose, injected into real deployments to test fault
handling."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import numpy as np

from salesagent.platform.engine import Delta
from salesagent.voice.stt import STTCapabilities, Transcript
from salesagent.voice.tts import Speech


class BrokenSTT:
    capabilities = STTCapabilities(engine="broken", model="none", device="cpu", languages=())

    def transcribe(self, samples16k: np.ndarray) -> Transcript:
        raise RuntimeError("decoder exploded")


class BrokenTTS:
    sample_rate = 24000

    def synthesize(self, text: str) -> Speech:
        raise RuntimeError("voice unavailable")


class ScriptedEngine:
    """A chat engine with fixed behaviour, for tests about the machinery around the model
    (Redis, replicas, concurrency): every label is its first choice ("continue", no fact,
    no objection), so calls never end on their own, and each reply names the turn it
    answers ("This is turn 7." -> "Got turn 7."), so misplaced entries show. A line that
    says "slowly" takes `slow_s` seconds, long enough to kill a replica in the middle;
    `stall_flag` (a file) is touched when such a stall begins, so a test knows when. A line
    that says "cancelled" ends its reply cancelled after a word, as a request aborted under
    the replica does."""

    def __init__(self, slow_s: float = 6.0, stall_flag: str | None = None):
        self.slow_s, self.stall_flag = slow_s, stall_flag

    async def stream_chat(self, messages, max_tokens=None):
        line = messages[-1]["content"]
        if "slowly" in line:
            _stalling(self.stall_flag)
            for _ in range(int(self.slow_s * 10)):
                await asyncio.sleep(0.1)
        turn = re.search(r"turn \d+", line)
        for word in f"Got {turn.group(0) if turn else 'it'}.".split(" "):
            yield Delta(f"{word} ", 1)
            if "cancelled" in line:
                raise asyncio.CancelledError()

    async def choose(self, messages, choices):
        return choices[0]

    async def check_health(self) -> None:
        return None

    def describe(self) -> str:
        return "scripted"

    def shutdown(self) -> None:
        return None


class SlowSTT:
    """Hears a fixed line after `delay_s` seconds (a kill lands in the middle)."""

    capabilities = STTCapabilities(engine="slow", model="none", device="cpu", languages=("en",))

    def __init__(
        self, text: str = "This is turn 99.", delay_s: float = 6.0, stall_flag: str | None = None
    ):
        self.text, self.delay_s, self.stall_flag = text, delay_s, stall_flag

    def transcribe(self, samples16k: np.ndarray) -> Transcript:
        _stalling(self.stall_flag)
        time.sleep(self.delay_s)
        return Transcript(self.text, "en", len(samples16k) / 16000, self.delay_s)


class SlowTTS:
    """Speaks silence after `delay_s` seconds."""

    sample_rate = 24000

    def __init__(self, delay_s: float = 6.0, stall_flag: str | None = None):
        self.delay_s, self.stall_flag = delay_s, stall_flag

    def synthesize(self, text: str) -> Speech:
        _stalling(self.stall_flag)
        time.sleep(self.delay_s)
        return Speech(np.zeros(2400, dtype=np.float32), self.sample_rate, self.delay_s)


def _stalling(flag: str | None) -> None:
    if flag:
        Path(flag).touch()
