"""End to end through HTTP with the real Qwen2.5-Coder 0.5B model on vLLM (CPU).

Needs the prepared model (`python -m salesagent.platform.models`, which scripts/setup.sh runs).
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from ray import serve

from salesagent.platform.settings import default_llm_model
from salesagent.sales.evaluation import failed_thresholds, load_prospects, report, run_suite
from salesagent.telephony.simulator import Callee, PhoneLine
from tests.conftest import API, deploy, free_port
from tests.phone import PhoneApp, conversation, dial, phone_speech, simulated_twilio, telephony_args

# Words that show a reply is about the offer, the lead or the call.
ON_TOPIC = re.compile(
    r"bootcamp|course|program|week|llm|language model|vision|mlops|project|mentor|learn|"
    r"price|\$|offer|enrol|career|machine learning|\bai\b|skill|time|call|help|interest",
    re.I,
)
ROLE_TAGS = re.compile(r"(?:^|\s)(?:customer|user|assistant|agent|system|alex)\s*:|<\|", re.I)


TWILIO_PORT = free_port()  # where this module's simulated Twilio listens


@pytest.fixture(scope="module")
def real_app(serve_instance, redis_server):
    model = default_llm_model()
    if not (Path(model) / "prepared.json").exists():
        pytest.fail(f"the Qwen model is not prepared at {model}; run scripts/setup.sh")
    args = {
        "llm": {"max_model_len": 2048, "max_tokens": 80, "seed": 1},
        "redis": {"url": redis_server.url},
        "telephony": telephony_args(f"{serve_instance}/real", TWILIO_PORT),
    }
    url = deploy("real", "/real", args, serve_instance)
    yield url
    serve.delete("real")


def check_reply(reply: str, customer_line: str) -> None:
    assert reply.strip(), "empty reply"
    assert not ROLE_TAGS.search(reply), f"role tag in reply: {reply!r}"
    assert customer_line not in reply, f"reply repeats the customer's line: {reply!r}"
    assert "You are Alex" not in reply and "Facts you may use" not in reply  # no prompt leak


def test_a_sales_conversation_until_the_customer_says_goodbye(real_app):
    lines = [
        "Sure, I have a couple of minutes. What is this about?",
        "I'm a data analyst and I'd like to move into machine learning.",
        "How much does it cost?",
        "And how long does it take?",
    ]
    with httpx.Client(base_url=real_app, timeout=120) as c:
        r = c.post(
            f"{API}/start-call",
            json={"phone_number": "+1 555 010 0100", "customer_name": "Maria Lopez"},
        )
        assert r.status_code == 201
        call_id, greeting = r.json()["call_id"], r.json()["first_message"]
        assert "Maria" in greeting

        on_topic = 0
        for line in lines:
            r = c.post(f"{API}/respond/{call_id}", json={"message": line})
            assert r.status_code == 200, r.text
            body = r.json()
            check_reply(body["reply"], line)
            assert body["should_end_call"] is False, f"ended early after {line!r}: {body}"
            on_topic += bool(ON_TOPIC.search(body["reply"]))
        assert on_topic >= len(lines) - 1, "replies drifted off topic"

        r = c.post(
            f"{API}/respond/{call_id}", json={"message": "No thanks, I'm not interested. Goodbye."}
        )
        assert r.status_code == 200
        assert r.json()["should_end_call"] is True
        check_reply(r.json()["reply"], "No thanks")

        convo = c.get(f"{API}/conversation/{call_id}").json()
        assert convo["is_active"] is False and convo["end_time"]
        assert len(convo["history"]) == 1 + 2 * (len(lines) + 1)
        assert c.post(f"{API}/respond/{call_id}", json={"message": "hello?"}).status_code == 404


def test_concurrent_responds_on_one_call_are_serialized(real_app):
    questions = [
        "What topics does the course cover?",
        "How many weeks is the program?",
        "Do I get a certificate at the end?",
        "Can I attend the classes in the evening?",
        "What kind of projects will I build?",
        "Who reviews my work during the course?",
    ]
    with httpx.Client(base_url=real_app, timeout=300) as c:
        r = c.post(
            f"{API}/start-call", json={"phone_number": "555-010-0101", "customer_name": "Sam Lee"}
        )
        call_id = r.json()["call_id"]

        def ask(question: str) -> httpx.Response:
            return c.post(f"{API}/respond/{call_id}", json={"message": question})

        with ThreadPoolExecutor(len(questions)) as pool:
            responses = list(pool.map(ask, questions))
        assert [r.status_code for r in responses] == [200] * len(questions)
        history = c.get(f"{API}/conversation/{call_id}").json()["history"]

    assert len(history) == 1 + 2 * len(questions)
    # Each turn is a customer line immediately followed by the reply that request got:
    # nothing lost, nothing interleaved, timestamps never going backwards.
    reply_to = {q: r.json()["reply"] for q, r in zip(questions, responses, strict=True)}
    turns = list(zip(history[1::2], history[2::2], strict=True))
    assert all(q["speaker"] == "customer" and a["speaker"] == "agent" for q, a in turns)
    assert sorted(q["text"] for q, _ in turns) == sorted(questions)
    assert all(a["text"] == reply_to[q["text"]] for q, a in turns)
    stamps = [e["timestamp"] for e in history]
    assert stamps == sorted(stamps)


def test_a_do_not_call_request_ends_the_call_and_blocks_the_number(real_app):
    with httpx.Client(base_url=real_app, timeout=120) as c:
        r = c.post(
            f"{API}/start-call", json={"phone_number": "(555) 777-1234", "customer_name": "Lee"}
        )
        call_id = r.json()["call_id"]
        r = c.post(
            f"{API}/respond/{call_id}",
            json={"message": "Take me off your list and never call me again."},
        )
        assert r.json()["should_end_call"] is True
        state = c.get(f"{API}/conversation/{call_id}").json()["state"]
        assert state["disposition"] == "do_not_call" and state["stage"] == "closing"
        again = c.post(
            f"{API}/start-call", json={"phone_number": "+1 555-777-1234", "customer_name": "Lee"}
        )
        assert again.status_code == 403
        assert "asked not to be called again" in again.json()["detail"]


def test_the_evaluation_suite_meets_its_thresholds(real_app, capsys):
    results = asyncio.run(run_suite(real_app, load_prospects(), concurrency=4))
    table = report(results)
    with capsys.disabled():  # the report belongs in CI's output, pass or fail
        print(f"\n{table}")
    assert len(results) >= 20
    assert not failed_thresholds(results), table


def test_a_phone_call_of_several_turns_with_a_barge_in(real_app, capsys):
    """The whole outbound path with the real model: dial, Twilio's webhooks, Media Streams
    in real time, a barge-in over the agent's first reply, the callee hanging up."""
    phone = PhoneApp(real_app, TWILIO_PORT)
    first_audio: list[float] = []

    async def callee(line: PhoneLine):
        await line.until_agent_quiet()  # the greeting
        await line.say(phone_speech("Sure, I have a few minutes. What is it about?"))
        first_audio.append(await line.until_agent_speaks())
        await line.until_agent_has_said(1.0)  # into the reply...
        await line.say(phone_speech("Sorry, how much does it cost?"))  # ...talked over
        first_audio.append(await line.until_agent_speaks())
        await line.until_agent_quiet()
        await line.say(phone_speech("I work as a data analyst."))
        first_audio.append(await line.until_agent_speaks())
        await line.until_agent_quiet()
        await line.hang_up()

    async def main():
        twilio = simulated_twilio()
        await twilio.start(TWILIO_PORT)
        try:
            return await dial(phone, "+15550100900", Callee(script=callee), twilio)
        finally:
            await twilio.stop()

    dialed, sim = asyncio.run(main())
    call = conversation(phone, dialed["call_id"])
    with capsys.disabled():
        print(f"\nphone call, time to first agent audio (s): {[round(s, 2) for s in first_audio]}")
        for e in call["history"]:
            print(f"  {e['speaker']}{' (interrupted)' if e['interrupted'] else ''}: {e['text']}")
    history = call["history"]
    speakers = [e["speaker"] for e in history]
    assert speakers == ["agent", "customer", "agent", "customer", "agent", "customer", "agent"]
    assert history[2]["interrupted"] is True and sim.line.clears >= 1
    assert "cost" in history[3]["text"].lower()  # the interruption, heard through mu-law
    # What the small model says is the evaluation suite's to judge; here, that it spoke.
    for customer, agent in zip(history[1::2], history[2::2], strict=True):
        check_reply(agent["text"], customer["text"])
    assert not call["is_active"] and call["state"]["disposition"] in ("interested", "failed")
    assert call["carrier"]["status"] == "completed" and call["carrier"]["answered_by"] == "human"
    assert len(first_audio) == 3
