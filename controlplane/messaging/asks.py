"""What the integrator asks of a line, parsed and checked: /send's kinds and the chat actions.

Pure functions of the request body, one refusal code each (422 with a sentence): nothing here
touches Redis, the slot, or the network. ``outbound.py`` then carries out what these return.
"""

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlparse

from controlplane.core import ids
from controlplane.core.errors import Refused
from controlplane.messaging.message_index import chat_of

MAX_TEXT = 65536  # WhatsApp's own limit for a text message
MAX_CAPTION = 1024
MAX_PLACE_TEXT = 1024  # a location's name or address
MAX_CONTACT_NAME = 256
MAX_FILENAME = 255  # what a phone's file system takes
MAX_VCARD = 16 * 1024
MAX_MESSAGE_ID = 128
MAX_EMOJI = 16  # code points: an emoji with its skin tone and joiners (👩🏽‍💻) is several
MAX_QUOTED_JSON = 64 * 1024
MAX_READ_IDS = 100
GROUP_PATTERN = r"[0-9]{5,20}(-[0-9]{5,20})?@g\.us"
_GROUP = re.compile(GROUP_PATTERN)
# A phone's JID as the webhook's ``chat`` gives it, its device (":12") too: the number it names.
PHONE_JID_PATTERN = rf"{ids.LINE_PATTERN}(:[0-9]{{1,5}})?@s\.whatsapp\.net"
_PHONE_JID = re.compile(PHONE_JID_PATTERN)
PRESENCE_STATES = ("composing", "recording", "paused")
CONTENT_FIELDS = ("text", "media", "location", "contact", "reaction")


@dataclass(frozen=True)
class Target:
    """Who acts: a line, or the slot that holds it (exactly one)."""

    line: str | None
    slot: str | None


@dataclass(frozen=True)
class SendRequest:
    line: str | None
    slot: str | None
    to: str  # a phone number or a group JID
    kind: str  # one of CONTENT_FIELDS
    text: str | None = None
    media: dict | None = None  # {"url" | "data", "mimetype", "filename", "caption", "ptt"} as given
    location: dict | None = None  # {"latitude", "longitude", "name"?, "address"?}
    contact: dict | None = None  # {"name", "vcard"}, the vCard built from a number when none was given
    reaction: dict | None = None  # {"message_id", "emoji"}
    reply_to: str | None = None
    quoted: dict | None = None


# --- who, and to whom ---


def _object(body, example: str) -> dict:
    if not isinstance(body, dict):
        raise Refused("invalid_json", f"Send a JSON object such as {example}.")
    return body


def parse_target(body: dict, what: str = "send") -> Target:
    if ("line" in body) == ("slot" in body):
        raise Refused("invalid_target", f"Give either 'line' or 'slot' (not both) to say which line should {what}.")
    for name in ("line", "slot"):
        if name in body and not isinstance(body[name], str):
            raise Refused(f"invalid_{name}", f"'{name}' must be a string.")
    line = ids.parse_line(body["line"]) if "line" in body else None
    slot = ids.parse_slot_id(body["slot"]) if "slot" in body else None
    return Target(line, slot)


def parse_chat(value, name: str = "to") -> str:
    """A phone number (international, without '+'), or a group's JID (``120363…@g.us``); a phone's
    JID as the webhook's ``chat`` gives it (``34611122233@s.whatsapp.net``, with or without its
    device) names its number, normalized as the message index does (message_index.chat_of)."""
    code = "invalid_number" if name == "to" else f"invalid_{name}"
    if not isinstance(value, str):
        raise Refused(code, f"'{name}' must be a string: a phone number or a group id (…@g.us).")
    if "@" in value:
        if _PHONE_JID.fullmatch(value):
            return chat_of(value)
        if not _GROUP.fullmatch(value):
            raise Refused("invalid_to" if name == "to" else code,
                          f"'{name}' is a phone number (34611122233, or the webhook's 34611122233@s.whatsapp.net) "
                          "or a group id such as 120363012345678901@g.us.")
        return value
    try:
        return ids.parse_line(value)
    except ids.InvalidIdentifier as err:
        raise Refused(code, f"'{name}': {err.detail}") from None


def _message_id(value, code: str, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_MESSAGE_ID or not value.isprintable():
        raise Refused(code, f"'{name}' is a message id as the webhook gave it (message_id).")
    return value


# --- /send ---


def parse_send_request(body) -> SendRequest:
    body = _object(body, '{"line": "34666123456", "to": "…", "text": "…"}')
    target = parse_target(body)
    to = parse_chat(body.get("to"), "to")
    given = [name for name in CONTENT_FIELDS if body.get(name) is not None]
    if not given:
        raise Refused("missing_content", "Give one of 'text', 'media', 'location', 'contact' or 'reaction'.")
    if len(given) > 1:
        raise Refused("invalid_content", f"Give one content field, not {' and '.join(given)}: a media message's "
                                         "text is its caption.")
    kind = given[0]
    reply_to, quoted = _reply(body, kind)
    content = {kind: _CHECKS[kind](body[kind])}
    return SendRequest(target.line, target.slot, to, kind, reply_to=reply_to, quoted=quoted, **content)


def _reply(body: dict, kind: str) -> tuple[str | None, dict | None]:
    reply_to, quoted = body.get("reply_to"), body.get("quoted")
    if reply_to is None:
        if quoted is not None:
            raise Refused("invalid_reply", "'quoted' goes with 'reply_to': the id of the message it is.")
        return None, None
    if kind == "reaction":
        raise Refused("invalid_reply", "A reaction names its message in 'reaction.message_id', not 'reply_to'.")
    reply_to = _message_id(reply_to, "invalid_reply", "reply_to")
    if quoted is not None:
        if not isinstance(quoted, dict) or not quoted \
                or not all(isinstance(key, str) and isinstance(value, (dict, str)) for key, value in quoted.items()):
            raise Refused("invalid_reply", "'quoted' is the payload's \"Message\" object of the message replied to "
                                           "(such as {\"conversation\": \"…\"}).")
        if len(json.dumps(quoted)) > MAX_QUOTED_JSON:
            raise Refused("invalid_reply", f"'quoted' is over {MAX_QUOTED_JSON // 1024} KiB.")
    return reply_to, quoted


def _has_control(text: str, newlines: bool = False) -> bool:
    """Whether ``text`` holds a control character (Cc), newlines apart when they may be there."""
    return any(unicodedata.category(char) == "Cc" and not (newlines and char == "\n") for char in text)


def _check_text(text) -> str:
    if not isinstance(text, str) or not text or len(text) > MAX_TEXT:
        raise Refused("invalid_text", f"'text' is a non-empty string of at most {MAX_TEXT} characters.")
    return text


def _check_media(media) -> dict:
    if not isinstance(media, dict) or ("url" in media) == ("data" in media):
        raise Refused("invalid_media", "'media' is an object with either 'url' or base64 'data'.")
    for name in ("url", "data"):  # the one given is the media itself: null is not an answer
        if name in media and not isinstance(media[name], str):
            raise Refused("invalid_media", f"'media.{name}' must be a string.")
    for name in ("mimetype", "filename", "caption"):  # optional: null means not given
        if name in media and media[name] is not None and not isinstance(media[name], str):
            raise Refused("invalid_media", f"'media.{name}' must be a string.")
    if media.get("ptt") is not None and not isinstance(media["ptt"], bool):
        raise Refused("invalid_media", "'media.ptt' is true (a voice note) or false.")
    if "data" in media and not media.get("mimetype"):
        raise Refused("invalid_media", "'media.mimetype' is needed with 'data', e.g. image/jpeg.")
    filename = media.get("filename")
    if filename is not None and (len(filename) > MAX_FILENAME or _has_control(filename) or "/" in filename):
        raise Refused("invalid_media", f"'media.filename' is a file name of at most {MAX_FILENAME} characters, "
                                       "without '/' or control characters.")
    if len(media.get("caption") or "") > MAX_CAPTION:
        raise Refused("invalid_media", f"'media.caption' has at most {MAX_CAPTION} characters.")
    if "url" in media and _scheme(media["url"]) not in ("http", "https"):
        raise Refused("invalid_media", "'media.url' must be an http or https URL.")
    return media


def _scheme(url: str) -> str | None:
    try:
        return urlparse(url).scheme
    except ValueError:  # "http://[::1": urlparse refuses what it cannot split
        return None


def _coordinate(location: dict, name: str, limit: float) -> float:
    value = location.get(name)
    # An int is compared before isfinite, which cannot turn one of 400 digits into a float.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -limit <= value <= limit \
            or not math.isfinite(value):
        raise Refused("invalid_location", f"'location.{name}' is a number from {-limit:g} to {limit:g} (degrees).")
    return float(value)


def _check_location(location) -> dict:
    if not isinstance(location, dict):
        raise Refused("invalid_location", "'location' is an object: {\"latitude\", \"longitude\", \"name\"?, "
                                          "\"address\"?}.")
    checked = {"latitude": _coordinate(location, "latitude", 90), "longitude": _coordinate(location, "longitude", 180)}
    for name in ("name", "address"):
        value = location.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > MAX_PLACE_TEXT or _has_control(value, newlines=True):
            raise Refused("invalid_location", f"'location.{name}' is a string of at most {MAX_PLACE_TEXT} characters, "
                                              "without control characters.")
        if value:
            checked[name] = value
    return checked


def _vcard_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;").replace("\n", "\\n")


def build_vcard(name: str, number: str) -> str:
    """A vCard 3.0 as WhatsApp's phones write one: the waid parameter makes the card's "Message" button."""
    escaped = _vcard_escape(name)
    return (f"BEGIN:VCARD\nVERSION:3.0\nN:;{escaped};;;\nFN:{escaped}\n"
            f"TEL;type=CELL;type=VOICE;waid={number}:+{number}\nEND:VCARD")


def _vcard_name(vcard: str) -> str | None:
    for line in vcard.splitlines():
        if line.upper().startswith("FN:") or line.upper().startswith("FN;"):
            return line.split(":", 1)[1].replace("\\,", ",").replace("\\;", ";").strip() or None
    return None


def _check_contact(contact) -> dict:
    if not isinstance(contact, dict):
        raise Refused("invalid_contact", "'contact' is {\"name\", \"number\"} or {\"vcard\"}.")
    name = contact.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > MAX_CONTACT_NAME
                             or _has_control(name)):
        raise Refused("invalid_contact", f"'contact.name' is a non-empty string of at most {MAX_CONTACT_NAME} "
                                         "characters, on one line (no control characters).")
    if contact.get("vcard") is not None:
        if "number" in contact:
            raise Refused("invalid_contact", "Give 'contact.vcard' or 'contact.number', not both.")
        return _given_vcard(contact["vcard"], name)
    return _built_vcard(contact.get("number"), name)


def _given_vcard(vcard, name: str | None) -> dict:
    """A card the caller wrote: sent as it is, named by its FN unless 'contact.name' says otherwise."""
    if not isinstance(vcard, str) or len(vcard) > MAX_VCARD:
        raise Refused("invalid_contact", f"'contact.vcard' is a vCard of at most {MAX_VCARD} characters.")
    lines = [line.strip().upper() for line in vcard.strip().splitlines()]
    if not lines or lines[0] != "BEGIN:VCARD" or lines[-1] != "END:VCARD":
        raise Refused("invalid_contact", "'contact.vcard' is a vCard: BEGIN:VCARD … END:VCARD.")
    if not any(line.startswith("TEL") for line in lines):
        raise Refused("invalid_contact", "'contact.vcard' has no TEL line: a contact card needs a number.")
    name = name or _vcard_name(vcard)
    if not name:
        raise Refused("invalid_contact", "'contact.vcard' has no FN line: give 'contact.name'.")
    return {"name": name, "vcard": vcard.strip()}


def _built_vcard(number, name: str | None) -> dict:
    """A card built from a name and a number, as WhatsApp's phones write one."""
    if number is None:
        raise Refused("invalid_contact", "A contact card needs 'contact.number' (or a 'contact.vcard').")
    if not isinstance(number, str):
        raise Refused("invalid_contact", "'contact.number' is a string: the international number, without '+'.")
    digits = re.sub(r"[\s().-]", "", number).removeprefix("+")
    if not re.fullmatch(ids.LINE_PATTERN, digits):
        raise Refused("invalid_contact", "'contact.number' is an international number such as 34611122233.")
    if not name:
        raise Refused("invalid_contact", "'contact.name' is the name the card shows.")
    return {"name": name, "vcard": build_vcard(name, digits)}


_EMOJI_JOINERS = frozenset("\u200d\ufe0e\ufe0f\u20e3")  # ZWJ, text/emoji variation selectors, keycap


def _emoji_part(char: str, keycap: bool) -> bool:
    code = ord(char)
    return (unicodedata.category(char) == "So" or char in _EMOJI_JOINERS
            or 0x1F1E6 <= code <= 0x1F1FF  # regional indicators: a flag is two
            or 0x1F3FB <= code <= 0x1F3FF  # skin tones
            or 0xE0020 <= code <= 0xE007F  # tags: a subdivision's flag (🏴 + tags)
            or (keycap and char in "#*0123456789"))


def _is_emoji(text: str) -> bool:
    """One emoji, as WhatsApp's reactions take them: symbols (So), flags and keycaps with what joins
    them (ZWJ, variation selectors, skin tones, tags); no letters, accents, or direction marks."""
    if len(text) > MAX_EMOJI:
        return False
    keycap = "\u20e3" in text
    has_symbol = any(unicodedata.category(char) == "So" or 0x1F1E6 <= ord(char) <= 0x1F1FF for char in text)
    return (has_symbol or keycap) and all(_emoji_part(char, keycap) for char in text)


def _check_reaction(reaction) -> dict:
    if not isinstance(reaction, dict):
        raise Refused("invalid_reaction", "'reaction' is {\"message_id\", \"emoji\"}.")
    message_id = _message_id(reaction.get("message_id"), "invalid_reaction", "reaction.message_id")
    emoji = reaction.get("emoji")
    if not isinstance(emoji, str) or (emoji and not _is_emoji(emoji)):
        raise Refused("invalid_reaction", "'reaction.emoji' is one emoji, such as 👍, or \"\" to remove the "
                                          "line's reaction.")
    return {"message_id": message_id, "emoji": emoji}


_CHECKS = {"text": _check_text, "media": _check_media, "location": _check_location, "contact": _check_contact,
           "reaction": _check_reaction}


# --- the chat actions ---


@dataclass(frozen=True)
class ReadRequest:
    target: Target
    chat: str
    message_ids: tuple[str, ...]


@dataclass(frozen=True)
class PresenceRequest:
    target: Target
    to: str
    state: str


@dataclass(frozen=True)
class RevokeRequest:
    target: Target
    to: str
    message_id: str


@dataclass(frozen=True)
class EditRequest:
    target: Target
    to: str
    message_id: str
    text: str


def parse_read(body) -> ReadRequest:
    body = _object(body, '{"line": "34666123456", "chat": "34611122233", "message_ids": ["…"]}')
    target = parse_target(body, "read")
    chat = parse_chat(body.get("chat"), "chat")
    message_ids = body.get("message_ids")
    if not isinstance(message_ids, list) or not 1 <= len(message_ids) <= MAX_READ_IDS:
        raise Refused("invalid_message_ids", f"'message_ids' is a list of 1 to {MAX_READ_IDS} message ids.")
    checked = tuple(dict.fromkeys(_message_id(m, "invalid_message_ids", "message_ids[]") for m in message_ids))
    return ReadRequest(target, chat, checked)


def parse_presence(body) -> PresenceRequest:
    body = _object(body, '{"line": "34666123456", "to": "34611122233", "state": "composing"}')
    target = parse_target(body, "show its presence")
    to = parse_chat(body.get("to"), "to")
    state = body.get("state")
    if state not in PRESENCE_STATES:
        raise Refused("invalid_state", "'state' is composing (typing…), recording (recording audio…) or paused.")
    return PresenceRequest(target, to, state)


def parse_revoke(body) -> RevokeRequest:
    body = _object(body, '{"line": "34666123456", "to": "34611122233", "message_id": "…"}')
    target = parse_target(body, "delete a message")
    to = parse_chat(body.get("to"), "to")
    return RevokeRequest(target, to, _message_id(body.get("message_id"), "invalid_message_id", "message_id"))


def parse_edit(body) -> EditRequest:
    body = _object(body, '{"line": "34666123456", "to": "34611122233", "message_id": "…", "text": "…"}')
    target = parse_target(body, "edit a message")
    to = parse_chat(body.get("to"), "to")
    message_id = _message_id(body.get("message_id"), "invalid_message_id", "message_id")
    return EditRequest(target, to, message_id, _check_text(body.get("text")))


def parse_number(text: str) -> str:
    try:
        return ids.parse_line(text)
    except ids.InvalidIdentifier as err:
        raise Refused("invalid_number", f"The number: {err.detail}") from None
