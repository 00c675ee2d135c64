"""The sales conversation: prompts, the end-of-call decision and spoken-reply cleanup.

Pure functions over plain data; the LLM is called elsewhere. The call ends on a
structured decision: the model picks one label out of `CustomerIntent` under
vLLM's guided decoding, so nothing is parsed out of free text.
"""

from __future__ import annotations

import re

from salesagent.platform.engine import SampleTurn
from salesagent.platform.sessions import HistoryEntry, Speaker, entry
from salesagent.sales.call_state import (
    OBJECTION_CHOICES,
    PUSHES_BACK,
    STAGE_GUIDANCE,
    CallState,
    CustomerIntent,
    LineReading,
    Message,
    Objection,
    Slot,
    labelling_messages,
    objection_kind_messages,
    objection_messages,
    slot_messages,
)
from salesagent.sales.catalog import Catalog
from salesagent.sales.facts import is_question


def first_name(customer_name: str) -> str:
    return customer_name.split()[0] if customer_name.split() else customer_name


def system_prompt(catalog: Catalog, customer_name: str) -> str:
    """The agent's instructions. Everything constant comes first and the customer's name
    last, so vLLM's prefix cache serves the same head to every call."""
    a, p = catalog.agent, catalog.product
    return (
        f"You are {a.name}, a friendly sales representative at {a.company}, on a phone call "
        f"with a customer. You are selling the {p.name}.\n"
        f"Facts you may use (never state any other price, duration or discount):\n"
        f"{catalog.facts()}\n"
        "How to run the call: introduce yourself; ask open questions about their background "
        "and goals; pitch only the benefits that fit what they told you; answer objections "
        "calmly with the facts above (for price, the special offer and what they get; for "
        "time, the evening and weekend sessions); close by asking them to enroll or to book "
        "a follow-up call.\n"
        "Style: you are speaking, not writing. Answer in one or two short sentences, no lists, "
        "no emojis, no markdown. Write only your own words, never the customer's. "
        "If asked, say honestly that you are an AI assistant.\n"
        f"The customer's name is {customer_name}."
    )


def greeting(catalog: Catalog, customer_name: str) -> str:
    """The opening line, from the catalog's script: it always names the customer and caller."""
    return scripted(catalog, catalog.agent.opening_line, customer_name)


def scripted(catalog: Catalog, line: str, customer_name: str = "", **fields: str) -> str:
    """One of the catalog's scripted lines, with its names (and `fields`) filled in."""
    a = catalog.agent
    return line.format(
        first_name=first_name(customer_name),
        agent=a.name,
        company=a.company,
        product=catalog.product.name,
        **fields,
    )


def _history_messages(history: list[HistoryEntry], limit: int) -> list[Message]:
    role = {Speaker.AGENT: "assistant", Speaker.CUSTOMER: "user"}
    return [{"role": role[e.speaker], "content": e.text} for e in history[-limit:]]


def reply_messages(
    catalog: Catalog,
    customer_name: str,
    history: list[HistoryEntry],
    intent: CustomerIntent,
    history_limit: int,
    state: CallState | None = None,
) -> list[Message]:
    """Chat messages for the agent's next reply; `history` ends with the customer's line.
    The call's state adds what is known about the lead and what to do next."""
    system = system_prompt(catalog, customer_name)
    if state is not None:
        facts = {k: v for k, v in state.qualification.model_dump().items() if v}
        if facts:
            system += "\nWhat the customer told you: " + "; ".join(
                f"{k.replace('_', ' ')}: {v}" for k, v in facts.items()
            )
        system += f"\nYour next step: {STAGE_GUIDANCE[state.stage]}"
    if intent in _CLOSING_INSTRUCTIONS:
        system += _CLOSING_INSTRUCTIONS[intent]
    return [{"role": "system", "content": system}, *_history_messages(history, history_limit)]


# Endings the model words; a do-not-call request, a voicemail and a call-back get the
# catalog's scripted lines instead (`service.AgentTurn`).
_CLOSING_INSTRUCTIONS = {
    CustomerIntent.GOODBYE: "\nThe customer is ending the call: thank them and say goodbye.",
    CustomerIntent.NOT_INTERESTED: (
        "\nThe customer is not interested: respect that, thank them and say goodbye."
    ),
    CustomerIntent.WRONG_PERSON: "\nThis is the wrong person: apologise and say goodbye.",
}


def instruction_text(messages: list[Message]) -> str:
    """The reply prompt's own instructions: its system message without the facts the
    agent may state (the catalog's lines, what the lead said, the lead's name)."""
    lines = messages[0]["content"].splitlines()
    return "\n".join(
        line
        for line in lines
        if not line.startswith(("- ", "What the customer told you:", "The customer's name is"))
    )


_INTENT_EXAMPLES = [
    ("Yeah, I can talk for a minute. What's this about?", CustomerIntent.CONTINUE),
    ("Alright, thank you, bye now.", CustomerIntent.GOODBYE),
    ("What topics does the course cover?", CustomerIntent.CONTINUE),
    ("No, I don't want it. I'm not interested.", CustomerIntent.NOT_INTERESTED),
    ("Sorry, I'm at work, could you call back tomorrow?", CustomerIntent.BUSY),
    ("Remove my number from your list and never call here again.", CustomerIntent.DO_NOT_CALL),
    ("That's a lot of money for me.", CustomerIntent.CONTINUE),
    ("There's nobody by that name here, you've got the wrong number.", CustomerIntent.WRONG_PERSON),
    ("Not for me, thanks. Have a good day, goodbye.", CustomerIntent.NOT_INTERESTED),
    ("Is this a robot?", CustomerIntent.CONTINUE),
    ("Sorry, who is this?", CustomerIntent.CONTINUE),
    ("Don't ever call this number again.", CustomerIntent.DO_NOT_CALL),
    ("I'm busy, call me some other time.", CustomerIntent.BUSY),
    ("That sounds great, how do I sign up?", CustomerIntent.INTERESTED),
    ("Hi, you've reached Dana. Leave a message after the beep.", CustomerIntent.VOICEMAIL),
    ("I'm an accountant and I'd like to learn data science.", CustomerIntent.CONTINUE),
    ("Okay, tell me more.", CustomerIntent.CONTINUE),
]

_INTENT_INSTRUCTIONS = (
    "You label what a customer just said on a sales phone call. Labels:\n"
    "continue: questions, objections, doubts, facts about themselves, small talk.\n"
    "interested: wants to sign up, enroll or get the offer.\n"
    "busy: no time right now but happy to talk at another time.\n"
    "goodbye: says bye or ends the conversation.\n"
    "not_interested: refuses the offer, says no or not interested.\n"
    "do_not_call: wants no more calls (don't call me again, remove me from your list).\n"
    "wrong_person: wrong number, or not the person the agent asked for.\n"
    "voicemail: an answering machine or voicemail greeting.\n"
    "Answer with the label only."
)


def intent_messages(history: list[HistoryEntry]) -> list[Message]:
    """A classification request for the customer's last line; the answer is one intent label."""
    examples = [(line, label.value) for line, label in _INTENT_EXAMPLES]
    return labelling_messages(_INTENT_INSTRUCTIONS, examples, history[-1].text if history else "")


def topic_messages(catalog: Catalog, topics: list[str], customer_line: str) -> list[Message]:
    """Which approved answer the line asks for, among `topics` (those it has cues of)."""
    answers = catalog.answers
    return labelling_messages(
        "A customer on a sales call for an AI course said one line. Which of these topics "
        "does the customer ask about? "
        + " ".join(f'{t}: like "{answers[t].asks}"' for t in topics)
        + " none: anything else, including facts about themselves and objections. "
        "Answer with the label only.",
        [
            *((answers[t].asks, t) for t in topics),
            ("I'm a nurse and I want to learn Python.", NO_TOPIC),
            ("That's too expensive for me.", NO_TOPIC),
        ],
        customer_line,
    )


NO_TOPIC = "none"


def reading_requests(
    history: list[HistoryEntry], catalog: Catalog | None = None
) -> list[tuple[list[Message], list[str]]]:
    """The guided-choice requests that read the customer's last line (sent together, so
    vLLM batches them), in the order `reading_from` takes their answers. The topic of an
    approved answer is asked only when the line has one of its cues."""
    line = history[-1].text
    requests = [
        (intent_messages(history), [i.value for i in CustomerIntent]),
        (slot_messages(line), [s.value for s in Slot]),
        (objection_messages(line), PUSHES_BACK),
        (objection_kind_messages(line), OBJECTION_CHOICES),
    ]
    if catalog and (topics := catalog.cued_topics(line)):
        # A question with a topic's cue asks for one of them ("none" would let a small
        # model answer a payment question itself); one choice needs no request.
        choices = topics if is_question(line) else [NO_TOPIC, *topics]
        requests.append((topic_messages(catalog, topics, line), choices))
    return requests


def sample_turn(catalog: Catalog) -> SampleTurn:
    """A first turn's LLM requests, which the LLM replica runs before it takes calls (its
    engine's first requests are slow; the prompts' constant heads then sit in its cache)."""
    name = "Sam Lee"
    history = [
        entry(Speaker.AGENT, greeting(catalog, name)),
        entry(Speaker.CUSTOMER, "Sure. How much does the course cost, and how long is it?"),
    ]
    return SampleTurn(
        reading_requests(history, catalog),
        reply_messages(catalog, name, history, CustomerIntent.CONTINUE, len(history)),
    )


# A voicemail greeting says so: without one of these, the line is not a voicemail (a
# 0.5B model once read "can you just send me an email?" as one, and the call ended).
_VOICEMAIL = re.compile(
    r"leave (?:a|your) message|after the (?:tone|beep)|voice ?mail|mailbox|not available|"
    r"unavailable|can'?t (?:come to|take) the (?:phone|call)|you'?ve reached|you have reached",
    re.I,
)


def reading_from(answers: list[str], line: str) -> LineReading:
    intent, slot, pushes_back, kind, *topic = answers
    if intent == CustomerIntent.VOICEMAIL and not _VOICEMAIL.search(line):
        intent = CustomerIntent.CONTINUE
    return LineReading(
        intent=CustomerIntent(intent),
        slot=Slot(slot),
        objection=Objection(kind) if pushes_back == "yes" else None,
        topic=next((t for t in topic if t != NO_TOPIC), None),
    )


_ROLE_PREFIX = re.compile(
    r"^\s*(?:\*\*)?(?:agent|assistant|alex|sales ?(?:rep|agent)|ai)(?:\*\*)?\s*:\s*", re.I
)
# A line where the model starts writing the other side of the dialogue, or chat markup.
_OTHER_SPEAKER = re.compile(
    r"(?:^|\n)\s*(?:\*\*)?(?:customer|user|human|client|system|prospect)(?:\*\*)?\s*:|<\|", re.I
)


def cut_other_speakers(text: str, customer_name: str) -> tuple[str, bool]:
    """`text` up to where the model starts a line for another speaker (or chat markup), and
    whether it did: then the reply is over."""
    cut = _OTHER_SPEAKER.search(text)
    end = cut.start() if cut else len(text)
    if customer_name:
        # "John Doe:" at a line start is the model writing the customer's turn.
        named = re.search(rf"(?:^|\n)\s*{re.escape(customer_name.split()[0])}[^:\n]{{0,20}}:", text)
        if named:
            end = min(end, named.start())
    return text[:end], end < len(text)


def tidy(text: str) -> str:
    """Spoken words only: no role prefix, markdown, quotes or extra whitespace."""
    text = _ROLE_PREFIX.sub("", text.strip())
    text = re.sub(r"[*_#`>]+", "", text)
    return " ".join(text.split()).strip().strip('"').strip()


# "Are you a robot?", "Is this a recording?", "Am I talking to a real person?"
_ASKS_IF_AI = re.compile(
    r"\b(are you|is this|is that|am i (?:talking|speaking) (?:to|with))\b[^?.!]{0,30}?"
    r"\b(?:an? (?:robot|bot|machine|computer|recording|ai|real person|human|person)|human)\b",
    re.IGNORECASE,
)


def asks_if_ai(customer_line: str) -> bool:
    """Whether the customer asks if they talk to a person: the reply then opens with the
    disclosure, a rule not left to a small model's judgement."""
    return bool(_ASKS_IF_AI.search(customer_line))


def ai_disclosure(catalog: Catalog) -> str:
    return scripted(catalog, catalog.agent.ai_disclosure)


def deferral(catalog: Catalog) -> str:
    """Said in place of a commitment the business did not approve."""
    return scripted(catalog, catalog.agent.deferral)


FALLBACK_REPLY = "Sorry, could you say that again? I want to make sure I understand you."
FALLBACK_GOODBYE = "Thank you for your time, and have a great day. Goodbye."
