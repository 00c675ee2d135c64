"""Pure conversation logic: prompts, intents and settings. The reply's streaming stages
(cleanup, sentences, grounding, the dialog policy) are tested in test_reply.py."""

import asyncio

from salesagent.platform.engine import Delta, warm_up
from salesagent.platform.sessions import Speaker, entry
from salesagent.platform.settings import Settings
from salesagent.sales.catalog import load_catalog
from salesagent.sales.conversation import (
    CustomerIntent,
    greeting,
    intent_messages,
    reply_messages,
    sample_turn,
)

CATALOG = load_catalog()


def test_greeting_names_customer_agent_and_asks_for_time():
    text = greeting(CATALOG, "John Doe")
    assert text.startswith("Hi John,")
    assert "Alex" in text and "Edvantage AI" in text
    assert text.endswith("?")


def test_system_prompt_carries_catalog_facts():
    history = [entry(Speaker.AGENT, "Hi"), entry(Speaker.CUSTOMER, "What is it?")]
    messages = reply_messages(CATALOG, "Jane Roe", history, CustomerIntent.CONTINUE, 16)
    system = messages[0]["content"]
    for fact in [
        "$299",
        "$499",
        "12 weeks",
        "MLOps",
        "Computer Vision",
        "Jane Roe",
        "AI assistant",
    ]:
        assert fact in system
    assert [m["role"] for m in messages[1:]] == ["assistant", "user"]


def test_reply_messages_keep_only_recent_history():
    history = [entry(Speaker.CUSTOMER if i % 2 else Speaker.AGENT, f"line {i}") for i in range(30)]
    messages = reply_messages(CATALOG, "Jane", history, CustomerIntent.CONTINUE, 4)
    assert [m["content"] for m in messages[1:]] == ["line 26", "line 27", "line 28", "line 29"]


def test_ending_intents_add_closing_instructions():
    history = [entry(Speaker.CUSTOMER, "bye")]
    closing = reply_messages(CATALOG, "Jo", history, CustomerIntent.NOT_INTERESTED, 4)[0]["content"]
    assert "not interested: respect that" in closing
    assert CustomerIntent.DO_NOT_CALL.ends_call and CustomerIntent.GOODBYE.ends_call
    assert not CustomerIntent.CONTINUE.ends_call and not CustomerIntent.BUSY.ends_call


def test_intent_request_ends_with_the_customer_line():
    history = [entry(Speaker.AGENT, "Hello?"), entry(Speaker.CUSTOMER, "Please stop calling.")]
    messages = intent_messages(history)
    assert messages[-1] == {"role": "user", "content": 'Customer: "Please stop calling."'}
    labels = {m["content"] for m in messages if m["role"] == "assistant"}
    assert labels == {i.value for i in CustomerIntent}  # every label has a worked example


def test_settings_merge_env_then_args(monkeypatch):
    monkeypatch.setenv("SALES_LLM__MAX_TOKENS", "33")
    monkeypatch.setenv("SALES_REDIS__URL", "redis://127.0.0.1:7000/1")
    settings = Settings.from_args({"llm": {"temperature": 0.1}, "health_timeout_s": 1.0})
    assert settings.llm.max_tokens == 33  # from the environment
    assert settings.llm.temperature == 0.1  # from args, beside it
    assert settings.redis.url == "redis://127.0.0.1:7000/1"
    assert settings.health_timeout_s == 1.0


def test_a_new_engine_is_warmed_with_a_real_turn_alone_then_several_at_once():
    """The warm-up sends what a turn sends (every line-reading request, with a topic, and
    the reply prompt), first alone, then for `calls` calls together."""
    turn = sample_turn(CATALOG)
    assert [choices for _, choices in turn.choices][-1] == ["price", "schedule"]
    assert turn.reply[0]["role"] == "system" and turn.reply[-1]["role"] == "user"
    log: list[tuple[str, int]] = []
    running = 0

    class Engine:
        async def choose(self, messages, choices):
            nonlocal running
            running += 1
            log.append(("choose", running))
            await asyncio.sleep(0.01)
            running -= 1
            return choices[0]

        async def stream_chat(self, messages, max_tokens=None):
            log.append(("reply", max_tokens))
            yield Delta("Hi", 1)

    asyncio.run(warm_up(Engine(), turn, calls=3))
    per_turn = len(turn.choices)
    assert [kind for kind, _ in log].count("reply") == 4  # one alone, three together
    assert max(n for kind, n in log[: per_turn + 1] if kind == "choose") == per_turn
    assert max(n for kind, n in log if kind == "choose") == 3 * per_turn
