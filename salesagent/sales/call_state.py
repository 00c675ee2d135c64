"""The typed state of a sales call beside its history: stage, lead qualification,
objections, and the disposition when it ends.

Each customer line is read by three short classification requests that vLLM constrains
to their labels (guided choice): the intent (in `conversation.py`), which qualification
fact it gives, and which objection it raises. The stage then follows from the state by
plain rules, and the disposition from how the call ended, so nothing is parsed out of
free text.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from salesagent.sales.facts import extract

Message = dict[str, str]


class CustomerIntent(StrEnum):
    """What the customer's latest line means for the call, as the classifier labels it."""

    CONTINUE = "continue"
    INTERESTED = "interested"
    BUSY = "busy"
    GOODBYE = "goodbye"
    NOT_INTERESTED = "not_interested"
    DO_NOT_CALL = "do_not_call"
    WRONG_PERSON = "wrong_person"
    VOICEMAIL = "voicemail"

    @property
    def ends_call(self) -> bool:
        return self in _ENDING_INTENTS


_ENDING_INTENTS = {
    CustomerIntent.GOODBYE,
    CustomerIntent.NOT_INTERESTED,
    CustomerIntent.DO_NOT_CALL,
    CustomerIntent.WRONG_PERSON,
    CustomerIntent.VOICEMAIL,
}


class Stage(StrEnum):
    INTRODUCTION = "introduction"
    QUALIFICATION = "qualification"
    PITCH = "pitch"
    OBJECTION_HANDLING = "objection_handling"
    CLOSING = "closing"


class Objection(StrEnum):
    PRICE = "price"
    TIME = "time"
    RELEVANCE = "relevance"
    TRUST = "trust"
    OTHER = "other"


class Disposition(StrEnum):
    INTERESTED = "interested"
    ENROLLED = "enrolled"
    FOLLOW_UP_BOOKED = "follow_up_booked"
    NOT_INTERESTED = "not_interested"
    DO_NOT_CALL = "do_not_call"
    WRONG_PERSON = "wrong_person"
    VOICEMAIL = "voicemail"
    NO_ANSWER = "no_answer"  # a phone call not answered: busy, no answer, or cancelled
    FAILED = "failed"


class Qualification(BaseModel):
    background: str | None = None
    goal: str | None = None
    timeline: str | None = None
    budget: str | None = None
    decision_maker: str | None = None

    def known(self) -> int:
        return sum(value is not None for value in self.model_dump().values())


class FollowUp(BaseModel):
    """A call-back the lead asked for, at a time a dialer can use."""

    at: str  # ISO 8601 with the lead's UTC offset
    timezone: str  # IANA name
    timezone_from: str  # "phone_number", or "default" (the setting) when the number says none
    said: str  # the lead's words it was read from


class CallState(BaseModel):
    stage: Stage = Stage.INTRODUCTION
    qualification: Qualification = Field(default_factory=Qualification)
    # For audit: the customer line each qualification value was taken from.
    qualification_sources: dict[str, str] = Field(default_factory=dict)
    objections: list[Objection] = Field(default_factory=list)
    interested: bool = False
    # Questions the agent handed to the team (an approved "we'll follow up" answer, or a
    # claim it may not make), in the lead's words.
    open_questions: list[str] = Field(default_factory=list)
    follow_up: FollowUp | None = None
    disposition: Disposition | None = None


class Slot(StrEnum):
    """Which qualification fact a customer line gives, as the classifier labels it."""

    NONE = "none"
    BACKGROUND = "background"
    GOAL = "goal"
    TIMELINE = "timeline"
    BUDGET = "budget"
    DECISION_MAKER = "decision_maker"


class LineReading(BaseModel):
    """What one customer line means: labels picked under guided decoding."""

    intent: CustomerIntent
    slot: Slot = Slot.NONE
    objection: Objection | None = None
    topic: str | None = None  # the catalog's approved answer the line asks for


def labelling_messages(
    instructions: str, examples: list[tuple[str, str]], customer_line: str
) -> list[Message]:
    """A classification request: instructions, worked examples as earlier turns (a 0.5B
    model labels far better with them), then the line to label."""
    messages = [{"role": "system", "content": instructions}]
    for line, label in examples:
        messages += [
            {"role": "user", "content": f'Customer: "{line}"'},
            {"role": "assistant", "content": label},
        ]
    return [*messages, {"role": "user", "content": f'Customer: "{customer_line}"'}]


def slot_messages(customer_line: str) -> list[Message]:
    return labelling_messages(
        "A customer on a sales call for an AI course said one line. Does it state a fact "
        "about the customer? background: their job, studies or experience. goal: a career "
        "or learning aim. timeline: when they want to start. budget: how much they can "
        "spend. decision_maker: someone else decides or pays. none: anything else: "
        "questions, yes or no, greetings, objections, requests. Answer with the label only.",
        [
            ("Yeah, go on, what's this about?", "none"),
            ("I'm a nurse and I just started learning Python.", "background"),
            ("How much is it?", "none"),
            ("I want to become a machine learning engineer.", "goal"),
            ("I'm too busy for this.", "none"),
            ("I was hoping to start next month.", "timeline"),
            ("Sounds good, how do I join?", "none"),
            ("I could spend maybe two hundred dollars.", "budget"),
            ("What's the schedule like?", "none"),
            ("My boss would have to approve it.", "decision_maker"),
            ("Okay, sure.", "none"),
        ],
        customer_line,
    )


def objection_messages(customer_line: str) -> list[Message]:
    """Whether the line pushes back at all (yes/no): a 0.5B model answers this far more
    reliably than a choice among kinds that includes "none"."""
    return labelling_messages(
        "A customer on a sales call for an AI course said one line. Is the customer pushing "
        "back against buying: saying it is too expensive, that they have no time, that it is "
        "of no use to them, or that they do not trust the offer? Questions, agreeing, and "
        "facts about themselves are not push back. Answer yes or no.",
        [
            ("Yeah, I've got a couple of minutes.", "no"),
            ("That's way too much money for me.", "yes"),
            ("What does the course include?", "no"),
            ("I work sixty hours a week, I can't fit it in.", "yes"),
            ("I'm a nurse and I want to learn Python.", "no"),
            ("Is this a scam?", "yes"),
            ("What's the price?", "no"),
            ("I don't need AI for what I do.", "yes"),
            ("Can you call me later?", "no"),
        ],
        customer_line,
    )


def objection_kind_messages(customer_line: str) -> list[Message]:
    """Which objection a pushing-back line raises (asked together with the yes/no)."""
    return labelling_messages(
        "A customer on a sales call for an AI course pushed back. Why? price: it costs too "
        "much or they cannot afford it. time: they have no time to study. relevance: it is "
        "of no use to them. trust: they doubt the caller or the offer. other: another "
        "reason. Answer with the label only.",
        [
            ("That's way too much money for me.", "price"),
            ("I work sixty hours a week, I can't fit it in.", "time"),
            ("Is this a scam?", "trust"),
            ("I don't need AI for what I do.", "relevance"),
            ("My wife would never let me.", "other"),
        ],
        customer_line,
    )


PUSHES_BACK = ["no", "yes"]
OBJECTION_CHOICES = [o.value for o in Objection]


def apply(
    state: CallState, reading: LineReading, customer_line: str, asked: Slot = Slot.NONE
) -> CallState:
    """The state after a customer line (`asked`: the slot the agent's line before it asked
    about): a new fact fills its empty slot with the value the line states, objections add
    up, the stage moves on, and an ending call gets its disposition."""
    known = state.qualification.model_dump()
    sources = dict(state.qualification_sources)
    # The reading's slot; else the one the agent asked for, whose value must then be
    # stated in so many words (a short answer counts only when the reading agrees).
    slot = (reading.slot if reading.slot is not Slot.NONE else asked).value
    if slot != Slot.NONE and not known[slot]:
        value = extract(slot, customer_line, answers_question=asked is reading.slot)
        if value:
            known[slot], sources[slot] = value, customer_line
    objections = list(state.objections)
    if reading.objection and reading.objection not in objections:
        objections.append(reading.objection)
    interested = state.interested or reading.intent in (
        CustomerIntent.INTERESTED,
        CustomerIntent.BUSY,
    )
    new = state.model_copy(
        update={
            "qualification": Qualification(**known),
            "qualification_sources": sources,
            "objections": objections,
            "interested": interested,
        }
    )
    new.stage = _next_stage(new, reading)
    if reading.intent.ends_call:
        new.disposition = disposition_for(new, reading.intent)
    return new


def _next_stage(state: CallState, reading: LineReading) -> Stage:
    """Rules, in order: ending, or agreeing once something is known about them -> closing;
    a fresh objection -> objection handling; once pitching, or with two qualification
    facts -> pitch; otherwise (also after an objection) -> qualification."""
    agreeing = reading.intent is CustomerIntent.INTERESTED and state.qualification.known() > 0
    if reading.intent.ends_call or agreeing:
        return Stage.CLOSING
    if reading.objection:
        return Stage.OBJECTION_HANDLING
    if state.stage in (Stage.PITCH, Stage.CLOSING) or state.qualification.known() >= 2:
        return Stage.PITCH if state.stage is not Stage.CLOSING else Stage.CLOSING
    return Stage.QUALIFICATION


def disposition_for(state: CallState, intent: CustomerIntent | None) -> Disposition:
    """How an ending call is recorded; `intent` None means the client hung up."""
    match intent:
        case None:  # hung up mid-call
            return Disposition.INTERESTED if state.interested else Disposition.FAILED
        case CustomerIntent.DO_NOT_CALL:
            return Disposition.DO_NOT_CALL
        case CustomerIntent.WRONG_PERSON:
            return Disposition.WRONG_PERSON
        case CustomerIntent.VOICEMAIL:
            return Disposition.VOICEMAIL
        case CustomerIntent.NOT_INTERESTED:
            return Disposition.NOT_INTERESTED
        case _ if state.follow_up is not None:
            return Disposition.FOLLOW_UP_BOOKED
        case _:
            return Disposition.INTERESTED if state.interested else Disposition.NOT_INTERESTED


def next_question(state: CallState, questions: dict[str, str]) -> str | None:
    """While qualifying, and after answering an objection before two facts are known, the
    open question for the first fact the agent still lacks."""
    if state.stage in (Stage.PITCH, Stage.CLOSING) or state.qualification.known() >= 2:
        return None
    known = state.qualification.model_dump()
    return next((questions[slot] for slot, value in known.items() if not value), None)


STAGE_GUIDANCE = {
    Stage.INTRODUCTION: "Answer briefly and ask about them.",
    Stage.QUALIFICATION: "Answer briefly and ask about them.",
    Stage.PITCH: "Pitch the one or two benefits that fit what they told you.",
    Stage.OBJECTION_HANDLING: "Answer their concern calmly with the facts, then check in.",
    Stage.CLOSING: "Ask for a soft commitment: to enroll, or to book a follow-up call.",
}
