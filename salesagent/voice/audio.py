"""Audio in and out: one decoder for every entry point, and the WAV writer for TTS output.

`decode_audio` turns an upload (WAV of any PCM/float layout and rate, MP3, OGG/Opus, WebM/Opus
from a browser's MediaRecorder, also FLAC and MP4/AAC from Safari) into 16 kHz mono float32,
which is what Whisper takes. PyAV (FFmpeg, bundled with faster-whisper) does the demuxing,
decoding and resampling. Failures are `AudioError` subclasses whose message can be shown to
the caller as is; the HTTP layer maps `AudioTooLarge` to 413 and the others to 400.

PyAV discards FFmpeg's log by default (`av.logging` level None), so a bad upload writes
nothing to stderr; the messages here are our own words, not FFmpeg's.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import av
import numpy as np

SAMPLE_RATE = 16_000

# Demuxers FFmpeg may pick after probing. Anything else (HLS or concat playlists that would
# open other URLs or files, images, subtitles, hundreds of exotic formats) is refused before
# its header is parsed. "matroska" covers WebM; "mov" covers MP4/M4A.
ALLOWED_CONTAINERS = "wav,mp3,ogg,matroska,flac,mov"


class AudioError(ValueError):
    """An upload that cannot be used; `str(error)` is a message for the caller."""


class AudioEmpty(AudioError):
    """No bytes, or a valid file with no samples."""


class AudioUnreadable(AudioError):
    """Not audio, corrupt, or a format we do not accept."""


class AudioTooLong(AudioError):
    """More audio than `max_seconds`."""


class AudioTooLarge(AudioError):
    """More bytes than `max_bytes`."""


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE Hz, in [-1, 1]
    source_format: str  # FFmpeg's demuxer name, e.g. "wav" or "matroska,webm"

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode_audio(data: bytes, *, max_bytes: int, max_seconds: float) -> DecodedAudio:
    """Decode an uploaded audio file to 16 kHz mono float32.

    Decoding stops as soon as more than `max_seconds` have been read, so a two-hour file
    costs no more than the limit. Packets that fail to decode are skipped; if the stream
    breaks off after some audio (a truncated upload), the audio before the break is kept.
    """
    size = len(data)
    if size > max_bytes:
        raise AudioTooLarge(
            f"audio is {_human_bytes(size)}; the limit is {_human_bytes(max_bytes)}"
        )
    if size == 0:
        raise AudioEmpty("audio is empty (0 bytes)")
    try:
        container = av.open(
            io.BytesIO(data),
            mode="r",
            options={"format_whitelist": ALLOWED_CONTAINERS},
            metadata_errors="ignore",
        )
    except (av.FFmpegError, ValueError) as error:
        raise AudioUnreadable(
            "audio could not be read: it is not a WAV, MP3, OGG, WebM, FLAC or MP4 audio file, "
            "or it is damaged"
        ) from error
    with container:
        if not container.streams.audio:
            raise AudioUnreadable("the file contains no audio stream")
        return DecodedAudio(
            samples=_decode_stream(container, max_seconds),
            source_format=container.format.name,
        )


def _decode_stream(container: av.container.InputContainer, max_seconds: float) -> np.ndarray:
    stream = container.streams.audio[0]
    chunks: list[np.ndarray] = []
    resampler: av.AudioResampler | None = None
    input_layout: tuple | None = None
    seconds_read = 0.0
    decode_errors = 0

    def resample(frame: av.AudioFrame | None) -> None:
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray().reshape(-1))

    try:
        for packet in container.demux(stream):
            try:
                frames = stream.decode(packet)
            except av.error.InvalidDataError:
                decode_errors += 1
                continue
            for frame in frames:
                seconds_read += frame.samples / frame.sample_rate
                if seconds_read > max_seconds:
                    raise AudioTooLong(_too_long_message(container, max_seconds))
                # An MP3 (concatenated files, say) may change rate or layout mid-stream; a
                # resampler only takes the input it was made for, so flush it and start anew.
                layout = (frame.format.name, frame.layout.name, frame.sample_rate)
                if layout != input_layout:
                    if resampler is not None:
                        resample(None)
                    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
                    input_layout = layout
                resample(frame)
    except av.FFmpegError:
        if not seconds_read:
            raise AudioUnreadable("audio could not be decoded: the file is damaged") from None
    if resampler is not None:
        resample(None)
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        if decode_errors:
            raise AudioUnreadable("audio could not be decoded: the file is damaged")
        raise AudioEmpty("audio contains no samples")
    # Down-mixing stereo adds the channels at -3 dB each, so loud in-phase audio can pass 1.0.
    return np.clip(samples, -1.0, 1.0, out=samples)


def _too_long_message(container: av.container.InputContainer, max_seconds: float) -> str:
    declared = container.duration / av.time_base if container.duration else None
    if declared and declared > max_seconds:
        return f"audio is {declared:.1f} s long; the limit is {max_seconds:g} s"
    return f"audio is longer than the {max_seconds:g} s limit"


def _human_bytes(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} bytes"


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """Float samples in [-1, 1] (mono) to a 16-bit PCM mono WAV file; louder samples are clipped."""
    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {audio.shape}")
    pcm = np.round(np.clip(np.nan_to_num(audio), -1.0, 1.0) * 32767.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """The samples (float32 mono) and rate of a 16-bit PCM mono WAV, as `encode_wav` writes."""
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise AudioUnreadable("expected a 16-bit mono WAV")
        frames = w.readframes(w.getnframes())
        return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0, w.getframerate()
