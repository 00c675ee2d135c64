"""Turn-taking on a live audio stream: voice activity, pauses and the end of the customer's turn.

`SileroVAD` scores 32 ms windows with the Silero model that ships inside faster-whisper
(one ONNX session for every stream; each stream keeps its own recurrent state).
`TurnSegmenter` turns those scores into events on the stream's own clock (seconds of audio):

- `SPEECH_STARTED` after `speech_start_s` of voice;
- `PAUSED` after `pause_s` of silence: the turn may be over, so work on it can start;
- `RESUMED` when the voice comes back before the end of turn;
- `TURN_ENDED` after `end_of_turn_s` of silence (or when the utterance reaches its limit).

It also keeps the customer's utterance (with a little audio before the speech started)
until the caller takes it: a customer who goes on talking before the agent answers just
makes the same utterance longer.
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, Field

from salesagent.voice.audio import SAMPLE_RATE

WINDOW = 512  # samples at 16 kHz: the Silero model's window (32 ms)
_CONTEXT = 64  # samples of the previous window the model sees with each one


class TurnSettings(BaseModel):
    """How the streaming voice mode hears turns and barge-ins (seconds unless named)."""

    vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    speech_start_s: float = 0.1
    # Silence after speech at which the turn's work starts, ahead of the end of turn.
    pause_s: float = 0.2
    # Silence that ends the customer's turn (Hibari, the test voice, pauses ~0.65 s between
    # sentences; people pause less).
    end_of_turn_s: float = 0.8
    pre_roll_s: float = 0.25
    # Speech over the agent for this long stops its audio, then the words decide: a
    # backchannel lets the agent go on, anything else interrupts it.
    interrupt_min_speech_s: float = 0.5
    backchannels: list[str] = Field(
        default_factory=lambda: [
            "uh-huh",
            "uh huh",
            "mm-hmm",
            "mhm",
            "mm",
            "hmm",
            "uh",
            "um",
            "ah",
            "aha",
            "oh",
            "okay",
            "ok",
            "yeah",
            "yes",
            "yep",
            "right",
            "sure",
            "i see",
            "got it",
            "alright",
        ]  # fmt: skip
    )
    # A reply still running after this long is stuck somewhere: the log says where.
    stuck_reply_s: float = Field(default=60.0, gt=0)
    # Outgoing audio: chunk length, and how far ahead of real time it is sent.
    frame_ms: int = 40
    playback_lead_s: float = 0.3


class SileroVAD:
    """Speech probability per 512-sample window, for one stream."""

    def __init__(self):
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session  # cached: one model for every stream
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros((1, _CONTEXT), np.float32)

    def __call__(self, window: np.ndarray) -> float:
        frame = window.reshape(1, WINDOW).astype(np.float32)
        out, self._h, self._c = self._session.run(
            None,
            {"input": np.concatenate([self._context, frame], axis=1), "h": self._h, "c": self._c},
        )
        self._context = frame[:, -_CONTEXT:]
        return float(np.asarray(out).reshape(-1)[0])


class TurnEvent(StrEnum):
    SPEECH_STARTED = "speech_started"
    PAUSED = "paused"
    RESUMED = "resumed"
    TURN_ENDED = "turn_ended"


class TurnSegmenter:
    def __init__(self, settings: TurnSettings, max_utterance_s: float = 60.0, vad=None):
        self._s = settings
        self._vad = vad or SileroVAD()
        window_s = WINDOW / SAMPLE_RATE
        self._start_windows = max(1, round(settings.speech_start_s / window_s))
        self._pause_windows = max(1, round(settings.pause_s / window_s))
        self._end_windows = max(self._pause_windows, round(settings.end_of_turn_s / window_s))
        self._max_windows = round(max_utterance_s / window_s)
        self._pending = np.zeros(0, np.float32)
        self._preroll: deque[np.ndarray] = deque(
            maxlen=max(1, round(settings.pre_roll_s / window_s))
        )
        self._utterance: list[np.ndarray] = []
        self._windows = 0  # windows scored so far: the stream's clock
        self._voiced = 0  # current run of voiced windows
        self._silent = 0  # current run of silent windows
        self.in_speech = False  # from SPEECH_STARTED to TURN_ENDED
        self._paused = False
        self._run_start = 0  # window where the current speech run began
        self.last_voice_s = 0.0  # stream time of the end of the last voiced window

    @property
    def now_s(self) -> float:
        return self._windows * WINDOW / SAMPLE_RATE

    @property
    def speech_s(self) -> float:
        """How long the customer has been speaking without a pause (0 when not)."""
        if not self.in_speech or self._paused:
            return 0.0
        return (self._windows - self._run_start) * WINDOW / SAMPLE_RATE

    def push(self, samples: np.ndarray) -> list[tuple[TurnEvent, float]]:
        """Feed 16 kHz samples; the events they caused, each with its stream time."""
        self._pending = np.concatenate([self._pending, samples])
        events = []
        while len(self._pending) >= WINDOW:
            window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            events += self._step(window)
        return events

    def _step(self, window: np.ndarray) -> list[tuple[TurnEvent, float]]:
        voiced = self._vad(window) >= self._s.vad_threshold
        self._windows += 1
        if self._utterance:
            self._utterance.append(window)
        else:
            self._preroll.append(window)
        self._voiced, self._silent = (self._voiced + 1, 0) if voiced else (0, self._silent + 1)
        if voiced:
            self.last_voice_s = self.now_s
        events = []
        if self._voiced == self._start_windows:
            started_at = self._windows - self._start_windows
            if not self.in_speech:
                self.in_speech, self._run_start = True, started_at
                if not self._utterance:
                    self._utterance = list(self._preroll)
                    self._preroll.clear()
                events.append((TurnEvent.SPEECH_STARTED, started_at * WINDOW / SAMPLE_RATE))
            elif self._paused:
                self._paused, self._run_start = False, started_at
                events.append((TurnEvent.RESUMED, self.now_s))
        if self.in_speech and not self._paused and self._silent == self._pause_windows:
            self._paused = True
            events.append((TurnEvent.PAUSED, self.last_voice_s))
        too_long = len(self._utterance) >= self._max_windows
        if self.in_speech and (self._silent == self._end_windows or too_long):
            self.in_speech = self._paused = False
            events.append((TurnEvent.TURN_ENDED, self.last_voice_s))
        return events

    def utterance(self) -> np.ndarray:
        """The customer's audio since speech started (with its pre-roll), not yet taken."""
        return np.concatenate(self._utterance) if self._utterance else np.zeros(0, np.float32)

    def take(self) -> None:
        """The utterance went into a turn: the next speech starts a new one."""
        self._utterance = []
