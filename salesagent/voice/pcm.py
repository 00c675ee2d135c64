"""Raw PCM16 for the streaming voice socket: frames in at a declared rate, speech out.

Clients stream 16-bit little-endian mono PCM as they record it; `PcmInput` checks each
frame and resamples it to the 16 kHz the VAD and Whisper take (soxr, streaming, so frame
edges leave no clicks). `pcm16_at` turns TTS output into PCM16 at the rate a client asked
for. Containers (a WAV or MP3 file sent where raw frames belong) are refused by their
magic bytes; anything else is taken as samples, as any PCM is.
"""

from __future__ import annotations

import numpy as np
import soxr

from salesagent.voice.audio import SAMPLE_RATE, AudioError

STREAM_RATES = (8000, 16000, 24000, 48000)

# The first bytes of the containers a client might send by mistake.
_CONTAINER_MAGIC = {
    b"RIFF": "a WAV file",
    b"OggS": "an Ogg file",
    b"ID3": "an MP3 file",
    b"fLaC": "a FLAC file",
    b"\x1aE\xdf\xa3": "a WebM file",
}


class PcmInput:
    """One stream of client frames: PCM16 bytes at `rate` in, float32 16 kHz out."""

    def __init__(self, rate: int, max_frame_ms: int = 1000):
        if rate not in STREAM_RATES:
            raise AudioError(
                f"unsupported sample rate {rate}; use one of {', '.join(map(str, STREAM_RATES))}"
            )
        self.rate = rate
        self._max_bytes = rate * 2 * max_frame_ms // 1000
        self._resampler = (
            None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, "float32")
        )

    def decode(self, frame: bytes) -> np.ndarray:
        """The frame's samples at 16 kHz; AudioError (nothing consumed) if it is not PCM16."""
        if not frame:
            raise AudioError("empty audio frame")
        for magic, what in _CONTAINER_MAGIC.items():
            if frame.startswith(magic):
                raise AudioError(f"got {what}; streaming mode takes raw PCM16 mono frames")
        if len(frame) % 2:
            raise AudioError(f"frame of {len(frame)} bytes: PCM16 frames hold whole samples")
        if len(frame) > self._max_bytes:
            raise AudioError(
                f"frame of {len(frame)} bytes is over {self._max_bytes} (1 s at {self.rate} Hz)"
            )
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0
        if self._resampler is None:
            return samples
        return self._resampler.resample_chunk(samples)


def pcm16(samples: np.ndarray) -> bytes:
    """Float32 mono samples in [-1, 1] as PCM16 little-endian (louder ones are clipped)."""
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def pcm16_at(samples: np.ndarray, from_rate: int, to_rate: int) -> bytes:
    """Float32 mono samples as PCM16 little-endian at `to_rate`."""
    if from_rate != to_rate and len(samples):
        samples = soxr.resample(samples, from_rate, to_rate)
    return pcm16(samples)
