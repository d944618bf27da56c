"""The two identifiers of the contract: slot ids and lines (phone numbers). Standard library only
(and core.errors)."""

import re
import secrets

from controlplane.core.errors import Refused

SLOT_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SLOT_ID_LENGTH = 8
# Used with fullmatch ("$" would let a "\n" through); the API's OpenAPI document publishes them too.
SLOT_ID_PATTERN = "[A-Za-z0-9]{8}"
LINE_PATTERN = "[1-9][0-9]{6,14}"
_SLOT_ID = re.compile(SLOT_ID_PATTERN)
_LINE = re.compile(LINE_PATTERN)


class InvalidIdentifier(Refused, ValueError):
    """A slot id or line that is malformed (422); ``code`` is the contract's machine code.

    A refusal like any other (the API and whinctl answer it as one); still a ValueError for callers
    that parse an identifier as they would a number."""


def new_slot_id() -> str:
    return "".join(secrets.choice(SLOT_ID_ALPHABET) for _ in range(SLOT_ID_LENGTH))


def parse_slot_id(text: str) -> str:
    """Return the canonical (upper-case) slot id, or raise InvalidIdentifier."""
    if not _SLOT_ID.fullmatch(text or ""):
        raise InvalidIdentifier(
            "invalid_slot", f"A slot id is exactly 8 letters or digits; got {len(text or '')} characters."
        )
    return text.upper()


def parse_line(text: str) -> str:
    """Return the line unchanged if it is an international number without '+', else say what is wrong."""
    text = text or ""
    if _LINE.fullmatch(text):
        return text
    raise InvalidIdentifier("invalid_line", _why_line_is_invalid(text))


def _why_line_is_invalid(text: str) -> str:
    if not text:
        return "The line is empty; give the international number without '+', e.g. 34666123456."
    if text.startswith("+"):
        return "Write the line without the leading '+', e.g. 34666123456."
    if not (text.isascii() and text.isdigit()):  # str.isdigit() alone accepts "３４…"
        return "A line contains digits only (no spaces, dashes or letters), e.g. 34666123456."
    if text.startswith("0"):
        return "A line starts with the country code, not with 0, e.g. 34666123456."
    if len(text) < 7:
        return f"A line has 7 to 15 digits with its country code; this one has {len(text)}."
    return f"A line has at most 15 digits with its country code; this one has {len(text)}."
