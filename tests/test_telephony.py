"""Phone calls through the Twilio bridge, against a simulated Twilio (salesagent.telephony.
simulator: its REST API, webhooks and Media Streams as Twilio documents them), with the
real graph: Silero VAD, Whisper, the vLLM engine (tiny model) and the real voice. The
callee speaks real speech as mu-law at 8 kHz, in real time."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import wave

import httpx
import numpy as np
import pytest
from ray import serve
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from salesagent.platform.settings import TelephonySettings
from salesagent.telephony.carrier import Carrier
from salesagent.telephony.media_stream import MediaStreamSocket, StreamStart
from salesagent.telephony.simulator import Callee, PhoneLine, from_ulaw, ulaw
from tests.conftest import API, deploy_graph, free_port, tiny_args, wait_until
from tests.phone import (
    AUTH_TOKEN,
    PhoneApp,
    conversation,
    dial,
    phone_speech,
    simulated_twilio,
    telephony_args,
)
from tests.speech import word_error_rate

QUESTION = "How much does the course cost, and how long does it take?"
INTERRUPTION = "Wait, do you have evening classes for people who work?"


@pytest.fixture(scope="module")
def phone(serve_instance, redis_server, tiny_model_dir, tiny_app):
    """The graph with telephony on (sharing the tiny app's LLM replica), at /phone."""
    port = free_port()
    args = tiny_args(tiny_model_dir, redis_server.url)
    args["telephony"] = telephony_args(f"{serve_instance}/phone", port)
    yield PhoneApp(deploy_graph("phone", serve_instance, args), port)
    serve.delete("phone")


def run_with_twilio(app: PhoneApp, scenario):
    """Run `scenario(twilio)` with the simulated Twilio listening where the app expects it."""

    async def main():
        twilio = simulated_twilio()
        await twilio.start(app.twilio_port)
        try:
            return await scenario(twilio)
        finally:
            await twilio.stop()

    return asyncio.run(main())


def carrier_statuses(call: dict) -> list[str]:
    return [e["status"] for e in call["carrier"]["events"]]


# --- whole calls ----------------------------------------------------------------------------


def test_an_outbound_call_of_two_turns(phone):
    first_audio = []

    async def callee(line: PhoneLine):
        await line.until_agent_quiet()  # the greeting, whole
        for text in (QUESTION, "I teach math at a high school."):
            await line.say(phone_speech(text))
            first_audio.append(await line.until_agent_speaks())
            await line.until_agent_quiet()
        await line.hang_up()

    dialed, sim = run_with_twilio(
        phone, lambda twilio: dial(phone, "+15550100101", Callee(script=callee), twilio)
    )
    line = sim.line
    assert line is not None and sim.statuses[-1] == "completed", sim.said
    assert line.agent_audio_s() > 5  # greeting and two replies, spoken as mu-law 8 kHz
    assert line.marks_echoed and line.clears == 0
    call = conversation(phone, dialed["call_id"])
    history = call["history"]
    assert [e["speaker"] for e in history] == ["agent", "customer", "agent", "customer", "agent"]
    assert history[0]["text"] == dialed["first_message"]
    assert word_error_rate(QUESTION, history[1]["text"]) <= 0.25  # through mu-law and back
    assert not call["is_active"] and call["state"]["disposition"]
    assert call["carrier"]["call_sid"] == sim.sid and call["carrier"]["direction"] == "outbound"
    assert carrier_statuses(call) == [
        "queued",
        "initiated",
        "ringing",
        "in-progress",
        "in-progress",
        "completed",
    ]
    assert call["carrier"]["answered_by"] == "human"
    assert len(first_audio) == 2 and all(0 < s < 60 for s in first_audio)
    # The carrier's events reach the metrics.
    wait_until(
        lambda: 'event="answered"' in httpx.get(f"{phone.url}/metrics").text, 30, what="metrics"
    )


def test_a_barge_in_clears_twilio_and_keeps_what_was_heard(phone):
    async def callee(line: PhoneLine):
        await line.until_agent_has_said(2.0)  # two seconds into the greeting
        await line.say(phone_speech(INTERRUPTION))
        await line.until_agent_speaks()
        await line.until_agent_quiet()
        await line.hang_up()

    dialed, sim = run_with_twilio(
        phone, lambda twilio: dial(phone, "+15550100102", Callee(script=callee), twilio)
    )
    assert sim.line.clears >= 1  # Twilio was told to drop the queued greeting
    history = conversation(phone, dialed["call_id"])["history"]
    greeting = history[0]
    assert greeting["interrupted"] is True
    assert greeting["text"] and dialed["first_message"].startswith(greeting["text"])
    assert len(greeting["text"]) < len(dialed["first_message"])
    assert history[1]["speaker"] == "customer"
    assert word_error_rate(INTERRUPTION, history[1]["text"]) <= 0.3
    assert history[2]["speaker"] == "agent"  # the interruption was answered


def test_the_opt_out_key_lists_the_number_confirms_and_hangs_up(phone):
    async def callee(line: PhoneLine):
        await line.until_agent_has_said(1.0)
        await line.press("9")
        await line.until_closed()

    number = "+15550100103"
    dialed, sim = run_with_twilio(
        phone, lambda twilio: dial(phone, number, Callee(script=callee), twilio)
    )
    call = conversation(phone, dialed["call_id"])
    assert call["state"]["disposition"] == "do_not_call" and not call["is_active"]
    assert call["history"][-2]["text"] == "(pressed 9: do not call me again)"
    assert "won't call you again" in call["history"][-1]["text"]
    assert sim.line.clears >= 1  # the greeting stopped at the key
    assert sim.hung_up_by_api  # the agent hung up, after the confirmation played
    assert sim.line.marks_echoed  # ...which it knew from the echoed marks
    r = httpx.post(f"{phone.url}{API}/dial", json={"phone_number": number, "customer_name": "A"})
    assert r.status_code == 403  # the number is not called again


def test_a_callee_who_hangs_up_mid_reply_ends_the_call(phone):
    async def callee(line: PhoneLine):
        await line.until_agent_quiet()
        await line.say(phone_speech(QUESTION))
        await line.until_agent_has_said(0.5)  # into the reply
        await line.hang_up()

    dialed, sim = run_with_twilio(
        phone, lambda twilio: dial(phone, "+15550100104", Callee(script=callee), twilio)
    )
    call = conversation(phone, dialed["call_id"])
    assert not call["is_active"] and call["state"]["disposition"]
    assert not sim.hung_up_by_api  # the callee hung up; nothing to hang up
    history = call["history"]
    assert [e["speaker"] for e in history] == ["agent", "customer", "agent"]
    assert history[2]["interrupted"] is True  # kept as far as it was heard
    assert carrier_statuses(call)[-1] == "completed"


def test_an_answering_machine_gets_the_voicemail_message(phone):
    dialed, sim = run_with_twilio(
        phone, lambda twilio: dial(phone, "+15550100105", Callee(answer="machine"), twilio)
    )
    assert sim.line is None  # no stream: the message is said and the call hung up
    assert sim.said and "try you again" in sim.said[0]
    call = conversation(phone, dialed["call_id"])
    assert call["state"]["disposition"] == "voicemail" and not call["is_active"]
    assert call["history"][-1]["text"] == sim.said[0]
    assert call["carrier"]["answered_by"] == "machine_end_beep"


@pytest.mark.parametrize("answer", ["busy", "no-answer"])
def test_a_busy_or_unanswered_phone_ends_the_call_as_no_answer(phone, answer):
    number = "+1555010011" + str(len(answer))
    dialed, sim = run_with_twilio(
        phone, lambda twilio: dial(phone, number, Callee(answer=answer), twilio)
    )
    call = conversation(phone, dialed["call_id"])
    assert call["state"]["disposition"] == "no_answer" and not call["is_active"]
    assert call["carrier"]["status"] == answer and sim.line is None
    assert len(call["history"]) == 1  # the greeting, never spoken


def test_several_phone_calls_at_once(phone):
    async def callee(line: PhoneLine):
        await line.until_agent_quiet()
        await line.say(phone_speech("What would I learn there?"))
        await line.until_agent_speaks()
        await line.until_agent_quiet()
        await line.hang_up()

    async def scenario(twilio):
        numbers = [f"+155501002{n:02d}" for n in range(3)]
        return await asyncio.gather(
            *(dial(phone, n, Callee(script=callee), twilio) for n in numbers)
        )

    for dialed, sim in run_with_twilio(phone, scenario):
        history = conversation(phone, dialed["call_id"])["history"]
        assert [e["speaker"] for e in history] == ["agent", "customer", "agent"], sim.said
        assert sim.statuses[-1] == "completed"


def test_an_inbound_call_reaches_the_agent_and_a_listed_number_is_refused(phone):
    async def callee(line: PhoneLine):
        await line.until_agent_quiet()
        await line.hang_up()

    async def scenario(twilio):
        voice_url = f"{phone.url}{API}/twilio/voice"
        welcome = await twilio.incoming_call(
            voice_url, "(555) 010-0301", "+15005550006", Callee(script=callee)
        )
        refused = await twilio.incoming_call(voice_url, "+15550100103", "+15005550006", Callee())
        return welcome, refused

    welcome, refused = run_with_twilio(phone, scenario)
    assert welcome.line is not None and welcome.line.agent_audio_s() > 3
    calls = httpx.get(f"{phone.url}{API}/calls").json()["calls"]
    inbound = next(c for c in calls if c["phone_number"] == "+15550100301")
    call = conversation(phone, inbound["call_id"])
    assert "thanks for calling back" in call["history"][0]["text"]
    assert call["carrier"]["direction"] == "inbound" and not call["is_active"]
    # +15550100103 opted out in an earlier test: told so, and hung up on.
    assert refused.line is None and "asked us not to call" in refused.said[0]


# --- who may ask ----------------------------------------------------------------------------


def test_webhooks_without_a_valid_signature_get_403(phone, client):
    call_id = client.post(
        f"{API}/start-call", json={"phone_number": "555-010-0400", "customer_name": "Bo"}
    ).json()["call_id"]
    form = {"CallSid": "CA1", "CallStatus": "completed"}
    for path in (f"/twilio/status?call_id={call_id}", f"/twilio/voice?call_id={call_id}"):
        for headers in ({}, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}):
            r = httpx.post(f"{phone.url}{API}{path}", data=form, headers=headers)
            assert r.status_code == 403 and "X-Twilio-Signature" in r.json()["detail"]
    assert client.get(f"{API}/conversation/{call_id}").json()["is_active"]  # nothing changed


def media_stream_refused(phone: PhoneApp, parameters: dict) -> tuple[int, int]:
    """Open the Media Streams socket as Twilio would; the close code and the agent audio."""

    async def main():
        url = phone.url.replace("http://", "ws://") + f"{API}/twilio/media-stream"
        audio = 0
        async with connect(url) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call"}))
            start = {
                "streamSid": "MZ1",
                "callSid": "CA1",
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": parameters,
            }
            await ws.send(json.dumps({"event": "start", "streamSid": "MZ1", "start": start}))
            with pytest.raises(ConnectionClosed):
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    audio += message.get("event") == "media"
        return ws.close_code, audio

    return asyncio.run(main())


def test_a_media_stream_without_a_valid_token_or_for_an_ended_call_is_closed(phone, client):
    call_id = client.post(
        f"{API}/start-call", json={"phone_number": "555-010-0401", "customer_name": "Cy"}
    ).json()["call_id"]
    carrier = Carrier(TelephonySettings(**telephony_args(phone.url, phone.twilio_port)))
    for parameters in ({"call_id": call_id}, {"call_id": call_id, "token": "1.forged"}):
        assert media_stream_refused(phone, parameters) == (1008, 0)
    other_token = carrier.stream_token("00000000-0000-0000-0000-000000000000")
    assert media_stream_refused(phone, {"call_id": call_id, "token": other_token}) == (1008, 0)
    ended = client.post(
        f"{API}/start-call", json={"phone_number": "555-010-0402", "customer_name": "Di"}
    ).json()["call_id"]
    end_call(client, ended)
    code, audio = media_stream_refused(
        phone, {"call_id": ended, "token": carrier.stream_token(ended)}
    )
    assert code == 1008 and audio == 0


def end_call(client: httpx.Client, call_id: str) -> None:
    """End a call through the contract's WebSocket control message."""
    url = str(client.base_url).replace("http://", "ws://")
    with sync_connect(f"{url}/ws/voice-chat/{call_id}") as ws:
        ws.send(json.dumps({"type": "control", "command": "end_call"}))
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=30)
    assert not client.get(f"{API}/conversation/{call_id}").json()["is_active"]


def test_without_telephony_settings_the_endpoints_say_what_to_set(client):
    r = client.post(f"{API}/dial", json={"phone_number": "555-010-0500", "customer_name": "Ed"})
    assert r.status_code == 503 and "telephony.account_sid" in r.json()["detail"]
    r = client.post(f"{API}/twilio/voice", data={"CallSid": "CA1"})
    assert r.status_code == 404 and "telephony.public_base_url" in r.json()["detail"]


def test_a_call_twilio_refuses_is_ended_as_failed(phone):
    async def scenario(twilio):
        twilio.caller_number = "+15005550009"  # the account does not own our caller number
        async with httpx.AsyncClient(timeout=60) as c:
            return await c.post(
                f"{phone.url}{API}/dial",
                json={"phone_number": "+15550100601", "customer_name": "Flo"},
            )

    r = run_with_twilio(phone, scenario)
    assert r.status_code == 502 and "21212" in r.json()["detail"]
    calls = httpx.get(f"{phone.url}{API}/calls").json()["calls"]
    failed = next(c for c in calls if c["phone_number"] == "+15550100601")
    call = conversation(phone, failed["call_id"])
    assert call["state"]["disposition"] == "failed" and call["carrier"]["status"] == "failed"


# --- the codec, and mu-law ------------------------------------------------------------------


def test_mulaw_speech_still_transcribes(client):
    """Speech through the phone's encoding and back is transcribed within the same bound."""
    call_id = client.post(
        f"{API}/start-call", json={"phone_number": "555-010-0700", "customer_name": "Gil"}
    ).json()["call_id"]
    samples = from_ulaw(ulaw(phone_speech(QUESTION)))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    r = client.post(
        f"{API}/respond-audio/{call_id}", files={"audio_file": ("q.wav", buffer.getvalue())}
    )
    assert r.status_code == 200
    heard = client.get(f"{API}/conversation/{call_id}").json()["history"][1]["text"]
    assert word_error_rate(QUESTION, heard) <= 0.25, heard


class _Socket:
    def __init__(self, incoming):
        self.incoming, self.sent, self.closed = list(incoming), [], None

    async def receive(self):
        if not self.incoming:
            await asyncio.Event().wait()  # nothing more comes
        return self.incoming.pop(0)

    async def send_json(self, data):
        self.sent.append(data)

    async def send_bytes(self, data):
        raise AssertionError("Twilio takes no binary messages")

    async def close(self, code=1000, reason=None):
        self.closed = code


def text(event: dict) -> dict:
    return {"type": "websocket.receive", "text": json.dumps(event)}


async def test_the_codec_translates_twilio_messages_both_ways():
    frame = ulaw(np.full(160, 0.25, np.float32))
    socket = _Socket(
        [
            text({"event": "media", "media": {"track": "inbound", "payload": "!!not base64"}}),
            text({"event": "media", "media": {"track": "outbound", "payload": ""}}),
            text({"event": "media", "media": {"payload": base64.b64encode(frame).decode()}}),
            text({"event": "dtmf", "dtmf": {"digit": "5"}}),
            text({"event": "dtmf", "dtmf": {"digit": "9"}}),
            text({"event": "stop"}),
        ]
    )
    hung_up = []

    async def on_close():
        hung_up.append(True)

    stream = MediaStreamSocket(socket, StreamStart("MZ1", "CA1"), "9", on_close, 1.0)
    pcm = (await stream.receive())["bytes"]  # the bad payload and the other track: dropped
    assert len(pcm) == 320 and abs(np.frombuffer(pcm, "<i2").mean() / 32768 - 0.25) < 0.01
    assert json.loads((await stream.receive())["text"])["command"] == "do_not_call"  # "5" skipped
    assert (await stream.receive())["type"] == "websocket.disconnect"
    assert stream.hung_up

    # Out: a sentence's audio as media, a mark every 200 ms and at its end.
    out = _Socket([])
    stream = MediaStreamSocket(out, StreamStart("MZ2", "CA2"), "9", on_close, 0.2)
    await stream.send_json({"type": "agent_sentence", "id": 3, "samples": 4000})
    for _ in range(10):  # 0.5 s in 50 ms chunks
        await stream.send_bytes(b"\x00\x00" * 400)
    marks = [m["mark"]["name"] for m in out.sent if m["event"] == "mark"]
    assert marks == ["3:200", "3:400", "3:500"]
    assert all(m["streamSid"] == "MZ2" for m in out.sent)
    await stream.send_json({"type": "interrupted", "heard": ""})
    assert out.sent[-1] == {"event": "clear", "streamSid": "MZ2"}
    await stream.send_json({"type": "turn_done"})  # no Twilio counterpart: nothing sent
    assert out.sent[-1]["event"] == "clear"
    await stream.close()  # cleared marks are not waited for; then the hang-up
    assert hung_up == [True] and out.closed == 1000


def test_stream_tokens_expire_and_are_bound_to_their_call():
    carrier = Carrier(TelephonySettings(**telephony_args("https://agent.example.com", 1)))
    token = carrier.stream_token("call-a", now=1000.0)
    assert carrier.token_is_valid("call-a", token, now=1030.0)
    assert not carrier.token_is_valid("call-a", token, now=1061.0)  # expired
    assert not carrier.token_is_valid("call-b", token, now=1030.0)  # another call's
    assert not carrier.token_is_valid("call-a", token.replace(".", ".0"), now=1030.0)
    assert carrier.stream_url() == "wss://agent.example.com/api/v1/sales/twilio/media-stream"
    twiml = carrier.stream_twiml("call-a")
    assert '<Parameter name="call_id" value="call-a" />' in twiml and "<Connect>" in twiml
    assert AUTH_TOKEN not in twiml and AUTH_TOKEN not in repr(carrier.settings)
