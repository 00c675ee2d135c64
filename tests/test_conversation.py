"""Pure conversation logic: prompts, reply cleanup, intents and settings."""

from salesagent.catalog import load_catalog
from salesagent.conversation import (
    CustomerIntent,
    clean_reply,
    greeting,
    intent_messages,
    reply_is_complete,
    reply_messages,
)
from salesagent.sessions import Speaker, entry
from salesagent.settings import Settings

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
    closing = reply_messages(CATALOG, "Jo", history, CustomerIntent.DO_NOT_CALL, 4)[0]["content"]
    assert "not be called again" in closing
    assert CustomerIntent.DO_NOT_CALL.ends_call and CustomerIntent.GOODBYE.ends_call
    assert not CustomerIntent.CONTINUE.ends_call and not CustomerIntent.BUSY.ends_call


def test_intent_request_ends_with_the_customer_line():
    history = [entry(Speaker.AGENT, "Hello?"), entry(Speaker.CUSTOMER, "Please stop calling.")]
    messages = intent_messages(history)
    assert messages[-1] == {"role": "user", "content": 'Customer: "Please stop calling."'}
    labels = {m["content"] for m in messages if m["role"] == "assistant"}
    assert labels == {i.value for i in CustomerIntent}  # every label has a worked example


def test_clean_reply_drops_role_tags_and_other_speakers():
    raw = "Alex: Great question! The course runs 12 weeks.\nCustomer: ok\nAgent: more"
    assert clean_reply(raw, "John Doe", 2) == "Great question! The course runs 12 weeks."
    assert clean_reply("**Assistant:** Sure thing.<|im_end|>", "John", 2) == "Sure thing."
    assert clean_reply("Sounds good.\nJohn: what about price?", "John Doe", 2) == "Sounds good."
    assert clean_reply('"It covers MLOps."', "John", 2) == "It covers MLOps."


def test_clean_reply_keeps_at_most_two_sentences_and_may_be_empty():
    raw = "One. Two? Three! Four."
    assert clean_reply(raw, "Jo", 2) == "One. Two?"
    assert clean_reply("Customer: hi", "Jo", 2) == ""
    assert clean_reply("   ", "Jo", 2) == ""


def test_reply_is_complete_stops_after_enough_sentences():
    assert not reply_is_complete("One sentence. Half", 2)
    assert reply_is_complete("One. Two. Th", 2)
    assert reply_is_complete("Fine.\nCustomer:", 2)


def test_settings_merge_env_then_args(monkeypatch):
    monkeypatch.setenv("SALES_LLM__MAX_TOKENS", "33")
    monkeypatch.setenv("SALES_REDIS__URL", "redis://127.0.0.1:7000/1")
    settings = Settings.from_args({"llm": {"temperature": 0.1}, "health_timeout_s": 1.0})
    assert settings.llm.max_tokens == 33  # from the environment
    assert settings.llm.temperature == 0.1  # from args, beside it
    assert settings.redis.url == "redis://127.0.0.1:7000/1"
    assert settings.health_timeout_s == 1.0


def test_ai_disclosure_when_asked():
    from salesagent.conversation import with_ai_disclosure

    asked = with_ai_disclosure(
        "Yes, I'm Alex. How can I help?", "Am I talking to a robot?", CATALOG, 2
    )
    assert asked.startswith("I'm an AI assistant") and asked.count(".") + asked.count("?") <= 2
    # Not asked, or already said: unchanged.
    assert with_ai_disclosure("Sure.", "I want to get into AI.", CATALOG, 2) == "Sure."
    said = "I'm an AI assistant for Edvantage AI. Happy to help."
    assert with_ai_disclosure(said, "Are you human?", CATALOG, 2) == said


def test_refusals_are_unusable_and_questions_get_asked():
    from salesagent.conversation import with_question

    assert clean_reply("I'm sorry, but I can't assist with that.", "Jo", 2) == ""
    assert clean_reply("As an AI language model, I cannot sell.", "Jo", 2) == ""
    q = "What do you do for work at the moment?"
    assert with_question("It covers MLOps. And more.", q, 2) == f"It covers MLOps. {q}"
    assert with_question("Do you code already?", q, 2) == "Do you code already?"
    assert with_question("It covers MLOps.", None, 2) == "It covers MLOps."
