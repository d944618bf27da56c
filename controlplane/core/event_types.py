"""The webhook's event types, the whatsmeow events behind each, and WHIN_EVENTS, which selects them.

Engines subscribe only to the whatsmeow events of the selected types (``sources_for``), so a type
nobody asked for costs nothing: whatsmeow is not even told to forward it. The sim engine uses the
same names, and simnet builds its events from the same neonize classes.
"""

from enum import StrEnum


class WebhookType(StrEnum):
    MESSAGE = "message"
    RECEIPT = "receipt"
    CALL = "call"
    PRESENCE = "presence"
    GROUP = "group"
    UNDECRYPTABLE = "message.undecryptable"
    SLOT_STATUS = "slot.status"


# whatsmeow's event (neonize's class name without "Ev") -> the webhook type that carries it.
SOURCES = {
    "Message": WebhookType.MESSAGE,
    "Receipt": WebhookType.RECEIPT,
    "CallOffer": WebhookType.CALL,
    "CallTerminate": WebhookType.CALL,
    "ChatPresence": WebhookType.PRESENCE,
    "Presence": WebhookType.PRESENCE,
    "JoinedGroup": WebhookType.GROUP,
    "GroupInfo": WebhookType.GROUP,
    "UndecryptableMessage": WebhookType.UNDECRYPTABLE,
}

DEFAULT = frozenset(WebhookType) - {WebhookType.PRESENCE}


def parse_events(raw: str) -> frozenset[WebhookType]:
    """WHIN_EVENTS: comma-separated types; empty means the default (every type but presence).
    Raises ValueError naming the unknown type and the known ones."""
    names = [n.strip() for n in (raw or "").split(",") if n.strip()]
    if not names:
        return DEFAULT
    unknown = [n for n in names if n not in WebhookType._value2member_map_]
    if unknown:
        known = ", ".join(t.value for t in WebhookType)
        raise ValueError(f"unknown event type {unknown[0]!r} (known: {known})")
    return frozenset(WebhookType(n) for n in names)


def sources_for(types: frozenset) -> frozenset[str]:
    """The whatsmeow events an engine subscribes to for these webhook types."""
    return frozenset(source for source, kind in SOURCES.items() if kind in types)
