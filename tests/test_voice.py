"""Voice through the real graph: /respond-audio and the WebSocket voice chat.

Real speech (spoken by the project's Hibari voice) goes through real Whisper, the tiny
LLM and the real TTS. Faults are injected with engines that fail on purpose.
"""

from __future__ import annotations

import asyncio
import io
import json
import wave

import httpx
import pytest
from ray import serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from salesagent.voice.voice_client import converse
from tests.conftest import API, deploy_graph, tiny_args, wait_until
from tests.faults import BrokenSTT, BrokenTTS
from tests.speech import spoken_wav, word_error_rate

QUESTION = "How much does the course cost, and how long does it take?"
MAX_WER = 0.25  # tiny.en gets this clip (nearly) word for word; garbled audio scores ~1.0


def silence_wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return out.getvalue()


def is_wav(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def start_call(base: str) -> str:
    r = httpx.post(
        f"{base}{API}/start-call", json={"phone_number": "555-010-0100", "customer_name": "Ann Lee"}
    )
    assert r.status_code == 201
    return r.json()["call_id"]


def history(base: str, call_id: str) -> list[dict]:
    return httpx.get(f"{base}{API}/conversation/{call_id}").json()["history"]


def ws_url(base: str, call_id: str) -> str:
    return base.replace("http://", "ws://") + f"/ws/voice-chat/{call_id}"


@pytest.fixture(scope="module")
def deaf_app(serve_instance, redis_server, tiny_model_dir, tiny_app):
    yield deploy_graph(
        "deaf", serve_instance, tiny_args(tiny_model_dir, redis_server.url), stt_engine=BrokenSTT()
    )
    serve.delete("deaf")


@pytest.fixture(scope="module")
def mute_app(serve_instance, redis_server, tiny_model_dir, tiny_app):
    yield deploy_graph(
        "mute", serve_instance, tiny_args(tiny_model_dir, redis_server.url), tts_engine=BrokenTTS()
    )
    serve.delete("mute")


@pytest.fixture(scope="module")
def question_wav() -> bytes:
    return spoken_wav(QUESTION)


# --- POST /respond-audio ---------------------------------------------------------------


def test_respond_audio_transcribes_and_replies(tiny_app, question_wav):
    call_id = start_call(tiny_app)
    r = httpx.post(
        f"{tiny_app}{API}/respond-audio/{call_id}",
        files={"audio_file": ("question.wav", question_wav, "audio/wav")},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"reply", "should_end_call"} and r.json()["reply"]
    customer, agent = history(tiny_app, call_id)[1:]
    assert customer["speaker"] == "customer" and agent["speaker"] == "agent"
    assert word_error_rate(QUESTION, customer["text"]) <= MAX_WER, customer["text"]
    assert agent["text"] == r.json()["reply"]


@pytest.mark.parametrize(
    ("content", "status", "says"),
    [
        (b"", 400, "empty"),
        (b"\x00\x01garbage" * 100, 400, "not"),
        (b'{"message": "hello"}', 400, "not"),
        (silence_wav(61), 400, "limit"),
        (silence_wav(2), 400, "No speech"),
        (b"\0" * (10 * 1024 * 1024 + 1), 413, "limit"),
    ],
    ids=["empty", "garbage", "json", "too-long", "silence", "too-large"],
)
def test_respond_audio_rejects_bad_audio(tiny_app, content, status, says):
    call_id = start_call(tiny_app)
    r = httpx.post(
        f"{tiny_app}{API}/respond-audio/{call_id}",
        files={"audio_file": ("clip.wav", content, "audio/wav")},
        timeout=60,
    )
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]
    assert len(history(tiny_app, call_id)) == 1  # nothing stored


def test_respond_audio_needs_the_file_field(tiny_app):
    call_id = start_call(tiny_app)
    r = httpx.post(f"{tiny_app}{API}/respond-audio/{call_id}", files={"other": ("a", b"x")})
    assert r.status_code == 400 and "audio_file" in r.json()["detail"]


def test_respond_audio_to_unknown_or_ended_call_is_404(tiny_app, question_wav):
    files = {"audio_file": ("q.wav", question_wav, "audio/wav")}
    r = httpx.post(
        f"{tiny_app}{API}/respond-audio/00000000-0000-4000-8000-000000000000", files=files
    )
    assert r.status_code == 404
    call_id = start_call(tiny_app)
    with connect(ws_url(tiny_app, call_id)) as ws:
        ws.recv()
        ws.send(json.dumps({"type": "control", "command": "end_call"}))
        ws.recv()
    r = httpx.post(f"{tiny_app}{API}/respond-audio/{call_id}", files=files)
    assert r.status_code == 404


def test_respond_audio_is_500_when_stt_fails(deaf_app, question_wav):
    call_id = start_call(deaf_app)
    r = httpx.post(
        f"{deaf_app}{API}/respond-audio/{call_id}",
        files={"audio_file": ("q.wav", question_wav, "audio/wav")},
        timeout=60,
    )
    assert r.status_code == 500
    assert r.json()["detail"].startswith("STT failed")
    assert len(history(deaf_app, call_id)) == 1


# --- WS /ws/voice-chat -----------------------------------------------------------------


def test_voice_chat_turn(tiny_app, question_wav):
    call_id = start_call(tiny_app)
    with connect(ws_url(tiny_app, call_id), max_size=None) as ws:
        assert is_wav(ws.recv(timeout=30))  # the agent's first message, spoken
        ws.send(question_wav)
        transcript = json.loads(ws.recv(timeout=60))
        assert transcript["type"] == "user_text"
        assert word_error_rate(QUESTION, transcript["text"]) <= MAX_WER
        assert is_wav(ws.recv(timeout=60))  # the reply, spoken
        turn = history(tiny_app, call_id)
        assert [e["speaker"] for e in turn] == ["agent", "customer", "agent"]
        assert turn[1]["text"] == transcript["text"]
        if not httpx.get(f"{tiny_app}{API}/conversation/{call_id}").json()["is_active"]:
            # The agent ended the call: a system message, then a normal close.
            assert json.loads(ws.recv(timeout=10)) == {
                "type": "system",
                "message": "Call ended by agent.",
            }
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1000


@pytest.mark.parametrize("call_id", ["00000000-0000-4000-8000-000000000000", "nonsense"])
def test_voice_chat_rejects_an_unknown_call_with_1008(tiny_app, call_id):
    with connect(ws_url(tiny_app, call_id)) as ws:
        message = json.loads(ws.recv(timeout=10))
        assert message["type"] == "error" and "not found" in message["message"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1008


def test_voice_chat_end_connection_keeps_the_call(tiny_app):
    call_id = start_call(tiny_app)
    with connect(ws_url(tiny_app, call_id), max_size=None) as ws:
        ws.recv(timeout=30)
        ws.send("END_CONNECTION_REQUEST_BY_CLIENT")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1000
    assert httpx.get(f"{tiny_app}{API}/conversation/{call_id}").json()["is_active"] is True


def test_voice_chat_end_call_command_ends_the_call(tiny_app):
    call_id = start_call(tiny_app)
    with connect(ws_url(tiny_app, call_id), max_size=None) as ws:
        ws.recv(timeout=30)
        ws.send(json.dumps({"type": "control", "command": "end_call"}))
        assert json.loads(ws.recv(timeout=10)) == {
            "type": "system",
            "message": "Call ended by client.",
        }
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    convo = httpx.get(f"{tiny_app}{API}/conversation/{call_id}").json()
    assert convo["is_active"] is False and len(convo["history"]) == 1


def test_voice_chat_reports_bad_input_and_stays_open(tiny_app):
    call_id = start_call(tiny_app)
    with connect(ws_url(tiny_app, call_id), max_size=None) as ws:
        ws.recv(timeout=30)
        for bad, says in [
            (b"definitely not audio", "Bad audio"),
            (silence_wav(1), "No speech"),
            (b"\0" * (10 * 1024 * 1024 + 1), "limit"),
            ("hello there", "Unknown text message"),
        ]:
            ws.send(bad)
            message = json.loads(ws.recv(timeout=30))
            assert message["type"] == "error" and says in message["message"], message
        ws.send("END_CONNECTION_REQUEST_BY_CLIENT")
    assert len(history(tiny_app, call_id)) == 1


def test_voice_chat_disconnect_mid_turn_leaves_a_whole_turn(tiny_app, question_wav):
    call_id = start_call(tiny_app)
    with connect(ws_url(tiny_app, call_id), max_size=None) as ws:
        ws.recv(timeout=30)
        ws.send(question_wav)
        assert json.loads(ws.recv(timeout=60))["type"] == "user_text"
        # Gone while the reply is being generated.
    # The turn runs to its end and is stored whole: customer line and agent reply together.
    turn = wait_until(lambda: len(h := history(tiny_app, call_id)) == 3 and h, 60, what="turn")
    assert [e["speaker"] for e in turn] == ["agent", "customer", "agent"]


def test_voice_chat_falls_back_to_text_when_tts_fails(mute_app, question_wav):
    call_id = start_call(mute_app)
    with connect(ws_url(mute_app, call_id), max_size=None) as ws:
        first = json.loads(ws.recv(timeout=30))
        assert first["type"] == "agent_text" and "Ann" in first["text"]
        ws.send(question_wav)
        assert json.loads(ws.recv(timeout=60))["type"] == "user_text"
        reply = json.loads(ws.recv(timeout=60))
        assert reply["type"] == "agent_text" and reply["text"]
        assert history(mute_app, call_id)[-1]["text"] == reply["text"]


def test_voice_chat_reports_stt_failure_and_stays_open(deaf_app, question_wav):
    call_id = start_call(deaf_app)
    with connect(ws_url(deaf_app, call_id), max_size=None) as ws:
        assert is_wav(ws.recv(timeout=30))
        ws.send(question_wav)
        message = json.loads(ws.recv(timeout=60))
        assert message["type"] == "error" and message["message"].startswith("STT failed")
        ws.send(json.dumps({"type": "control", "command": "end_call"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "system"


def test_voice_client_holds_a_conversation(tiny_app, question_wav):
    call_id = start_call(tiny_app)
    conversation = asyncio.run(converse(tiny_app, call_id, [question_wav, question_wav]))
    assert is_wav(conversation.greeting_audio)
    first = conversation.turns[0]
    assert word_error_rate(QUESTION, first.transcript) <= MAX_WER
    assert is_wav(first.agent_audio) and first.voice_to_voice_s > 0
    # The client stops when the agent ends the call.
    assert len(conversation.turns) == (1 if first.ended else 2)
    active = httpx.get(f"{tiny_app}{API}/conversation/{call_id}").json()["is_active"]
    assert active is not conversation.turns[-1].ended
