"""Grounding: every price, duration and discount the agent states must be in the catalog.

A small model invents numbers; this check finds them in a reply so the service can
write it again, or drop the sentence that carries them (`sales/reply.py`).
"""

from __future__ import annotations

import re

from salesagent.sales.catalog import Catalog

_NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
}
_NUMBER = r"(\d+(?:\.\d+)?|" + "|".join(_NUMBER_WORDS) + r")"
_PRICE = re.compile(r"\$\s?(\d[\d,]*(?:\.\d{1,2})?)|(\d[\d,]*)\s?(?:dollars|usd)\b", re.I)
_DURATION = re.compile(_NUMBER + r"[\s-](week|month)s?\b", re.I)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?(?:%|percent)", re.I)


def _number(text: str) -> float:
    return float(_NUMBER_WORDS.get(text.lower(), text.replace(",", "") or 0))


def allowed_facts(catalog: Catalog) -> dict[str, set[float]]:
    p = catalog.product
    discount = 100 * (1 - p.special_offer_price_usd / p.standard_price_usd)
    return {
        "price": {p.special_offer_price_usd, p.standard_price_usd},
        "week": {p.duration_weeks},
        "month": {round(p.duration_weeks / 4.33)},  # "three months" for 12 weeks
        "percent": {round(discount), int(discount)},
    }


def unsupported_facts(text: str, catalog: Catalog) -> list[str]:
    """The prices, durations and discounts in `text` that the catalog does not state."""
    allowed = allowed_facts(catalog)
    found = []
    for match in _PRICE.finditer(text):
        if _number(match.group(1) or match.group(2)) not in allowed["price"]:
            found.append(match.group(0))
    for match in _DURATION.finditer(text):
        if _number(match.group(1)) not in allowed[match.group(2).lower()]:
            found.append(match.group(0))
    for match in _PERCENT.finditer(text):
        if round(float(match.group(1))) not in allowed["percent"]:
            found.append(match.group(0))
    return found
