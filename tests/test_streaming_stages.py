"""The streaming voice stages alone, in milliseconds: PCM frames, voice activity and turns
(the real Silero VAD on real speech, silence and noise), the paced playout, and the stream
client against a scripted server."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import suppress

import numpy as np
import pytest
import soxr

from salesagent.voice.audio import AudioError, read_wav
from salesagent.voice.pcm import PcmInput, pcm16_at
from salesagent.voice.playout import Playout, heard_part
from salesagent.voice.realtime import _is_backchannel, _played
from salesagent.voice.stt import Transcript
from salesagent.voice.turns import TurnEvent, TurnSegmenter, TurnSettings
from tests.speech import spoken_wav


def speech_16k(text: str) -> np.ndarray:
    samples, rate = read_wav(spoken_wav(text))
    return soxr.resample(samples, rate, 16000).astype(np.float32)


def segment(audio: np.ndarray, settings: TurnSettings | None = None, frame: int = 320):
    segmenter = TurnSegmenter(settings or TurnSettings())
    events = []
    for i in range(0, len(audio), frame):
        events += segmenter.push(audio[i : i + frame])
    return events, segmenter


def test_pcm_frames_are_checked_and_resampled():
    frame = (np.sin(np.arange(480) / 5) * 8000).astype("<i2").tobytes()  # 10 ms at 48 kHz
    pcm = PcmInput(48000)
    out = np.concatenate([pcm.decode(frame) for _ in range(10)])
    assert abs(len(out) - 1600) <= 160  # 100 ms at 16 kHz (the stream resampler lags a little)
    with pytest.raises(AudioError, match="whole samples"):
        pcm.decode(frame[:-1])
    with pytest.raises(AudioError, match="WAV"):
        PcmInput(16000).decode(spoken_wav("Hello there."))
    with pytest.raises(AudioError, match="over"):
        PcmInput(8000).decode(b"\0\0" * 9000)
    with pytest.raises(AudioError, match="rate"):
        PcmInput(44100)


def test_pcm_out_is_pcm16_at_the_asked_rate():
    samples = np.zeros(24000, np.float32)
    assert len(pcm16_at(samples, 24000, 8000)) == 2 * 8000
    assert len(pcm16_at(samples, 24000, 24000)) == 2 * 24000


def test_a_spoken_line_is_one_turn_with_its_events_in_order():
    line = speech_16k("Sure, I have a few minutes. What is it about?")
    audio = np.concatenate([np.zeros(8000, np.float32), line, np.zeros(24000, np.float32)])
    events, segmenter = segment(audio)
    kinds = [e for e, _ in events]
    assert kinds[0] is TurnEvent.SPEECH_STARTED and kinds[-1] is TurnEvent.TURN_ENDED
    assert kinds.count(TurnEvent.TURN_ENDED) == 1  # the pause between sentences is no turn end
    assert TurnEvent.PAUSED in kinds
    speech_end = 0.5 + len(line) / 16000
    assert abs(events[-1][1] - speech_end) < 0.35  # the end of turn is timed at the last voice
    utterance = segmenter.utterance()
    assert len(line) <= len(utterance) <= len(audio)


def test_silence_and_noise_make_no_turn():
    rng = np.random.default_rng(0)
    for audio in (np.zeros(16000 * 3, np.float32), rng.normal(0, 0.05, 16000 * 3).astype("f4")):
        events, segmenter = segment(audio)
        assert events == [] and len(segmenter.utterance()) == 0


def test_the_utterance_grows_until_taken():
    line = speech_16k("I'm a teacher.")
    gap = np.zeros(16000, np.float32)
    _, segmenter = segment(np.concatenate([line, gap, line, gap]))
    both = len(segmenter.utterance())
    assert both >= 2 * len(line)
    segmenter.take()
    assert len(segmenter.utterance()) == 0


def test_backchannels_and_playback_acks_are_recognized():
    words = TurnSettings().backchannels
    assert _is_backchannel("Uh-huh.", words) and _is_backchannel("Okay, okay.", words)
    assert _is_backchannel("", words)
    assert not _is_backchannel("Wait, how much is it?", words)
    assert _played('{"type": "played", "id": 3, "ms": 420}') == (3, 420.0)
    assert _played('{"type": "played", "id": "x"}') is None and _played("nope") is None


class FakeClock:
    """Time that moves only when someone sleeps (or the test moves it)."""

    def __init__(self):
        self.now = 100.0
        self.frozen = False

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if not self.frozen:
            self.now += seconds
        await asyncio.sleep(0)


async def _playout(clock, lead_s=0.3):
    sent: list[bytes] = []
    announced: list[dict] = []

    async def send_bytes(data):
        sent.append(data)

    async def send_json(data):
        announced.append(data)

    playout = Playout(send_bytes, send_json, 8000, 40, lead_s, clock=clock, sleep=clock.sleep)
    return playout, sent, announced


def test_audio_is_paced_no_more_than_the_lead_ahead_and_heard_follows_the_clock():
    async def run():
        clock = FakeClock()
        clock.frozen = True
        playout, sent, announced = await _playout(clock)
        pcm = b"\0\0" * 8000  # one second
        task = asyncio.ensure_future(playout.play(1, "one two three four", pcm))
        for _ in range(50):
            await asyncio.sleep(0)
        # Time stands still: only the lead (0.3 s, in 40 ms chunks) went out.
        assert len(b"".join(sent)) == 8 * 640
        assert announced[0]["type"] == "agent_sentence" and announced[0]["samples"] == 8000
        clock.now += 0.25
        assert playout.heard() == heard_part("one two three four", 0.25) == "one"
        heard = playout.stop()
        await task
        assert heard == "one" and not playout.speaking
        return len(b"".join(sent))

    assert asyncio.run(run()) < 16000  # the rest of the sentence was never sent


def test_acknowledgements_decide_what_was_heard():
    async def run():
        clock = FakeClock()
        playout, _, _ = await _playout(clock, lead_s=5)
        await playout.play(1, "alpha beta", b"\0\0" * 8000)
        await playout.play(2, "gamma delta", b"\0\0" * 8000)
        clock.now += 1.5  # by the clock: all of 1, half of 2
        assert playout.heard() == "alpha beta gamma"
        playout.acknowledge(1, 500)  # the client is behind: half of 1 played
        assert playout.heard() == "alpha"

    asyncio.run(run())


def test_the_stream_client_hears_a_late_greeting_out_and_an_interruption_of_it_is_not_its_turn():
    """A scripted server whose greeting starts late (a busy one): the caller waits for it
    before speaking, and `interrupted` for the greeting (the lead's words cut it) does not
    end the lead's turn: the reply that follows is its answer."""
    from websockets.asyncio.server import serve

    from salesagent.voice.stream_client import stream_call

    times: dict[str, float] = {}
    chunk = b"\0\0" * 2400  # 0.1 s of agent audio at 24 kHz

    async def server(ws) -> None:
        await ws.send(json.dumps({"type": "ready", "mode": "stream"}))
        await asyncio.sleep(1.0)
        times["greeted"] = time.monotonic()
        await ws.send(json.dumps({"type": "agent_sentence", "id": 1, "text": "Hi John."}))
        await ws.send(chunk)
        quiet = None
        async for message in ws:
            if not isinstance(message, bytes):
                continue  # playback acknowledgements
            loud = np.abs(np.frombuffer(message, "<i2")).max() > 600
            if loud and "spoke" not in times:
                times["spoke"] = time.monotonic()
                await ws.send(json.dumps({"type": "interrupted", "heard": "Hi John."}))
            if "spoke" in times:
                quiet = None if loud else (quiet or 0) + 1
                if quiet == 15:  # 0.3 s of silence after the line: the reply
                    break
        await ws.send(json.dumps({"type": "agent_sentence", "id": 2, "text": "Hello again."}))
        await ws.send(chunk)
        await ws.send(json.dumps({"type": "turn_done", "should_end_call": False}))
        async for message in ws:
            if message == "END_CONNECTION_REQUEST_BY_CLIENT":
                return

    async def run():
        async with serve(server, "127.0.0.1", 0) as listening:
            port = listening.sockets[0].getsockname()[1]
            line = (0.3 * np.sin(np.arange(8000) / 3)).astype(np.float32)  # 0.5 s, loud
            return await stream_call(
                f"http://127.0.0.1:{port}", "c1", [("hello?", line)], pause_s=0.2, timeout_s=10
            )

    call = asyncio.run(run())
    assert times["spoke"] > times["greeted"]  # not over a greeting not yet begun
    (turn,) = call.turns
    assert turn.done and not turn.interrupted
    assert turn.sentences == ["Hello again."]
    assert turn.first_audio_s is not None and 0 < turn.first_audio_s < 2


class ScriptedCall:
    """The service side of one streamed call, scripted, around the real `RealtimeVoiceChat`
    (real Silero VAD, real speech in): the greeting plays `greeting_s`, the transcriptions
    are the test's (`hear(audio, ended)`: `ended` is whether the speech was over when it was
    asked), the first `failing_turns` turns fail (Redis drops) and the others are answered
    "Evenings work." Frames go in faster than real time."""

    def __init__(
        self,
        hear,
        greeting_s: float = 8.0,
        failing_turns: int = 0,
        turns: TurnSettings | None = None,
    ):
        from contextlib import asynccontextmanager
        from types import SimpleNamespace

        from redis.exceptions import RedisError

        from salesagent.platform.metrics import NoMetrics
        from salesagent.platform.settings import LimitsSettings
        from salesagent.voice.audio import encode_wav
        from salesagent.voice.realtime import RealtimeVoiceChat

        # 8 s: the agent is still greeting when the lead is done talking over it.
        self.greeting_s = greeting_s
        self.sent: list[dict] = []
        self.turns: list[str] = []  # the customer lines taken up
        self.heard_calls = 0
        incoming: asyncio.Queue = asyncio.Queue()
        self.incoming = incoming
        scripted = self

        class Socket:
            async def receive(self):
                return await incoming.get()

            async def send_json(self, data):
                scripted.sent.append(data)

            async def send_bytes(self, data):
                pass

            async def close(self, code=1000, reason=None):
                incoming.put_nowait({"type": "websocket.disconnect"})

        class Turn:
            result = SimpleNamespace(should_end_call=False, reply="Evenings work.")
            read_at, rewritten, worded_by = None, False, "model"

            async def sentences(self):
                if scripted.turns[-1] == "HANG":
                    await asyncio.Event().wait()  # a reply that never comes
                yield "Evenings work."

            def delivered(self, heard):
                pass

            def interrupt(self, heard):
                pass

        class Store:
            async def get_active(self, call_id):
                return SimpleNamespace(history=[SimpleNamespace(text="Hi Ann, this is Alex.")])

            @asynccontextmanager
            async def websocket_claim(self, call_id, ttl_s):
                yield

            async def cut_agent_entry(self, call_id, index, heard):
                return True

        class Service:
            store, metrics = Store(), NoMetrics()
            audio = SimpleNamespace(max_seconds=60.0)

            async def transcribe(self, call_id, audio):
                scripted.heard_calls += 1
                ended = scripted.said("speech_stopped")
                heard = await hear(audio, ended)  # words, or a Transcript to say how sure
                return heard if isinstance(heard, Transcript) else Transcript(heard, "en", 1, 0)

            @asynccontextmanager
            async def turn(self, call_id, text, channel):
                scripted.turns.append(text)
                if len(scripted.turns) <= failing_turns:
                    raise RedisError("Connection reset by peer")
                yield Turn()

            async def speak(self, text):
                seconds = scripted.greeting_s if text.startswith("Hi Ann") else 0.3
                return encode_wav(np.zeros(round(24000 * seconds), np.float32), 24000)

        self.chat = RealtimeVoiceChat(
            Socket(), "c1", Service(), LimitsSettings(), turns or TurnSettings(), 16000, 24000
        )

    def said(self, kind: str) -> bool:
        return any(m["type"] == kind for m in self.sent)

    def answers(self) -> int:
        """Turns over so far: answered, or failed."""
        return sum(m["type"] == "turn_done" or bool(m.get("turn_failed")) for m in self.sent)

    async def talk(self, *lines: np.ndarray, over_greeting: bool = True) -> None:
        """The lead says each line (the first over the greeting, or after it), each followed
        by silence until it is answered or its turn fails, or for 3 s (stream time)."""
        from salesagent.voice.pcm import pcm16

        running = asyncio.ensure_future(self.chat.run())
        while not self.said("agent_sentence"):  # the greeting has begun
            await asyncio.sleep(0.01)
        if not over_greeting:
            await asyncio.sleep(self.greeting_s + 0.5)
        for line in lines:
            before = self.answers()
            audio = np.concatenate([line, np.zeros(16000 * 3, np.float32)])
            for i in range(0, len(audio), 320):
                frame = pcm16(audio[i : i + 320])
                self.incoming.put_nowait({"type": "websocket.receive", "bytes": frame})
                await asyncio.sleep(0.003)
                if self.answers() > before:
                    break
            for _ in range(200):  # the answer, if one comes, within 2 s
                if self.answers() > before:
                    break
                await asyncio.sleep(0.01)
        self.incoming.put_nowait({"type": "websocket.disconnect"})
        await asyncio.wait_for(running, 5)


QUESTION_OVER_GREETING = "Sure, but what is this about?"


def test_speech_that_ends_while_a_piece_of_it_is_heard_is_heard_whole():
    """The lead's question over the greeting is judged first on its first half second,
    heard as "Sure." (a backchannel) only after the lead has finished (a busy STT): that
    piece decides nothing, the whole is heard, it interrupts and it is answered."""
    line = speech_16k(QUESTION_OVER_GREETING)

    async def hear(audio, ended):
        if ended:
            return QUESTION_OVER_GREETING
        while not call.said("speech_stopped"):  # slow: the speech ends meanwhile
            await asyncio.sleep(0.01)
        return "Sure."

    call = ScriptedCall(hear)
    asyncio.run(call.talk(line))
    kinds = [m["type"] for m in call.sent]
    assert "interrupted" in kinds
    assert call.turns == [QUESTION_OVER_GREETING]
    assert kinds.index("interrupted") < kinds.index("user_text") < kinds.index("turn_done")


def test_words_after_a_backchannel_are_heard_before_the_speech_is_let_go():
    """Every piece heard while the lead talks is a backchannel ("Sure, okay."), so the
    greeting goes on; the words after the last piece are heard when the speech ends, and
    they interrupt and are answered (before, the speech was dropped as a backchannel)."""
    line = speech_16k(QUESTION_OVER_GREETING)

    async def hear(audio, ended):
        return QUESTION_OVER_GREETING if ended else "Sure, okay."

    call = ScriptedCall(hear)
    asyncio.run(call.talk(line))
    assert call.heard_calls >= 2  # pieces while talking, then the whole
    assert call.turns == [QUESTION_OVER_GREETING]
    assert call.said("interrupted")


def test_a_backchannel_over_the_agent_is_no_turn_and_the_agent_goes_on():
    line = speech_16k("Uh-huh, okay.")

    async def hear(audio, ended):
        return "Uh-huh, okay."

    call = ScriptedCall(hear)
    asyncio.run(call.talk(line))
    assert call.heard_calls >= 1
    assert call.turns == [] and not call.said("interrupted")
    assert call.said("speech_stopped")


def test_a_short_sound_the_stt_guessed_at_does_not_interrupt_but_a_clear_word_does():
    """An "uh-huh" over the greeting is sometimes heard as "It's hot." when Whisper has to
    sample (unsure): a murmur, the greeting goes on. "Stop." heard surely interrupts."""
    line = speech_16k("Uh-huh.")

    async def guessed(audio, ended):
        return Transcript("It's hot.", "en", 1, 0, sure=False)

    call = ScriptedCall(guessed)
    asyncio.run(call.talk(line))
    assert call.said("speech_stopped") and call.turns == [] and not call.said("interrupted")

    async def clear(audio, ended):
        return "Stop."

    call = ScriptedCall(clear)
    asyncio.run(call.talk(speech_16k("Stop.")))
    assert call.said("interrupted") and call.turns == ["Stop."]


def test_a_turn_that_fails_unexpectedly_is_said_to_have_failed_and_the_next_is_answered():
    """A fault below the turn (Redis drops mid-turn) is no silent hang: the lead's client
    gets an `error` with `turn_failed`, and the next words are heard afresh and answered."""
    line = speech_16k("Can I attend in the evening?")

    async def hear(audio, ended):
        return "Can I attend in the evening?"

    call = ScriptedCall(hear, greeting_s=0.3, failing_turns=1)
    asyncio.run(call.talk(line, line, over_greeting=False))
    failed = [m for m in call.sent if m.get("turn_failed")]
    assert len(failed) == 1 and failed[0]["type"] == "error"
    assert "say it again" in failed[0]["message"]
    assert call.turns == ["Can I attend in the evening?"] * 2
    assert [m["type"] for m in call.sent].count("turn_done") == 1


def test_a_reply_that_is_stuck_is_logged_with_where_it_waits(caplog):
    async def hear(audio, ended):
        return "HANG"

    call = ScriptedCall(hear, greeting_s=0.3, turns=TurnSettings(stuck_reply_s=0.5))
    asyncio.run(call.talk(speech_16k("Can I attend in the evening?"), over_greeting=False))
    (record,) = [r for r in caplog.records if "a reply has run for" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert "_answer (line" in record.getMessage() and "_speak (line" in record.getMessage()


def test_a_reply_that_swallows_its_cancellation_is_cancelled_again():
    """The lead pauses mid-line (the work starts) and talks on (it is cancelled), but the
    cancellation is lost below (as redis-py and 3.11's wait_for can lose one) and the
    reply runs on: it is cancelled again, the listener goes on, and the line is answered
    once. Before, the listener waited for that reply for good: the call went deaf."""
    line = speech_16k("Sure, I have a few minutes. What is it about?")
    lost = []

    async def hear(audio, ended):
        if not lost:
            lost.append(True)
            with suppress(asyncio.CancelledError):  # the lead talks on: a cancellation, lost
                await asyncio.sleep(30)
        return "Sure, I have a few minutes. What is it about?"

    call = ScriptedCall(hear, greeting_s=0.3)
    asyncio.run(call.talk(line, over_greeting=False))
    assert lost and call.said("speech_stopped")
    assert [m["type"] for m in call.sent].count("turn_done") == 1
