"""POST /media: the decrypted bytes of a photo, voice note or document a line received.

The webhook delivered the message as WhatsApp did: an encrypted reference. The API hands that
``Message`` object, sealed, to the line's slot (the slot protocol's ``download``); the slot's engine
downloads and decrypts it (whatsmeow itself, or the sim engine as whatsmeow does) and streams the
bytes back in sealed chunks on a reply list, which this module pops one at a time as the response
is written. Nothing is stored on the way: no file, no clear text in Redis, no log line; the reply
list is dropped when the response ends, however it ends.
"""

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass

from controlplane.core import ids, protocol
from controlplane.core.errors import EngineTimeout, GatewayError, Refused
from controlplane.core.sealed import Sealer
from controlplane.core.whatsapp_media import media_of
from controlplane.messaging.slot_failures import gateway_error

MAX_MESSAGE_JSON = 256 * 1024  # a photo's Message with its thumbnail is a few KiB; this crosses Redis sealed


class MediaTooLarge(GatewayError):
    status = 413


class MediaGone(GatewayError):
    status = 410


class Interrupted(Exception):
    """The stream broke after the response began (the slot or Redis went away, a failed check): the
    connection is cut so the client cannot take a partial file for a whole one. Says only why."""


@dataclass(frozen=True)
class MediaRequest:
    line: str | None
    slot: str | None
    message: dict


def parse_media_request(body, max_bytes: int) -> MediaRequest:
    if not isinstance(body, dict):
        raise Refused("invalid_json", 'Send a JSON object such as {"line": "34666123456", "message": {…}}.')
    if ("line" in body) == ("slot" in body):
        raise Refused("invalid_target", "Give either 'line' or 'slot' (not both) to say which line received it.")
    for name in ("line", "slot"):
        if name in body and not isinstance(body[name], str):
            raise Refused(f"invalid_{name}", f"'{name}' must be a string.")
    line = ids.parse_line(body["line"]) if "line" in body else None
    slot = ids.parse_slot_id(body["slot"]) if "slot" in body else None
    message = body.get("message")
    if not isinstance(message, dict):
        raise Refused("invalid_message", "'message' is the payload's \"Message\" object, as the webhook delivered it.")
    if len(json.dumps(message)) > MAX_MESSAGE_JSON:
        raise Refused("invalid_message", f"'message' is over {MAX_MESSAGE_JSON // 1024} KiB: a media message is a "
                                         "reference to the file, not the file.")
    media = media_of(message)
    if media is None:
        raise Refused("no_media", "This message carries no photo, video, audio, sticker or document.")
    if media.length is not None and media.length > max_bytes:
        raise MediaTooLarge("media_too_large", f"The media is {media.length} bytes, over the limit of {max_bytes}.")
    return MediaRequest(line, slot, message)


@dataclass(frozen=True)
class MediaStream:
    mimetype: str
    filename: str | None
    size: int | None
    body: "_Body"


class _Body:
    """The response's bytes. Closing it drops the reply list even when no byte was read (a
    generator closed before it started runs no ``finally``): the WSGI server closes what it served."""

    def __init__(self, chunks: Iterator[bytes], drop):
        self._chunks, self._drop = chunks, drop

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()
        self._drop()


class InboundMedia:
    def __init__(self, settings, lifecycle):
        self.settings = settings
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.sealer = Sealer(settings.queue_key)

    def open(self, body) -> MediaStream:
        """Check the request, ask the slot, and wait for the file's first part, so that a download
        refused before any byte is an error response; the rest follows in ``body``."""
        request = parse_media_request(body, self.settings.media_max_bytes)
        slot = self.lifecycle.serving_slot(request.line, request.slot, "download media")
        command = protocol.Download(sealed=self.sealer.seal({"message": request.message}))
        timeout = self.settings.media_timeout
        header, taken, request_id = protocol.ask_stream(self.store, slot.id, command, timeout=timeout)
        if not isinstance(header, protocol.MediaHeader):
            self.store.drop_replies(request_id)
            raise self._refusal(slot.id, header, taken)
        first = self._next_part(request_id)
        if not isinstance(first, (protocol.MediaChunk, protocol.MediaEnd)):
            self.store.drop_replies(request_id)
            raise self._refusal(slot.id, first, taken=True)
        ref = media_of(request.message)  # its type and name come from the message: they never cross Redis
        body = _Body(self._chunks(request_id, header.size, first), lambda: self.store.drop_replies(request_id))
        return MediaStream(ref.mimetype, ref.filename, header.size, body)

    def _next_part(self, request_id: str):
        frame = self.store.wait_frame(request_id, timeout=self.settings.media_timeout)
        return None if frame is None else protocol.read_media_frame(frame)

    def _refusal(self, slot_id: str, answer, taken: bool) -> GatewayError:
        if answer is None:
            return EngineTimeout(f"Slot {slot_id} did not {'answer' if taken else 'take the request'} within "
                                 f"{self.settings.media_timeout:g} s.")
        if answer.error == "media_gone":
            return MediaGone("media_gone", answer.detail or "WhatsApp no longer holds this file.")
        if answer.error == "media_too_large":
            return MediaTooLarge("media_too_large", answer.detail)
        return gateway_error(slot_id, answer, "The media could not be downloaded.")

    def _chunks(self, request_id: str, size: int | None, part) -> Iterator[bytes]:
        """The file's bytes as the slot sends them, from its first part on; Interrupted unless it ends
        whole (and of ``size``)."""
        sent = 0
        try:
            for index in itertools.count():
                if index:
                    part = self._next_part(request_id)
                if part is None:
                    raise Interrupted("the slot stopped sending the media")
                if isinstance(part, protocol.Failure):
                    raise Interrupted(f"the download failed midway ({part.error})")
                if isinstance(part, protocol.MediaEnd):
                    if part.size != sent or (size is not None and size != sent):
                        raise Interrupted("the media ended short of its size")
                    return
                chunk = self.sealer.unseal_chunk(part.sealed, protocol.chunk_context(request_id, index))
                sent += len(chunk)
                if size is not None and sent > size:  # never fill a Content-Length with a file it understates
                    raise Interrupted("the media is longer than its size")
                yield chunk
        finally:
            self.store.drop_replies(request_id)  # a client gone midway leaves nothing behind, and stops the slot
