"""Real models, end to end: TTS speaks, the audio goes through decode_audio, Whisper transcribes.

Models load once per module (Hibari ~1 s, Piper ~1 s, Whisper tiny.en ~2 s on 2 cores).
"""

from __future__ import annotations

import io
import sys
import wave

import av
import numpy as np
import pytest

from salesagent.voice.audio import SAMPLE_RATE, decode_audio
from salesagent.voice.stt import STTSettings, WhisperSTT
from salesagent.voice.tts import HibariTTS, PiperTTS, TTSSettings, coqui_files, make_tts
from tests.speech import word_error_rate

LIMITS = {"max_bytes": 20 << 20, "max_seconds": 60.0}

# Plain words: no digits, names or brand words, whose spelling Whisper may legitimately vary.
SCRIPT = (
    "Thank you for taking my call today. Our course teaches practical machine learning "
    "skills, and you can study at your own pace. Would you like to hear about the price?"
)
# Bounds: tiny.en made 0 errors on Hibari and 0-1 on Piper ("prize") over 8 runs each of this
# 30-word script. At most 3 (Hibari) or 6 (Piper) wrong words still pass; garbled audio, a
# wrong sample rate or a truncated clip do not.
MAX_WER = {"hibari": 0.10, "piper": 0.20}


def test_word_error_rate():
    assert word_error_rate("Hello, there world!", "hello there world") == 0
    assert word_error_rate("a b c d", "a x c") == 0.5  # one substitution, one deletion
    assert word_error_rate("a b", "a b c d") == 1.0  # two insertions


@pytest.fixture(scope="module")
def stt() -> WhisperSTT:
    return WhisperSTT(STTSettings(cpu_threads=2))


@pytest.fixture(scope="module")
def engines() -> dict[str, HibariTTS | PiperTTS]:
    return {
        "hibari": make_tts(TTSSettings(engine="hibari")),
        "piper": make_tts(TTSSettings(engine="piper")),
    }


def test_engines_speak_at_their_native_rates(engines):
    assert engines["hibari"].sample_rate == 24000
    assert engines["piper"].sample_rate == 22050
    assert engines["hibari"].capabilities.voice == "heart"
    assert engines["piper"].capabilities.voice == "en_US-joe-medium"


@pytest.mark.parametrize("engine", ["hibari", "piper"])
def test_wav_output_is_pcm16_mono(engines, engine):
    speech = engines[engine].synthesize("Good morning.")
    assert speech.samples.dtype == np.float32
    assert 0.3 < speech.duration_s < 3
    with wave.open(io.BytesIO(speech.to_wav())) as wav:
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        assert wav.getframerate() == engines[engine].sample_rate
        assert wav.getnframes() == len(speech.samples)


@pytest.mark.parametrize("engine", ["hibari", "piper"])
def test_blank_text_gives_empty_speech(engines, engine):
    speech = engines[engine].synthesize("  \n ")
    assert speech.samples.size == 0
    assert speech.sample_rate == engines[engine].sample_rate


@pytest.mark.parametrize("engine", ["hibari", "piper"])
def test_round_trip_through_wav(engines, stt, engine):
    speech = engines[engine].synthesize(SCRIPT)
    decoded = decode_audio(speech.to_wav(), **LIMITS)
    assert decoded.duration_s == pytest.approx(speech.duration_s, abs=0.05)

    transcript = stt.transcribe(decoded.samples)

    wer = word_error_rate(SCRIPT, transcript.text)
    assert wer <= MAX_WER[engine], f"WER {wer:.2f}: {transcript.text!r}"
    assert transcript.language == "en"
    assert transcript.audio_seconds == pytest.approx(decoded.duration_s)
    assert transcript.processing_seconds > 0
    assert transcript.segments
    assert all(s.start < s.end <= transcript.audio_seconds + 0.5 for s in transcript.segments)


def test_round_trip_through_browser_webm(engines, stt):
    """What a browser's MediaRecorder sends: 48 kHz stereo Opus in a WebM stream."""
    speech = engines["hibari"].synthesize(SCRIPT)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm", options={"live": "1"}) as out:
        stream = out.add_stream("libopus", rate=48000, layout="stereo")
        frame = av.AudioFrame.from_ndarray(
            np.stack([speech.samples, speech.samples]), format="fltp", layout="stereo"
        )
        frame.sample_rate = speech.sample_rate
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000, frame_size=960)
        for chunk in resampler.resample(frame) + resampler.resample(None):
            out.mux(stream.encode(chunk))
        out.mux(stream.encode(None))

    decoded = decode_audio(buffer.getvalue(), **LIMITS)
    transcript = stt.transcribe(decoded.samples)

    assert word_error_rate(SCRIPT, transcript.text) <= MAX_WER["hibari"], transcript.text


def test_silence_transcribes_to_nothing(stt):
    """VAD drops silence and noise, so Whisper has nothing to invent text from."""
    noise = np.random.default_rng(0).normal(0, 0.002, 3 * SAMPLE_RATE).astype(np.float32)
    assert stt.transcribe(noise).text == ""
    assert stt.transcribe(np.zeros(0, np.float32)).text == ""


def test_stt_rejects_stereo(stt):
    with pytest.raises(ValueError, match="mono"):
        stt.transcribe(np.zeros((2, 16000), np.float32))


def test_stt_capabilities(stt):
    assert stt.capabilities.engine == "faster-whisper"
    assert stt.capabilities.languages == ("en",)
    assert stt.capabilities.sample_rate == SAMPLE_RATE


def test_whisper_needs_a_local_model_folder(tmp_path):
    with pytest.raises(ValueError, match="model.bin"):
        WhisperSTT(STTSettings(model_dir=str(tmp_path)))


def test_stt_settings_pick_compute_type_per_device():
    assert STTSettings().resolved_compute_type() == "int8"
    assert STTSettings(device="cuda").resolved_compute_type() == "float16"
    assert STTSettings(device="cuda", compute_type="int8_float16").resolved_compute_type() == (
        "int8_float16"
    )


def test_hibari_refuses_voices_that_need_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HIBARI_HOME", str(tmp_path))  # an empty voice cache
    with pytest.raises(ValueError, match="not installed"):
        HibariTTS(TTSSettings(engine="hibari", voice="emma"))
    with pytest.raises(ValueError, match="not installed"):
        HibariTTS(TTSSettings(engine="hibari", voice="nobody"))


def test_piper_needs_its_voice_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        PiperTTS(TTSSettings(engine="piper", model_path=str(tmp_path / "missing.onnx")))


def test_piper_refuses_unknown_speaker():
    with pytest.raises(ValueError, match="no speaker"):
        PiperTTS(TTSSettings(engine="piper", voice="alice"))


def test_coqui_without_the_package_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "TTS", None)  # import fails as where it is not installed
    monkeypatch.setitem(sys.modules, "TTS.api", None)
    with pytest.raises(ImportError, match="coqui-tts"):
        make_tts(TTSSettings(engine="coqui"))


def test_coqui_finds_a_model_folder_or_says_what_is_missing(tmp_path):
    folder = tmp_path / "voice"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="Coqui model file not found"):
        coqui_files(TTSSettings(engine="coqui", model_path=str(folder)))
    (folder / "best_model.pth").write_bytes(b"")
    expected = (str(folder / "best_model.pth"), str(folder / "config.json"))
    assert coqui_files(TTSSettings(engine="coqui", model_path=str(folder))) == expected
    # The checkpoint itself finds the config beside it.
    checkpoint = TTSSettings(engine="coqui", model_path=str(folder / "best_model.pth"))
    assert coqui_files(checkpoint) == expected
    with pytest.raises(ValueError, match="tts.model_path"):
        coqui_files(TTSSettings(engine="coqui"))


TURNS = [
    "Sure, I have a couple of minutes. What is this about?",
    "I am a nurse and I want to learn programming.",
    "Remove my number from your list and never call here again.",
]


def test_a_turn_is_heard_alike_at_its_own_length_and_in_the_full_window(engines, stt):
    # The short path (speech encoded at its own length) against Whisper's usual 30 s window.
    usual = WhisperSTT(STTSettings(cpu_threads=2, short_clip_s=0))
    for line in TURNS:
        samples = decode_audio(engines["hibari"].synthesize(line).to_wav(), **LIMITS).samples
        short, full = stt.transcribe(samples), usual.transcribe(samples)
        assert word_error_rate(line, short.text) <= word_error_rate(line, full.text) + 0.1
        assert word_error_rate(line, short.text) <= 0.15, short.text
        assert short.segments == [(0.0, short.audio_seconds, short.text)]
    silence = np.zeros(2 * SAMPLE_RATE, np.float32)
    noise = np.random.default_rng(0).normal(0, 0.1, 2 * SAMPLE_RATE).astype(np.float32)
    assert stt.transcribe(silence).text == "" and stt.transcribe(noise).text == ""


def test_speech_longer_than_the_short_path_takes_the_usual_one(engines, stt):
    script = " ".join([SCRIPT] * 3)
    samples = decode_audio(engines["hibari"].synthesize(script).to_wav(), **LIMITS).samples
    assert len(samples) / SAMPLE_RATE > stt._settings.short_clip_s
    transcript = stt.transcribe(samples)
    assert len(transcript.segments) > 1  # Whisper's own segments, with their times
    assert word_error_rate(script, transcript.text) <= MAX_WER["hibari"]


def test_a_transcript_says_when_whisper_had_to_guess(engines, stt):
    # "Uh-huh" cut off at 0.7 s is unlikely at greedy decoding, so Whisper samples: the words
    # vary from run to run ("Uh-huh.", "It's hot.", "Aha.") and the transcript is unsure.
    samples = decode_audio(engines["hibari"].synthesize("Uh-huh.").to_wav(), **LIMITS).samples
    guessed = stt.transcribe(samples[: int(0.7 * SAMPLE_RATE)])
    assert guessed.text and not guessed.sure
    for line in ["Stop.", "Who is this?"]:
        said = decode_audio(engines["hibari"].synthesize(line).to_wav(), **LIMITS).samples
        heard = stt.transcribe(said)
        assert heard.sure and word_error_rate(line, heard.text) == 0, heard.text
