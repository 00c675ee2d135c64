"""The product catalog: the only source of facts the agent may state."""

from __future__ import annotations

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
