"""The streaming voice mode through the real graph: real speech streamed as PCM frames in
real time, the real Silero VAD, real Whisper, the vLLM engine (tiny model) and the real
voice. The contract-mode WebSocket tests (test_voice.py) run unchanged beside these."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from salesagent.sales.catalog import load_catalog
from salesagent.voice.pcm import pcm16 as pcm
from salesagent.voice.stream_client import stream_call
from tests.conftest import API, wait_until
from tests.speech import speech, spoken_wav, word_error_rate

QUESTION = "How much does the course cost, and how long does it take?"
INTERRUPTION = "Wait, do you have evening classes for people who work?"


def listen(ws, done, timeout_s: float) -> None:
    """Receive while the microphone keeps streaming silence, until `done(message)` (a
    decoded JSON dict, or audio bytes) is true or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ws.send(pcm(np.zeros(320, np.float32)))
        try:
            message = ws.recv(timeout=0.02)
        except TimeoutError:
            continue
        if done(message if isinstance(message, bytes) else json.loads(message)):
            return


def new_call(base: str) -> str:
    r = httpx.post(
        f"{base}{API}/start-call", json={"phone_number": "555-010-0100", "customer_name": "Ann Lee"}
    )
    assert r.status_code == 201
    return r.json()["call_id"]


def conversation(base: str, call_id: str) -> dict:
    return httpx.get(f"{base}{API}/conversation/{call_id}").json()


def stream_url(base: str, call_id: str, query: str = "mode=stream") -> str:
    return base.replace("http://", "ws://") + f"/ws/voice-chat/{call_id}?{query}"


def messages_until(ws, kind: str, timeout_s: float = 60) -> list:
    """Every message (JSON decoded; audio as bytes) up to and including the first `kind`."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while True:
        message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        seen.append(message if isinstance(message, bytes) else json.loads(message))
        if isinstance(seen[-1], dict) and seen[-1]["type"] == kind:
            return seen


def stream_frames(ws, samples: np.ndarray, rate: int = 16000, frame_s: float = 0.02) -> None:
    """Send samples as PCM16 frames at real time."""
    frame = round(rate * frame_s)
    started = time.monotonic()
    for n, i in enumerate(range(0, len(samples), frame)):
        ws.send(pcm(samples[i : i + frame]))
        time.sleep(max(0.0, started + (n + 1) * frame_s - time.monotonic()))


def test_a_whole_streamed_call(tiny_app):
    call_id = new_call(tiny_app)
    lines = [speech(QUESTION), speech("I teach math at a high school.")]
    call = asyncio.run(stream_call(tiny_app, call_id, lines, pause_s=0.5))
    assert len(call.greeting) > 24000 * 2 * 5  # the opening line, spoken (over 5 s of PCM)
    for turn in call.turns:
        assert turn.done and not turn.errors, turn
        assert word_error_rate(turn.said, turn.transcript) <= 0.25
        assert turn.sentences and len(turn.audio) > 0
        assert turn.first_audio_s is not None and turn.first_audio_s < 30
        assert set(turn.timeline) >= {"stt", "read", "first_sentence", "first_audio"}
    # The price question gets the catalog's answer, word for word, and says so.
    approved = [a.answer for a in load_catalog().answers.values()]
    assert call.turns[0].worded_by == "catalog"
    assert any(answer in call.turns[0].sentences for answer in approved)
    assert call.turns[1].worded_by in ("catalog", "model")
    history = conversation(tiny_app, call_id)["history"]
    assert [e["speaker"] for e in history] == ["agent", "customer", "agent", "customer", "agent"]
    assert history[1]["text"] == call.turns[0].transcript
    assert history[2]["text"] == " ".join(call.turns[0].sentences)  # what was said is stored
    assert not any(e["interrupted"] for e in history)


def test_the_first_sentence_plays_before_the_reply_is_written(tiny_app):
    call_id = new_call(tiny_app)
    lines = [speech(QUESTION), speech("What would I learn there?")]
    call = asyncio.run(stream_call(tiny_app, call_id, lines, pause_s=0.3))
    long_replies = [t for t in call.turns if len(t.sentence_at) >= 2]
    assert long_replies, [t.sentences for t in call.turns]
    for turn in long_replies:  # audio before the last sentence was even announced
        assert turn.audio_at < turn.sentence_at[-1]


def test_a_barge_in_stops_the_agent_and_keeps_what_was_heard(tiny_app):
    call_id = new_call(tiny_app)
    lines = [speech(QUESTION), speech(INTERRUPTION), speech("Okay, thanks.")]
    call = asyncio.run(
        stream_call(tiny_app, call_id, lines, interrupt_after=0.8, interrupt_turn=1, pause_s=0.3)
    )
    cut, answer = call.turns[0], call.turns[1]
    assert cut.interrupted, cut
    assert cut.stop_s is not None and cut.stop_s < 1.5  # no seconds of stale speech
    assert word_error_rate(INTERRUPTION, answer.transcript) <= 0.3
    assert answer.done and answer.sentences  # the next reply answers the interruption
    history = conversation(tiny_app, call_id)["history"]
    agent_cut = history[2]
    assert agent_cut["speaker"] == "agent" and agent_cut["interrupted"] is True
    assert agent_cut["text"] == cut.heard
    full = " ".join(cut.sentences)
    assert full.startswith(cut.heard) and len(cut.heard) < len(full)
    assert history[3]["speaker"] == "customer" and history[3]["text"] == answer.transcript


def test_a_backchannel_does_not_interrupt_the_agent(tiny_app):
    call_id = new_call(tiny_app)
    with connect(stream_url(tiny_app, call_id), max_size=None) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        stream_frames(ws, np.zeros(32000, np.float32))  # two seconds into the greeting
        stream_frames(ws, speech("Uh-huh.")[1])
        kinds = []

        def greeting_spoken(message) -> bool:
            if isinstance(message, dict):
                kinds.append(message["type"])
            return kinds.count("agent_sentence") == 3

        listen(ws, greeting_spoken, 25)
        assert "speech_started" in kinds  # it was heard...
        assert "interrupted" not in kinds and "user_text" not in kinds  # ...and let go
        assert kinds.count("agent_sentence") == 3  # the whole greeting was spoken
    assert len(conversation(tiny_app, call_id)["history"]) == 1


def test_silence_and_noise_make_no_turn(tiny_app):
    call_id = new_call(tiny_app)
    rng = np.random.default_rng(1)
    with connect(stream_url(tiny_app, call_id, "mode=stream&rate=8000"), max_size=None) as ws:
        assert json.loads(ws.recv(timeout=30))["input_rate"] == 8000
        stream_frames(ws, np.zeros(8000 * 2, np.float32), rate=8000)
        stream_frames(ws, rng.normal(0, 0.03, 8000 * 3).astype(np.float32), rate=8000)
        stream_frames(ws, np.zeros(8000 * 1, np.float32), rate=8000)
        kinds = []
        with pytest.raises(TimeoutError):
            while True:
                message = ws.recv(timeout=2)
                if isinstance(message, str):
                    kinds.append(json.loads(message)["type"])
        assert "user_text" not in kinds and "turn_done" not in kinds
    assert len(conversation(tiny_app, call_id)["history"]) == 1


def test_bad_frames_get_an_error_and_nothing_is_stored(tiny_app):
    call_id = new_call(tiny_app)
    with connect(stream_url(tiny_app, call_id), max_size=None) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        for bad, says in [
            (b"\x01\x02\x03", "whole samples"),
            (spoken_wav("Hello there."), "WAV"),
            (b"\0\0" * 20000, "over"),
            ("hello there", "Unknown text message"),
        ]:
            ws.send(bad)
            errors = [m for m in messages_until(ws, "error", 30) if isinstance(m, dict)]
            assert says in errors[-1]["message"], errors[-1]
        ws.send("END_CONNECTION_REQUEST_BY_CLIENT")
    assert len(conversation(tiny_app, call_id)["history"]) == 1


@pytest.mark.parametrize(
    "query, says",
    [("mode=stream&rate=44100", "rate must be"), ("mode=chunky", "unknown mode")],
)
def test_a_wrong_rate_or_mode_is_refused(tiny_app, query, says):
    call_id = new_call(tiny_app)
    with connect(stream_url(tiny_app, call_id, query)) as ws:
        message = json.loads(ws.recv(timeout=10))
        assert message["type"] == "error" and says in message["message"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1008
    assert len(conversation(tiny_app, call_id)["history"]) == 1


def test_a_client_that_vanishes_mid_reply_leaves_the_history_whole(tiny_app):
    call_id = new_call(tiny_app)
    ws = connect(stream_url(tiny_app, call_id), max_size=None)
    assert json.loads(ws.recv(timeout=30))["type"] == "ready"
    stream_frames(ws, speech(QUESTION)[1])
    seen = {"answered": False, "reply_audio": False}

    def reply_audio(message) -> bool:  # the reply's audio flows
        if isinstance(message, dict):
            seen["answered"] |= message["type"] == "user_text"
        seen["reply_audio"] = seen["answered"] and isinstance(message, bytes)
        return seen["reply_audio"]

    listen(ws, reply_audio, 60)
    assert seen["reply_audio"]
    ws.socket.close()  # gone mid-reply, without a close handshake

    def stored():
        history = conversation(tiny_app, call_id)["history"]
        return history if len(history) >= 2 else None

    history = wait_until(stored, 30, what="the turn stored")
    assert [e["speaker"] for e in history][:2] == ["agent", "customer"]
    assert all(e["text"] for e in history)  # no half-written entry
    assert conversation(tiny_app, call_id)["is_active"] is True
