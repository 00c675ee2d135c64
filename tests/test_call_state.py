"""Call state rules, grounding checks and phone normalization: pure logic."""

import pytest

from salesagent.platform.phone import normalize_phone
from salesagent.sales.call_state import (
    CallState,
    CustomerIntent,
    Disposition,
    LineReading,
    Objection,
    Slot,
    Stage,
    apply,
    next_question,
)
from salesagent.sales.catalog import load_catalog
from salesagent.sales.grounding import unsupported_facts

CATALOG = load_catalog()


def read(intent="continue", slot="none", objection=None) -> LineReading:
    return LineReading(
        intent=CustomerIntent(intent),
        slot=Slot(slot),
        objection=Objection(objection) if objection else None,
    )


def test_a_call_moves_through_the_stages():
    state = CallState()
    state = apply(state, read(), "Sure, what is it about?")
    assert state.stage is Stage.QUALIFICATION
    state = apply(state, read(slot="background"), "I'm a data analyst.")
    state = apply(state, read(slot="goal"), "I want to get into machine learning.")
    assert state.stage is Stage.PITCH
    # The value the line states, with the line it came from kept for audit.
    assert state.qualification.background == "data analyst"
    assert state.qualification_sources["background"] == "I'm a data analyst."
    state = apply(state, read(objection="price"), "That's expensive.")
    assert state.stage is Stage.OBJECTION_HANDLING and state.objections == [Objection.PRICE]
    state = apply(state, read(), "Okay, tell me more.")
    assert state.stage is Stage.PITCH
    state = apply(state, read(intent="interested"), "How do I sign up?")
    assert state.stage is Stage.CLOSING and state.interested
    state = apply(state, read(intent="goodbye"), "Great, talk tomorrow, bye.")
    # No time was booked: an interested lead, not a follow-up the dialer can call.
    assert state.disposition is Disposition.INTERESTED


def test_enthusiasm_before_qualifying_keeps_qualifying():
    state = apply(CallState(), read(intent="interested"), "Yes, tell me about it!")
    assert state.stage is Stage.QUALIFICATION and state.interested


def test_an_objection_while_qualifying_is_answered_then_qualifying_goes_on():
    questions = CATALOG.qualification_questions
    state = apply(CallState(), read(objection="time"), "I'm really busy these days.")
    assert state.stage is Stage.OBJECTION_HANDLING
    # The answer to the objection still asks for the first missing fact ...
    assert next_question(state, questions) == questions["background"]
    state = apply(state, read(slot="background"), "I'm a nurse.")
    assert state.stage is Stage.QUALIFICATION
    assert next_question(state, questions) == questions["goal"]
    # ... and with two facts known the agent pitches instead of asking more.
    state = apply(state, read(slot="goal"), "I want to work in health AI.")
    assert state.stage is Stage.PITCH and next_question(state, questions) is None


def test_known_slots_are_not_overwritten():
    # A short answer to the agent's question for the slot is the value as it stands.
    state = apply(CallState(), read(slot="goal"), "Become an ML engineer.", asked=Slot.GOAL)
    state = apply(state, read(slot="goal"), "I want something else.")
    assert state.qualification.goal == "Become an ML engineer"


def test_a_question_or_a_line_without_a_value_is_never_a_fact():
    for line in ["How much does it cost?", "Sure, I have a few minutes. What is it about?"]:
        state = apply(CallState(), read(slot="budget"), line)
        assert state.qualification.budget is None and not state.qualification_sources
    # Without the agent asking for it, a bare phrase is no value either.
    assert apply(CallState(), read(slot="goal"), "Something else.").qualification.goal is None


@pytest.mark.parametrize(
    ("intent", "disposition"),
    [
        ("do_not_call", Disposition.DO_NOT_CALL),
        ("wrong_person", Disposition.WRONG_PERSON),
        ("voicemail", Disposition.VOICEMAIL),
        ("not_interested", Disposition.NOT_INTERESTED),
        ("goodbye", Disposition.NOT_INTERESTED),
    ],
)
def test_ending_intents_set_the_disposition(intent, disposition):
    state = apply(CallState(), read(intent=intent), "...")
    assert state.disposition is disposition and state.stage is Stage.CLOSING


def test_grounding_accepts_catalog_facts_and_flags_invented_ones():
    assert unsupported_facts("It's $299 instead of $499, 12 weeks, you save 40%.", CATALOG) == []
    assert unsupported_facts("Twelve weeks, about three months.", CATALOG) == []
    assert unsupported_facts("Only $199 for 8 weeks, 50% off!", CATALOG) == [
        "$199",
        "8 weeks",
        "50%",
    ]


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("123-456-7890", "+11234567890"),
        ("(123) 456 7890", "+11234567890"),
        ("+1 123.456.7890", "+11234567890"),
        ("1-415-555-2671", "+14155552671"),
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),
    ],
)
def test_phone_numbers_normalize(raw, normalized):
    assert normalize_phone(raw) == normalized


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("123", "wrong number of digits"),
        ("+44 12", "wrong number of digits"),
        ("CALL-NOW", "only digits"),
        ("+1 555 1234 5678 9012", "wrong number of digits"),
    ],
)
def test_impossible_phone_numbers_say_what_is_wrong(raw, says):
    with pytest.raises(ValueError, match=says):
        normalize_phone(raw)


def test_an_answer_to_the_agents_question_is_read_even_when_the_reading_missed_it():
    # The 0.5B reading once labelled "I'm a data analyst." as no fact, and the agent asked
    # for the lead's work again.
    state = apply(CallState(), read(), "I'm a data analyst.", asked=Slot.BACKGROUND)
    assert state.qualification.background == "data analyst"
    # Without a pattern the reading must agree: "Sure, go ahead." is no background.
    assert (
        apply(CallState(), read(), "Sure, go ahead.", asked=Slot.BACKGROUND).qualification.known()
        == 0
    )
