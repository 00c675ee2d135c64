"""The guardrails, alone: each failure class heard from the shipped model is caught, and
the catalog's own wording passes."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from salesagent.platform.sessions import Speaker, entry
from salesagent.sales.call_state import CallState, CustomerIntent, Stage
from salesagent.sales.catalog import load_catalog
from salesagent.sales.conversation import instruction_text, reply_messages
from salesagent.sales.follow_up import follow_up_for, lead_timezone, spoken
from salesagent.sales.guardrails import Context, Problem, check

CATALOG = load_catalog()
# The instruction the model once read out ("That's okay! If you're busy right now, ...").
OLD_BUSY_PROMPT = "The customer is busy right now: offer to call back at a better time, briefly."


def context(line: str, said: str = "", instructions: str = OLD_BUSY_PROMPT) -> Context:
    return Context(CATALOG, instructions, line, f"{said} {line}", "Raj")


@pytest.mark.parametrize(
    ("sentence", "line", "problem"),
    [
        (
            "That's okay! If you're busy right now, you can offer to call back at a better "
            "time, briefly.",
            "I'm busy.",
            Problem.INSTRUCTIONS,
        ),
        ("Yes, we guarantee you a job afterwards.", "Will I get a job?", Problem.GUARANTEE),
        (
            "Yes, we have a payment plan that spreads it out.",
            "Can I pay later?",
            Problem.PAYMENT_TERMS,
        ),
        ("Sure, I can call you at 8 PM.", "Call me tonight.", Problem.DATE_TIME),
        ("I'll email you the brochure right away.", "Send me info.", Problem.PROMISE),
        ("You can get a full refund anytime.", "What if I quit?", Problem.REFUND),
        ("Yes, it will.", "Will this guarantee me a job afterwards?", Problem.AFFIRMATION),
        ("Absolutely!", "Can I get my money back if I don't like it?", Problem.AFFIRMATION),
        ("Sure thing.", "Can you just email me the details?", Problem.AFFIRMATION),
        ("Students get a 20% discount.", "I'm a student.", Problem.DISCOUNT),
        ("Hi Raj, this is Alex from Edvantage AI.", "How do I sign up?", Problem.REINTRODUCTION),
        (
            "How do I sign up for the AI Mastery Bootcamp?",
            "How do I sign up?",
            Problem.CUSTOMER_WORDS,
        ),
        ("I'm glad you found our Bootcamp helpful.", "Don't call me again.", Problem.LEAD_CLAIM),
        ("As a nurse, you'll love the projects.", "I'm a teacher.", Problem.LEAD_CLAIM),
        (
            "The weather in Edvantage AI is pleasant and sunny.",
            "How's the weather?",
            Problem.OFF_SCRIPT,
        ),
        ("How can I assist you today?", "Hello?", Problem.ASSISTANT),
        ("The customer is interested in learning about the cost.", "Price?", Problem.INSTRUCTIONS),
        ("The bootcamp costs $499.", "How much is it?", Problem.PRICE_WITHOUT_OFFER),
        ("It costs $99.", "How much is it?", Problem.UNSUPPORTED),
    ],
)
def test_each_failure_class_heard_is_caught(sentence, line, problem):
    assert check(sentence, context(line)) is problem
    assert problem.is_commitment == (
        problem
        in {
            "guarantee",
            "payment_terms",
            "date_time",
            "promise",
            "refund",
            "discount",
            "affirmation",
        }
    )


@pytest.mark.parametrize(
    "sentence",
    [
        "Right now there's a special offer: $299 instead of the standard $499.",
        "The special offer is a discount from $499 to $299.",
        "It's 12 weeks of live online classes, with evening and weekend sessions.",
        "As a teacher, you'll like the hands-on projects.",
        "You mentioned you teach math, so the projects will fit well.",
        "What would you most like to achieve with AI skills?",
        "We cover Large Language Models, Computer Vision and MLOps.",
    ],
)
def test_sound_sentences_pass(sentence):
    said = "I'm a high school math teacher. I teach math and want to learn AI."
    assert check(sentence, context("Tell me more.", said)) is None


def test_a_yes_to_a_plain_question_is_fine():
    assert (
        check("Yes, we have evening and weekend sessions.", context("Any evening classes?")) is None
    )


def test_prompt_wording_is_found_in_the_real_prompt_but_not_its_facts():
    state = CallState(stage=Stage.PITCH)
    history = [entry(Speaker.CUSTOMER, "Go on.")]
    messages = reply_messages(CATALOG, "Raj Patel", history, CustomerIntent.CONTINUE, 4, state)
    ctx = Context(CATALOG, instruction_text(messages), "Go on.", "Go on.", "Raj")
    assert check("Pitch the one or two benefits that fit what they told you.", ctx) is (
        Problem.INSTRUCTIONS
    )
    # The catalog's facts sit in the same prompt, and may be said word for word.
    assert check("Mentors from industry who review your work every week.", ctx) is None


def test_approved_answers_and_scripted_lines_would_pass_their_own_checks():
    """The service says them without the check; none of them should need it."""
    ctx = context("Tell me more.", instructions="")
    for topic, answer in CATALOG.answers.items():
        problem = check(answer.answer, ctx)
        # The approved answers may speak of what the model may not: that is their point.
        assert problem is None or problem.is_commitment, (topic, problem)


NOW = datetime(2026, 12, 2, 10, 0, tzinfo=ZoneInfo("UTC"))


def test_a_call_back_time_is_read_in_the_leads_time_zone():
    # 10:00 UTC is 05:00 in New York: "tomorrow at 3pm" is 15:00 there, on Dec 3.
    booked = follow_up_for("Tomorrow at 3pm works for me.", "+12125550123", "UTC", NOW)
    assert booked.timezone == "America/New_York" and booked.timezone_from == "phone_number"
    assert booked.at == "2026-12-03T15:00:00-05:00"
    assert spoken(booked, NOW) == "tomorrow at 3 PM"
    morning = follow_up_for("Friday morning is better", "+14155550100", "UTC", NOW)
    assert morning.at.startswith("2026-12-04T09:00") and morning.timezone == "America/Los_Angeles"


@pytest.mark.parametrize(
    ("line", "hour"),
    [
        ("Friday at 10 in the morning.", "10:00"),  # was booked at 9: "at 10" went unread
        ("Thursday at 3", "15:00"),
        ("tomorrow at 8 in the evening", "20:00"),
        ("around 4 o'clock tomorrow", "16:00"),
        ("at 9:30 on Monday", "09:30"),
    ],
)
def test_a_bare_hour_is_read_as_a_call_back_means_it(line, hour):
    assert f"T{hour}:00" in follow_up_for(line, "+12125550123", "UTC", NOW).at


def test_no_usable_time_books_nothing_and_an_unknown_zone_uses_the_setting():
    for line in ["I'm busy.", "Next week.", "tomorrow", "How much does it cost?", "I may be free"]:
        assert follow_up_for(line, "+12125550123", "UTC", NOW) is None, line
    assert lead_timezone("+15555550123", "Europe/Berlin") == ("Europe/Berlin", False)
    booked = follow_up_for("Call me in two hours.", "+15555550123", "Europe/Berlin", NOW)
    assert booked.at == "2026-12-02T13:00:00+01:00" and booked.timezone_from == "default"


def test_a_topic_is_cued_by_the_start_of_a_word():
    assert CATALOG.cued_topics("I feel it might be good for me") == []
    assert CATALOG.cued_topics("Is there financing?") == ["payment_plan"]
    assert CATALOG.cued_topics("Is it $299?") == ["price"]
