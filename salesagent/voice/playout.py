"""Agent speech out at real time, and what the customer has heard of it.

`Playout` sends each sentence as an `agent_sentence` message, then its PCM16 in short
chunks, never more than `lead_s` ahead of the client's playback clock: when the customer
talks over the agent, at most that much stale speech is left in the client's queue. It
keeps the schedule of every chunk, so the heard part of the reply is known at any moment:
from the client's playback acknowledgements where it sends them, else from the audio's
real-time position.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class _Sentence:
    id: int
    text: str
    duration_s: float
    chunks: list[tuple[float, float]] = field(default_factory=list)  # (play start, seconds)

    def played_s(self, at: float) -> float:
        return sum(min(max(at - start, 0.0), length) for start, length in self.chunks)


def heard_part(text: str, fraction: float) -> str:
    """The words of `text` heard when `fraction` of its audio has played."""
    words = text.split()
    return " ".join(words[: round(max(0.0, min(fraction, 1.0)) * len(words))])


class Playout:
    def __init__(
        self,
        send_bytes: Callable[[bytes], Awaitable[None]],
        send_json: Callable[[dict], Awaitable[None]],
        rate: int,
        frame_ms: int = 40,
        lead_s: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self._send_bytes = send_bytes
        self._send_json = send_json
        self.rate = rate
        self._chunk_bytes = rate * 2 * frame_ms // 1000
        self._lead_s = lead_s
        self._clock, self._sleep = clock, sleep  # a test runs both on a fake clock
        self._ends_at = 0.0  # when the client will have played everything sent
        self._sentences: list[_Sentence] = []
        self._ack: tuple[int, float, float] | None = None  # (sentence id, played s, at)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._stopped = False
        self._held = False  # a gap after a hold is the customer's doing, not an underrun
        self.first_audio_at: float | None = None
        # Times the client ran out of agent audio mid-reply (speech came slower than it
        # plays): a gap the customer hears.
        self.underruns = 0

    def start_reply(self) -> None:
        """A new reply: forget the last one's sentences; audio flows again."""
        self._sentences, self._ack, self._stopped = [], None, False
        self.first_audio_at = None
        self.underruns = 0
        self._flowing.set()

    @property
    def speaking(self) -> bool:
        """The client is still playing (or about to play) agent audio."""
        return not self._stopped and self._clock() < self._ends_at

    async def play(self, sentence_id: int, text: str, pcm: bytes) -> None:
        """Announce a sentence, then send its audio paced at real time."""
        if self._stopped:
            return
        sentence = _Sentence(sentence_id, text, len(pcm) / 2 / self.rate)
        self._sentences.append(sentence)
        await self._send_json(
            {
                "type": "agent_sentence",
                "id": sentence_id,
                "text": text,
                "sample_rate": self.rate,
                "samples": len(pcm) // 2,
            }
        )
        for offset in range(0, len(pcm), self._chunk_bytes):
            await self._flowing.wait()
            while not self._stopped and (ahead := self._ends_at - self._clock() - self._lead_s) > 0:
                await self._sleep(ahead)
            await self._flowing.wait()
            if self._stopped:
                return
            chunk = pcm[offset : offset + self._chunk_bytes]
            now = self._clock()
            if self.first_audio_at is not None and now > self._ends_at + 0.02 and not self._held:
                self.underruns += 1
            self._held = False
            start = max(now, self._ends_at)
            length = len(chunk) / 2 / self.rate
            # Shielded: a barge-in never cuts a WebSocket message in half.
            await asyncio.shield(self._send_bytes(chunk))
            if self.first_audio_at is None:
                self.first_audio_at = now
            sentence.chunks.append((start, length))
            self._ends_at = start + length

    def hold(self) -> None:
        """Stop sending for now (the customer started talking); `resume` goes on."""
        self._held = True
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def stop(self) -> str:
        """No more audio for this reply; returns what the customer heard of it."""
        heard = self.heard()
        self._stopped = True
        self._ends_at = self._clock()
        self._flowing.set()
        return heard

    def acknowledge(self, sentence_id: int, played_ms: float) -> None:
        """The client says it has played `played_ms` of sentence `sentence_id`."""
        self._ack = (sentence_id, played_ms / 1000, self._clock())

    def heard(self) -> str:
        """The reply's text as far as the customer has heard it."""
        now = self._clock()
        parts = []
        for sentence in self._sentences:
            played = sentence.played_s(now)
            if self._ack is not None:
                acked_id, acked_s, acked_at = self._ack
                if sentence.id < acked_id:
                    played = sentence.duration_s
                elif sentence.id == acked_id:
                    played = min(acked_s + (now - acked_at), sentence.played_s(now))
                else:
                    played = 0.0
            if played <= 0:
                break
            parts.append(heard_part(sentence.text, played / max(sentence.duration_s, 1e-6)))
        return " ".join(p for p in parts if p)

    async def drain(self) -> None:
        """Wait until the client has played all that was sent (or the reply was stopped)."""
        while not self._stopped and (left := self._ends_at - self._clock()) > 0:
            await self._sleep(min(left, 0.05))
