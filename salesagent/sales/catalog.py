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
