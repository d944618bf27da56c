"""Inbound media through whatsmeow: which part of a message it can download, and what its errors mean.

whatsmeow's ``DownloadAny`` looks only at the top level of a ``Message`` (image, video, audio,
document, sticker), so the media is handed to it unwrapped (out of ephemeral, view-once or
captioned-document wrappers; a round video note, ``ptvMessage``, is a ``VideoMessage`` and goes as
one). whatsmeow downloads, checks the MAC and both SHA-256 hashes, and decrypts; it reports failures
as error text only (neonize's ``DownloadError``), read here by whatsmeow's own strings (errors.go):
``download failed with status code 404`` / ``410`` (the media server forgot the file), ``invalid
media hmac``, ``hash of media ciphertext doesn't match``, ``hash of media plaintext doesn't match``.
"""

from google.protobuf import json_format
from google.protobuf.message import EncodeError

from controlplane.core.whatsapp_media import media_of
from slotworker.engines.base import Download, EngineUnavailable, MediaRefused

CHUNK_BYTES = 256 * 1024

GONE = ("status code 404", "status code 410")
CORRUPT = ("invalid media hmac", "hash of media ciphertext doesn't match", "hash of media plaintext doesn't match",
           "hash of unencrypted media doesn't match", "failed to decrypt file", "file too short")
NOTHING = ("didn't find any attachments", "no url present", "unknown media type",
           "media download path does not start with slash")


def refusal_of(error: str) -> MediaRefused | None:
    """whatsmeow's download error as the API's refusal; None for a failure to reach the media server."""
    text = error.lower()
    if any(s in text for s in GONE):
        return MediaRefused("media_gone", "WhatsApp no longer holds this file.")
    if any(s in text for s in CORRUPT):
        return MediaRefused("media_corrupt", "The file does not match its message (MAC or hash).")
    if any(s in text for s in NOTHING):
        return MediaRefused("no_media", "The message's media reference cannot be downloaded.")
    return None


def download(client, message: dict, max_bytes: int) -> Download:
    """The decrypted media of a ``Message`` JSON object, through a connected neonize client."""
    from neonize.exc import DownloadError
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

    ref = media_of(message)
    if ref is None:
        raise MediaRefused("no_media", "The message has no photo, audio, video or document.")
    if ref.length is not None and ref.length > max_bytes:
        raise MediaRefused("media_too_large", f"The file is {ref.length} bytes, over the limit of {max_bytes}.")
    try:
        json_format.ParseDict(message, Message())  # the whole message must be one, not only its media part
        field = "videoMessage" if ref.field == "ptvMessage" else ref.field
        # Without URL (or its JSON alias): whatsmeow then fetches directPath from WhatsApp's own media
        # hosts, never an address a crafted message names (SSRF).
        fields = {k: v for k, v in ref.fields.items() if k not in ("URL", "url")}
        media = json_format.ParseDict({field: fields}, Message())
    except (json_format.ParseError, TypeError, ValueError):
        raise MediaRefused("invalid_message", "The message is not a WhatsApp Message object.") from None
    try:
        data = client.download_any(media)
    except EncodeError:  # proto2 required fields missing: neonize cannot even hand it to Go
        raise MediaRefused("invalid_message", "The message lacks fields WhatsApp requires.") from None
    except DownloadError as err:
        refusal = refusal_of(str(err))
        if refusal is None:
            raise EngineUnavailable("WhatsApp's media servers could not be reached.") from None
        raise refusal from None
    if len(data) > max_bytes:  # the message understated its size
        raise MediaRefused("media_too_large", f"The file is {len(data)} bytes, over the limit of {max_bytes}.")
    return Download(size=len(data), chunks=_pieces(data))


def _pieces(data: bytes):
    for start in range(0, len(data), CHUNK_BYTES):
        yield data[start:start + CHUNK_BYTES]
