"""Phone numbers to E.164, with a default region for national numbers ("081..." in TH)."""

from __future__ import annotations

import phonenumbers


def normalize(raw: str, region: str) -> str:
    """ "+66812345678" for anything phonenumbers can parse as a possible number, else ""."""
    text = raw.strip()
    if not text or not any(ch.isdigit() for ch in text):
        return ""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return ""
    if not phonenumbers.is_possible_number(number):
        return ""
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
