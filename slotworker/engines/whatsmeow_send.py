"""Outbound messages for whatsmeow, built here as WhatsApp's protobufs rather than by neonize's helpers.

neonize 0.5.2's ``send_audio``/``send_video`` run ffmpeg/ffprobe (absent: ``FileNotFoundError``, for
audio after the upload) and label a voice note ``audio/ogg`` (libmagic) where WhatsApp wants
``audio/ogg; codecs=opus``; ``send_image`` ignores the caller's type and lets Pillow's
``UnidentifiedImageError`` escape; ``send_contact`` builds its own vCard. So every media file is
uploaded with ``client.upload(data, MediaType)`` and its message built here, every message goes out
through ``client.send_message``, and every failure becomes ``EngineUnavailable`` or ``SendRefused``.

Keys (reactions, revokes, edits) follow whatsmeow's ``BuildMessageKey`` (send.go): ``remoteJID`` the
chat, ``fromMe`` whether the target is the line's own, ``participant`` its author only in a group.
A reply is the sub-message's ``contextInfo`` (``stanzaID``, ``participant``, ``quotedMessage``), as
neonize's ``_make_quoted_message``; a text reply must be an ``extendedTextMessage`` (a
``conversation`` has no contextInfo). In a group the author is named as the group addresses its
members: ``<lid>@lid`` in a LID-addressed group, ``<phone>@s.whatsapp.net`` otherwise (a phone
JID in a LID group's key is accepted by the server and never shown); the engine works the address
out (``member_address``) and hands it here ready.

whatsmeow's own errors read here (errors.go, group.go): sending to a group first fetches its members,
failing with ``failed to get group members: you're not participating in that group`` (IQ 403) or
``… that group does not exist`` (IQ 404); ``GetGroupInfo`` fails with the same texts.
"""

import io
import time

from google.protobuf import json_format

from slotworker.engines.base import (
    Contact,
    EngineUnavailable,
    Location,
    OutboundMedia,
    Quote,
    Reaction,
    SendRefused,
)

USER_SERVER = "s.whatsapp.net"
GROUP_SERVER = "g.us"
LID_SERVER = "lid"
VOICE_MIMETYPE = "audio/ogg; codecs=opus"  # WhatsApp's voice note type (PTT)
THUMBNAIL_PIXELS = 100  # the JPEG preview inside an image message (WhatsApp's are ~100 px)
NOT_IN_GROUP = ("you're not participating in that group", "that group does not exist")
# whatsmeow failing for want of a connection, not because WhatsApp refused the message
UNAVAILABLE = ("websocket not connected", "info query timed out", "failed to refresh media connections",
               "the store doesn't contain a device jid", "context deadline exceeded")
PRESENCE = {"composing": ("CHAT_PRESENCE_COMPOSING", "CHAT_PRESENCE_MEDIA_TEXT"),
            "recording": ("CHAT_PRESENCE_COMPOSING", "CHAT_PRESENCE_MEDIA_AUDIO"),
            "paused": ("CHAT_PRESENCE_PAUSED", "CHAT_PRESENCE_MEDIA_TEXT")}
MEDIA_FIELD = {"image": "imageMessage", "video": "videoMessage", "audio": "audioMessage", "voice": "audioMessage",
               "document": "documentMessage"}


# --- addresses ---

def jid(to: str, server: str = USER_SERVER):
    """A phone number as a user JID; "120363…@g.us" (any "user@server") as that JID, every proto2
    field set (neonize's build_jid would make "…@g.us" the user of s.whatsapp.net)."""
    from neonize.proto.Neonize_pb2 import JID

    user, _, named = to.rpartition("@") if "@" in to else (to, "", server)
    return JID(User=user, Server=named, RawAgent=0, Device=0, Integrator=0, IsEmpty=False)


def empty_jid():
    from neonize.proto.Neonize_pb2 import JID

    return JID(User="", Server="", RawAgent=0, Device=0, Integrator=0, IsEmpty=True)


def is_group(to: str) -> bool:
    return to.endswith("@" + GROUP_SERVER)


def address(phone: str) -> str:
    return f"{phone}@{USER_SERVER}"


def lid_addressed(info) -> bool:
    """Whether a group (neonize's GroupInfo) names its members by LID. whatsmeow reads the group's
    ``addressing_mode``, which neonize 0.5.2's GroupInfo drops; its participants show it: in a
    LID-addressed group each one's JID is the ``@lid`` (whatsmeow's parseParticipant)."""
    return any(p.JID.Server == LID_SERVER for p in info.Participants)


# --- content ---

def kind_of(media: OutboundMedia) -> str:
    """image, video, audio, voice (audio shown as a voice note) or document, by mimetype."""
    mimetype = media.mimetype.lower()
    for kind in ("image", "video", "audio"):
        if mimetype.startswith(kind + "/"):
            return "voice" if kind == "audio" and media.ptt else kind
    return "document"


def media_type(kind: str):
    from neonize.utils.enum import MediaType

    return {"image": MediaType.MediaImage, "video": MediaType.MediaVideo, "audio": MediaType.MediaAudio,
            "voice": MediaType.MediaAudio}.get(kind, MediaType.MediaDocument)


def image_preview(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, a small JPEG) of an image; SendRefused("invalid_media") if it does not decode."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.draft("RGB", (THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))  # JPEG: decode at a fraction
            preview = image.convert("RGB")
            preview.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
            out = io.BytesIO()
            preview.save(out, format="JPEG", quality=60)
    except Exception:  # UnidentifiedImageError, a truncated file (OSError), a decompression bomb, …
        raise SendRefused("invalid_media", "The image cannot be decoded; WhatsApp would not show it.") from None
    return width, height, out.getvalue()


def media_message(media: OutboundMedia, kind: str, uploaded, preview=None, context=None):
    """The message for an uploaded file (``uploaded``: neonize's UploadResponse)."""
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

    message = Message()
    part = getattr(message, MEDIA_FIELD[kind])
    part.URL, part.directPath = uploaded.url, uploaded.DirectPath
    part.mediaKey, part.fileEncSHA256, part.fileSHA256 = uploaded.MediaKey, uploaded.FileEncSHA256, uploaded.FileSHA256
    part.fileLength = uploaded.FileLength
    part.mediaKeyTimestamp = int(time.time())
    part.mimetype = VOICE_MIMETYPE if kind == "voice" else media.mimetype
    if kind in ("audio", "voice"):
        part.PTT = kind == "voice"
    elif media.caption:
        part.caption = media.caption
    if kind in ("audio", "voice", "video") and media.seconds is not None:
        part.seconds = int(media.seconds)
    if kind == "image" and preview is not None:
        part.width, part.height, part.JPEGThumbnail = preview
    if kind == "video" and media.thumbnail:
        part.JPEGThumbnail = media.thumbnail
    if kind == "document" and media.filename:
        part.fileName = part.title = media.filename
    if context is not None:
        part.contextInfo.CopyFrom(context)
    return message


def text_message(text: str, context=None):
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

    if context is None:
        return Message(conversation=text)
    message = Message()
    message.extendedTextMessage.text = text
    message.extendedTextMessage.contextInfo.CopyFrom(context)
    return message


def location_message(location: Location, context=None):
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

    message = Message()
    part = message.locationMessage
    part.degreesLatitude, part.degreesLongitude = float(location.latitude), float(location.longitude)
    if location.name:
        part.name = location.name
    if location.address:
        part.address = location.address
    if context is not None:
        part.contextInfo.CopyFrom(context)
    return message


def contact_message(contact: Contact, context=None):
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

    message = Message()
    message.contactMessage.displayName = contact.name
    message.contactMessage.vcard = contact.vcard
    if context is not None:
        message.contactMessage.contextInfo.CopyFrom(context)
    return message


def context_info(quote: Quote | None, author: str | None):
    """The contextInfo of a reply (None without one): the quoted id, its author (an address,
    "…@s.whatsapp.net" or "…@lid"; None: not named) and, when the caller gave it, the quoted
    message. Built before any upload, so a bad quote costs nothing."""
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ContextInfo, Message

    if quote is None:
        return None
    context = ContextInfo(stanzaID=quote.message_id)
    if author:
        context.participant = author
    if quote.message:
        try:
            quoted = json_format.ParseDict(quote.message, Message(), ignore_unknown_fields=True)
        except (json_format.ParseError, TypeError, ValueError):
            raise SendRefused("send_failed", "The quoted message is not a WhatsApp Message object.") from None
        for field, _ in quoted.ListFields():  # no quote inside a quote (as WhatsApp and neonize)
            sub = getattr(quoted, field.name)
            if field.message_type is not None and "contextInfo" in sub.DESCRIPTOR.fields_by_name:
                sub.ClearField("contextInfo")
        context.quotedMessage.CopyFrom(quoted)
    return context


# --- changes to earlier messages ---

def names_author(chat, from_me: bool) -> bool:
    """Whether a key names its message's author: another's message in a group (BuildMessageKey)."""
    return not from_me and chat.Server not in (USER_SERVER, LID_SERVER, "msgr")


def message_key(chat, message_id: str, from_me: bool, author: str | None):
    """whatsmeow's BuildMessageKey: the author (participant, an address) only for another's message
    in a group."""
    from neonize.proto.waCommon.WACommon_pb2 import MessageKey
    from neonize.utils.jid import Jid2String

    key = MessageKey(remoteJID=Jid2String(chat), ID=message_id, fromMe=from_me)
    if names_author(chat, from_me):
        if not author:
            raise SendRefused("send_failed", "The author of that group message is needed to name it.")
        key.participant = author
    return key


def reaction_message(chat, reaction: Reaction, author: str | None = None):
    """``author``: the reacted message's author as the chat addresses it (needed in a group)."""
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

    message = Message()
    message.reactionMessage.key.CopyFrom(message_key(chat, reaction.message_id, reaction.from_me, author))
    message.reactionMessage.text = reaction.emoji  # "" removes it
    message.reactionMessage.senderTimestampMS = int(time.time() * 1000)
    return message


def revoke_message(chat, message_id: str, own):
    """Delete the line's own message for everyone: neonize's builder with the line as the author
    (NewClient.build_revoke would ask Go's GetMe, which aborts the process before a connection)."""
    from neonize.builder import build_revoke

    return build_revoke(chat, own, message_id, own)


def edit_message(chat, message_id: str, text: str):
    from neonize.builder import build_edit
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

    return build_edit(chat, message_id, Message(conversation=text))


def presence_of(state: str):
    from neonize.utils.enum import ChatPresence, ChatPresenceMedia

    if state not in PRESENCE:
        raise SendRefused("send_failed", f"No chat presence {state!r}: composing, recording or paused.")
    presence, media = PRESENCE[state]
    return ChatPresence[presence], ChatPresenceMedia[media]


# --- what whatsmeow's errors mean ---

def refusal(error: str, connected: bool, kind: str) -> Exception:
    """A neonize error (whatsmeow's text; ``kind`` its type's name) as EngineUnavailable or SendRefused.
    whatsmeow's text names JIDs (phone numbers): it is read here, never passed on to the API."""
    text = error.lower()
    if not connected or any(s in text for s in UNAVAILABLE):
        return EngineUnavailable("the connection to WhatsApp dropped")
    if any(s in text for s in NOT_IN_GROUP):
        return SendRefused("not_in_group", "The line is not a member of that group (or it does not exist).")
    return SendRefused("send_failed", f"WhatsApp refused the request ({kind}).")
