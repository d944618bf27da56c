"""What every part of simnet shares: its refusals, the phone-number rule, message ids, LIDs."""

import hashlib
import re
import secrets

LINE = re.compile(r"[1-9][0-9]{6,14}")
GROUP = re.compile(r"120363[0-9]{12}")
PN_SERVER, LID_SERVER, GROUP_SERVER = "s.whatsapp.net", "lid", "g.us"


class SimError(Exception):
    """A refusal: HTTP ``status``, JSON ``{"error": code, "detail": detail, **extra}``."""

    def __init__(self, status: int, code: str, detail: str, **extra):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra


def number(value, name: str) -> str:
    """``value`` as a phone number (international, digits only), or a 422 naming the field."""
    if not isinstance(value, str) or not LINE.fullmatch(value):
        raise SimError(422, "invalid_number", f"'{name}' is an international number, digits only, no '+'.")
    return value


def message_id() -> str:
    return "3EB0" + secrets.token_hex(10).upper()


def lid_of(phone: str) -> str:
    """The phone's stable LID user: 15 digits derived from its number (WhatsApp's are random, and as
    opaque)."""
    return str(10**14 + int(hashlib.sha256(phone.encode()).hexdigest(), 16) % (9 * 10**14))
