"""What a message says, as its sender gives it (a phone on ``POST /messages``, a linked device on its
send): exactly one of ``text``, ``media``, ``location``, ``contact`` (a new message, which may quote
another: ``reply_to``, with the ``quoted`` Message as a webhook delivered it and ``quoted_sender``),
or ``reaction``, ``edit``, ``revoke`` (acting on a message of the chat, see messages.py). Checked
here, with 422s that name the field, and turned into the payload each receiving device gets and the
fields the recipient's inbox shows.
"""

import base64
import binascii
import hashlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import json_format
from neonize.proto.Neonize_pb2 import JID
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ContextInfo, Message
from PIL import Image

from simnet import payloads
from simnet.common import SimError
from simnet.media import MediaServer, decoded, kind_of
from simnet.payloads import Where

NEW = ("text", "media", "location", "contact")
ON_TARGET = ("reaction", "edit", "revoke")
CONTENTS = NEW + ON_TARGET


@dataclass(frozen=True)
class NewMessage:
    build: Callable[[Where], dict]  # the payload as a receiving device (at ``where``) gets it
    kind: str  # the inbox's: text, image, video, audio, voice, document, location, contact
    shown: dict  # the inbox entry's content fields


def field_of(data: dict) -> str:
    """The one content field of a send, or a 422."""
    given = [c for c in CONTENTS if data.get(c) is not None]
    if len(given) != 1 or (given == ["text"] and not (isinstance(data["text"], str) and data["text"])):
        raise SimError(422, "invalid_text", "Send one of 'text' (a non-empty string), " +
                       ", ".join(f"'{c}'" for c in CONTENTS[1:]) + ".")
    return given[0]


def _optional_text(value: dict, name: str, field: str) -> str | None:
    got = value.get(name)
    if got is not None and not isinstance(got, str):
        raise SimError(422, f"invalid_{field}", f"'{field}.{name}' is a string.")
    return got or None


def quoted_text(message: Message | None) -> str | None:
    """The text a phone shows in a reply's quote."""
    if message is None:
        return None
    return (message.conversation or message.extendedTextMessage.text or message.imageMessage.caption
            or message.videoMessage.caption or message.documentMessage.caption or None)


def reply(data: dict, participant: Callable[[str | None], JID | None]) -> tuple[ContextInfo | None, dict]:
    """The ContextInfo of a reply and the inbox's ``reply_to``/``quoted_text`` (none without ``reply_to``);
    ``participant(quoted_sender)`` is the quoted message's author as the chat names it (None: unnamed)."""
    reply_to, quoted, author = data.get("reply_to"), data.get("quoted"), data.get("quoted_sender")
    if reply_to is None:
        if quoted is not None or author is not None:
            raise SimError(422, "invalid_reply", "'quoted' and 'quoted_sender' come with 'reply_to'.")
        return None, {}
    if not isinstance(reply_to, str) or not reply_to:
        raise SimError(422, "invalid_reply", "'reply_to' is the id of the message quoted.")
    if author is not None and not isinstance(author, str):
        raise SimError(422, "invalid_reply", "'quoted_sender' is the quoted message's author, a phone number.")
    message = None
    if quoted is not None:
        try:
            message = json_format.ParseDict(quoted, Message(), ignore_unknown_fields=True)
        except (json_format.ParseError, TypeError, ValueError, AttributeError):
            raise SimError(422, "invalid_quoted", "'quoted' is the quoted message's Message object.") from None
    shown = {"reply_to": reply_to}
    if text := quoted_text(message):
        shown["quoted_text"] = text
    return payloads.reply_context(reply_to, participant(author), message), shown


def new_message(kind: str, value, message_id: str, context: ContextInfo | None, media: MediaServer, base_url: str,
                strict: bool) -> NewMessage:
    """A text, media, location or contact; ``strict`` (a linked device's send) also refuses an image
    that does not decode, as WhatsApp's clients do."""
    if kind == "text":
        return NewMessage(lambda where: payloads.text(message_id, where, value, context), "text", {"text": value})
    if kind == "media":
        return _media(value, message_id, context, media, base_url, strict)
    if kind == "location":
        return _location(value, message_id, context)
    return _contact(value, message_id, context)


def _media(value, message_id: str, context, server: MediaServer, base_url: str, strict: bool) -> NewMessage:
    plain, mimetype = decoded(value)
    ptt, seconds = value.get("ptt", False), value.get("seconds")
    if not isinstance(ptt, bool):
        raise SimError(422, "invalid_media", "'media.ptt' is true or false.")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0):
        raise SimError(422, "invalid_media", "'media.seconds' is a whole number of seconds.")
    try:
        thumbnail = base64.b64decode(value.get("thumbnail") or "", validate=True) or None
    except (binascii.Error, TypeError, ValueError):
        raise SimError(422, "invalid_media", "'media.thumbnail' is a JPEG in base64.") from None
    kind = kind_of(mimetype)
    if strict and kind == "image" and not _decodes(plain):
        raise SimError(422, "invalid_media", "The image does not decode; it cannot be sent as an image.")
    upload, direct_path = server.upload(plain, kind)
    filename, caption = value.get("filename"), value.get("caption")

    def build(where: Where) -> dict:
        return payloads.media(message_id, where, kind, upload, base_url + direct_path, direct_path, mimetype,
                              filename=filename, caption=caption, ptt=ptt, seconds=seconds, thumbnail=thumbnail,
                              context=context)

    shown = {"data": value["data"], "mimetype": mimetype, "ptt": ptt, "sha256": hashlib.sha256(plain).hexdigest()}
    shown.update({k: v for k, v in (("filename", filename), ("caption", caption), ("seconds", seconds))
                  if v is not None})
    return NewMessage(build, "voice" if kind == "audio" and ptt else kind, {"media": shown})


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decodes the pixels: verify() alone passes a truncated JPEG
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False
    return True


def _coordinate(value: dict, name: str, limit: float) -> float:
    got = value.get(name)
    if isinstance(got, bool) or not isinstance(got, int | float) or not math.isfinite(got) or abs(got) > limit:
        raise SimError(422, "invalid_location", f"'location.{name}' is a number from -{limit:g} to {limit:g}.")
    return float(got)


def _location(value, message_id: str, context) -> NewMessage:
    if not isinstance(value, dict):
        raise SimError(422, "invalid_location", "'location' is an object with 'latitude' and 'longitude'.")
    latitude, longitude = _coordinate(value, "latitude", 90), _coordinate(value, "longitude", 180)
    name, address = _optional_text(value, "name", "location"), _optional_text(value, "address", "location")
    shown = {"latitude": latitude, "longitude": longitude}
    shown.update({k: v for k, v in (("name", name), ("address", address)) if v})
    return NewMessage(lambda where: payloads.location(message_id, where, latitude, longitude, name, address, context),
                      "location", {"location": shown})


def _contact(value, message_id: str, context) -> NewMessage:
    name = value.get("name") if isinstance(value, dict) else None
    vcard = value.get("vcard") if isinstance(value, dict) else None
    if not (isinstance(name, str) and name.strip() and isinstance(vcard, str) and vcard.startswith("BEGIN:VCARD")):
        raise SimError(422, "invalid_contact", "'contact' is an object with 'name' and 'vcard' (a vCard).")
    return NewMessage(lambda where: payloads.contact(message_id, where, name, vcard, context), "contact",
                      {"contact": {"name": name, "vcard": vcard}})
