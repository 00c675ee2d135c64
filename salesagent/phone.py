"""Phone numbers: one normalized form, so the do-not-call list matches however it was typed."""

from __future__ import annotations

import re


def normalize_phone(number: str, default_country_code: str = "1") -> str:
    """E.164-style digits with a leading +: "123-456-7890" -> "+11234567890".

    Separators and spaces are dropped; a national 10-digit number gets the default
    country code (North America); "00" international prefixes become "+".
    """
    cleaned = number.strip()
    digits = re.sub(r"\D", "", cleaned)
    if cleaned.startswith("+"):
        return f"+{digits}"
    if digits.startswith("00"):
        return f"+{digits[2:]}"
    if len(digits) == 10:
        return f"+{default_country_code}{digits}"
    if len(digits) == 11 and digits.startswith(default_country_code):
        return f"+{digits}"
    return f"+{digits}" if len(digits) > 10 else digits
