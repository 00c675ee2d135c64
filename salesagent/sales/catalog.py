"""The product catalog: the only source of facts the agent may state."""

from __future__ import annotations

import re
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel

DEFAULT_CATALOG = Path(__file__).parents[1] / "data" / "catalog.yaml"


class Agent(BaseModel):
    name: str
    company: str
    opening_line: str
    # Scripted lines for phone calls, where the wording is a legal matter; {first_name},
    # {agent}, {company} and {product} are filled in as in the opening line.
    inbound_opening_line: str = (
        "Hi, this is {agent} from {company}, thanks for calling back about our {product}. "
        "Is now a good time to talk for a couple of minutes?"
    )
    voicemail_message: str = (
        "Hi {first_name}, this is {agent} from {company}, calling about our {product}. "
        "We'll try you again another time. Have a great day."
    )
    do_not_call_confirmation: str = (
        "Understood. I've taken your number off our list, and we won't call you again. Goodbye."
    )
    do_not_call_refusal: str = (
        "Thanks for calling {company}. This number asked us not to call it, so we'll keep "
        "it that way. Goodbye."
    )
    ai_disclosure: str = "I'm an AI assistant calling for {company}."
    call_back_question: str = (
        "Of course. When would be a good time to call you back, the day and the time?"
    )
    call_back_confirmation: str = (
        "Great, I'll call you back {when}. Thanks, {first_name}, talk to you then. Goodbye."
    )
    deferral: str = (
        "That's a good question, and I don't want to guess, so I'll have our team follow up "
        "with you on it."
    )


class AnswerKind(StrEnum):
    FACT = "fact"
    NOT_OFFERED = "not_offered"
    FOLLOW_UP = "follow_up"  # the team answers later: the question is kept on the call


class Answer(BaseModel):
    """An approved answer, said word for word when the line reading picks its topic."""

    asks: str  # a line that asks for it: the line reading's worked example
    kind: AnswerKind
    # Words or phrases that a line about the topic contains (whole words); the topic is
    # offered to the reading only when one is there.
    cues: list[str]
    answer: str

    def cued_by(self, line: str) -> bool:
        """A cue is in the line as whole words, or their plural ("fee" is not in "feel")."""
        return any(
            re.search(
                (r"\b" if cue[0].isalnum() else "") + re.escape(cue) + r"(?:e?s)?\b", line, re.I
            )
            for cue in self.cues
        )


class Product(BaseModel):
    name: str
    duration_weeks: int
    format: str
    topics: list[str]
    special_offer_price_usd: int
    standard_price_usd: int
    offer_note: str
    benefits: list[str]


class Catalog(BaseModel):
    agent: Agent
    product: Product
    qualification_questions: dict[str, str]
    answers: dict[str, Answer] = {}

    def cued_topics(self, line: str) -> list[str]:
        """The topics of approved answers whose cues are in `line`."""
        return [topic for topic, answer in self.answers.items() if answer.cued_by(line)]

    def approved_lines(self) -> list[str]:
        """What the business approved for the agent to say after the greeting, word for
        word: the approved answers and the scripted lines (fields still in braces)."""
        openings = {"name", "company", "opening_line", "inbound_opening_line"}
        lines = self.agent.model_dump(exclude=openings).values()
        return [a.answer for a in self.answers.values()] + list(lines)

    def facts(self) -> str:
        """The catalog as short bullet lines for the system prompt."""
        p = self.product
        lines = [
            f"- Course: {p.name}, {p.duration_weeks} weeks, {p.format}.",
            f"- Topics: {', '.join(p.topics)}.",
            f"- Price: special offer ${p.special_offer_price_usd} "
            f"(standard price ${p.standard_price_usd}); {p.offer_note}.",
            *(f"- Benefit: {b}." for b in p.benefits),
        ]
        return "\n".join(lines)


@lru_cache(maxsize=8)
def load_catalog(path: str = "") -> Catalog:
    source = Path(path) if path else DEFAULT_CATALOG
    return Catalog.model_validate(yaml.safe_load(source.read_text()))
