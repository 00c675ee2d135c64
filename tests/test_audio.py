"""decode_audio on real speech in every accepted format, and on inputs it must refuse."""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import pytest
import soundfile

from salesagent.voice import audio
from salesagent.voice.audio import (
    SAMPLE_RATE,
    AudioEmpty,
    AudioError,
    AudioTooLarge,
    AudioTooLong,
    AudioUnreadable,
    decode_audio,
    encode_wav,
)
from salesagent.voice.tts import HibariTTS, TTSSettings

LIMITS = {"max_bytes": 20 << 20, "max_seconds": 60.0}
TOLERANCE_S = 0.1


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    """About 2.5 s of real speech (Hibari, 24 kHz), so codecs see what users send."""
    tts = HibariTTS(TTSSettings(engine="hibari"))
    result = tts.synthesize("Hello, I would like to know more about the course.")
    return result.samples, result.sample_rate


def resample(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=new_rate)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame) + resampler.resample(None)]
    return np.concatenate(out)


def channels(samples: np.ndarray, count: int) -> np.ndarray:
    """(count, n): the right channel a quieter copy, as from a real stereo microphone."""
    return np.stack([samples, 0.6 * samples][:count])


def wav_file(data: np.ndarray, rate: int, subtype: str) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, data.T, rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


def codec_file(
    data: np.ndarray, rate: int, container: str, codec: str, options: dict | None = None
) -> bytes:
    """Encode with PyAV the way a browser or phone app would produce the file."""
    layout = "mono" if data.shape[0] == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container, options=options or {}) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout=layout)
        frame.sample_rate = rate
        resampler = av.AudioResampler(
            format=stream.format.name,
            layout=layout,
            rate=rate,
            frame_size=stream.frame_size or None,
        )
        for chunk in resampler.resample(frame) + resampler.resample(None):
            out.mux(stream.encode(chunk))
        out.mux(stream.encode(None))
    return buffer.getvalue()


# (id, sample rate, channels, encoder)
FORMATS = [
    ("wav-u8-8k-mono", 8000, 1, lambda d, r: wav_file(d, r, "PCM_U8")),
    ("wav-ulaw-8k-mono", 8000, 1, lambda d, r: wav_file(d, r, "ULAW")),
    ("wav-s16-16k-mono", 16000, 1, lambda d, r: wav_file(d, r, "PCM_16")),
    ("wav-s16-44k-stereo", 44100, 2, lambda d, r: wav_file(d, r, "PCM_16")),
    ("wav-s24-48k-stereo", 48000, 2, lambda d, r: wav_file(d, r, "PCM_24")),
    ("wav-s32-44k-mono", 44100, 1, lambda d, r: wav_file(d, r, "PCM_32")),
    ("wav-f32-48k-mono", 48000, 1, lambda d, r: wav_file(d, r, "FLOAT")),
    ("wav-f32-8k-stereo", 8000, 2, lambda d, r: wav_file(d, r, "FLOAT")),
    ("mp3-44k-stereo", 44100, 2, lambda d, r: codec_file(d, r, "mp3", "libmp3lame")),
    ("mp3-16k-mono", 16000, 1, lambda d, r: codec_file(d, r, "mp3", "libmp3lame")),
    ("ogg-opus-48k-mono", 48000, 1, lambda d, r: codec_file(d, r, "ogg", "libopus")),
    ("webm-opus-48k-stereo", 48000, 2, lambda d, r: codec_file(d, r, "webm", "libopus")),
    ("webm-opus-48k-mono", 48000, 1, lambda d, r: codec_file(d, r, "webm", "libopus")),
    # As MediaRecorder streams it: no duration, no cues.
    (
        "webm-live-opus-48k-mono",
        48000,
        1,
        lambda d, r: codec_file(d, r, "webm", "libopus", {"live": "1"}),
    ),
    ("flac-44k-mono", 44100, 1, lambda d, r: codec_file(d, r, "flac", "flac")),
    ("m4a-aac-44k-mono", 44100, 1, lambda d, r: codec_file(d, r, "mp4", "aac")),
]


@pytest.mark.parametrize(
    ("rate", "count", "encode"), [f[1:] for f in FORMATS], ids=[f[0] for f in FORMATS]
)
def test_decodes_every_format_to_16k_mono(speech, rate, count, encode):
    samples, source_rate = speech
    data = encode(channels(resample(samples, source_rate, rate), count), rate)

    decoded = decode_audio(data, **LIMITS)

    assert decoded.samples.dtype == np.float32
    assert decoded.samples.ndim == 1
    assert decoded.duration_s == pytest.approx(len(samples) / source_rate, abs=TOLERANCE_S)
    assert np.abs(decoded.samples).max() <= 1.0
    assert np.sqrt(np.mean(decoded.samples**2)) > 0.01  # speech survived, not silence


def test_mp3_that_changes_rate_and_layout_midstream(speech):
    """Two MP3 files glued together, as some recorders and phone systems produce."""
    samples, rate = speech
    first = codec_file(channels(resample(samples, rate, 44100), 1), 44100, "mp3", "libmp3lame")
    second = codec_file(channels(resample(samples, rate, 16000), 2), 16000, "mp3", "libmp3lame")
    decoded = decode_audio(first + second, **LIMITS)
    # Each file adds its own encoder delay and padding (~50 ms).
    assert decoded.duration_s == pytest.approx(2 * len(samples) / rate, abs=0.2)


def test_accepts_bytearray_and_memoryview(speech):
    data = encode_wav(*speech)
    assert decode_audio(bytearray(data), **LIMITS).duration_s > 2
    assert decode_audio(memoryview(data), **LIMITS).duration_s > 2


def test_truncated_upload_keeps_the_audio_before_the_cut(speech):
    data = encode_wav(*speech)
    decoded = decode_audio(data[: len(data) // 2], **LIMITS)
    assert decoded.duration_s == pytest.approx(len(speech[0]) / speech[1] / 2, abs=TOLERANCE_S)


def png_image() -> bytes:
    context = av.CodecContext.create("png", "w")
    context.width, context.height, context.pix_fmt = 8, 8, "rgb24"
    frame = av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24")
    return b"".join(bytes(packet) for packet in context.encode(frame))


def video_without_audio() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuvj420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        out.mux(stream.encode(frame.reformat(format="yuvj420p")))
        out.mux(stream.encode(None))
    return buffer.getvalue()


HLS_PLAYLIST = (
    b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
)

BAD_INPUTS = [
    ("empty", lambda: b"", AudioEmpty, "empty"),
    ("random-bytes", lambda: np.random.default_rng(0).bytes(4096), AudioUnreadable, "not a WAV"),
    ("json", lambda: b'{"message": "hello", "audio": null}' * 20, AudioUnreadable, "not a WAV"),
    ("text", lambda: b"hello world\n" * 100, AudioUnreadable, "not a WAV"),
    ("png", png_image, AudioUnreadable, "not a WAV"),
    # A playlist would make FFmpeg open the files it names: refused before its header is read.
    ("hls-playlist", lambda: HLS_PLAYLIST, AudioUnreadable, "not a WAV"),
    ("video-only", video_without_audio, AudioUnreadable, "no audio stream"),
    (
        "truncated-wav-header",
        lambda: encode_wav(np.zeros(1600, np.float32), 16000)[:30],
        AudioUnreadable,
        "damaged",
    ),
    (
        "zero-length-wav",
        lambda: encode_wav(np.zeros(0, np.float32), 16000),
        AudioEmpty,
        "no samples",
    ),
]


@pytest.mark.parametrize(
    ("make", "error", "words"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
def test_refuses_bad_input_with_a_clear_message(make, error, words, capfd):
    with pytest.raises(error, match=words) as raised:
        decode_audio(make(), **LIMITS)
    assert isinstance(raised.value, AudioError)
    # FFmpeg stays quiet: one bad upload must not print to the server's log.
    assert capfd.readouterr().err == ""


def test_too_large_is_checked_before_decoding():
    with pytest.raises(AudioTooLarge, match=r"1\.0 MiB; the limit is 512\.0 KiB"):
        decode_audio(b"\0" * (1 << 20), max_bytes=512 << 10, max_seconds=60)


def test_too_long_says_how_long(speech):
    data = encode_wav(np.zeros(30 * 8000, np.float32), 8000)
    with pytest.raises(AudioTooLong, match=r"30\.0 s long; the limit is 10 s"):
        decode_audio(data, max_bytes=LIMITS["max_bytes"], max_seconds=10)


def test_too_long_without_declared_duration(speech):
    """A MediaRecorder WebM declares no duration; the limit still holds."""
    samples, rate = speech
    mono = channels(resample(samples, rate, 48000), 1)
    # live=1: written as a stream, like MediaRecorder's output (no duration, no cues).
    data = codec_file(mono, 48000, "webm", "libopus", {"live": "1"})
    with av.open(io.BytesIO(data)) as check:
        assert check.duration is None
    with pytest.raises(AudioTooLong, match=r"the 1 s limit"):
        decode_audio(data, max_bytes=LIMITS["max_bytes"], max_seconds=1)


def test_long_file_is_not_decoded_past_the_limit(monkeypatch):
    """A ten-minute upload costs only `max_seconds` of decoding."""
    fed: list[int] = []
    real_resampler = av.AudioResampler

    class CountingResampler:
        def __init__(self, **kwargs):
            self._inner = real_resampler(**kwargs)

        def resample(self, frame):
            if frame is not None:
                fed.append(frame.samples)
            return self._inner.resample(frame)

    monkeypatch.setattr(audio.av, "AudioResampler", CountingResampler)
    data = encode_wav(np.zeros(600 * 8000, np.float32), 8000)
    with pytest.raises(AudioTooLong, match=r"600\.0 s long"):
        decode_audio(data, max_bytes=len(data), max_seconds=5)
    assert sum(fed) / 8000 <= 5


def test_encode_wav_writes_pcm16_mono():
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(24000) / 24000)
    data = encode_wav(tone, 24000)
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 24000)
        assert wav.getnframes() == 24000
        pcm = np.frombuffer(wav.readframes(24000), "<i2")
    assert abs(int(pcm.max()) - 16384) <= 1


def test_encode_wav_clips_and_rejects_stereo():
    data = encode_wav(np.array([2.0, -2.0, np.nan], np.float32), 16000)
    assert np.frombuffer(data[44:], "<i2").tolist() == [32767, -32767, 0]
    with pytest.raises(ValueError, match="mono"):
        encode_wav(np.zeros((2, 10), np.float32), 16000)


def test_encode_then_decode_round_trip(speech):
    samples, rate = speech
    decoded = decode_audio(encode_wav(samples, rate), **LIMITS)
    assert decoded.source_format == "wav"
    assert decoded.duration_s == pytest.approx(len(samples) / rate, abs=0.01)
    expected = resample(samples, rate, SAMPLE_RATE)
    n = min(len(expected), len(decoded.samples))
    assert np.corrcoef(expected[:n], decoded.samples[:n])[0, 1] > 0.99
