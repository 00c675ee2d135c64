"""Phone numbers: one E.164 form, so the do-not-call list matches however it was typed."""

from __future__ import annotations

import re

import phonenumbers

_ALLOWED = re.compile(r"^\+?[\d\s().\-/]+$")


def normalize_phone(number: str, default_region: str = "US") -> str:
    """E.164 with a leading +: "123-456-7890" -> "+11234567890".

    Accepts international numbers ("+44 20 7946 0958", "0044 ...") and national ones,
    read in `default_region`. Raises ValueError, saying what is wrong, for anything that
    cannot be a phone number there (letters, too few or too many digits). Only the number's
    length is checked, not whether it is assigned: dialers test with 555 numbers.
    """
    cleaned = number.strip()
    if not _ALLOWED.match(cleaned):
        raise ValueError("may contain only digits, spaces, '+', '-', '.', '/' and parentheses")
    if cleaned.startswith("00"):  # the international prefix most of the world dials
        cleaned = "+" + cleaned[2:]
    try:
        parsed = phonenumbers.parse(cleaned, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"is not a phone number ({exc})") from None
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError(
            "has the wrong number of digits; use E.164 (+14155552671) or a national number"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
