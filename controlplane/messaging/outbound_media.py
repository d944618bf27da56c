"""A /send's media, made ready for the slot: its bytes (given, or fetched through the guarded
fetcher), its kind by mimetype, a voice note as OGG/Opus, and the details WhatsApp shows of audio
and video (length, a video's thumbnail) when ffmpeg can tell them (transcode.py).

The kinds follow the mimetype as WhatsApp's own apps send them; a type WhatsApp does not play as
that kind (a QuickTime video, a WAV audio that is not a voice note, a PDF as a voice note) is a 422
``unsupported_media_type`` saying what to send instead: as a document, any file goes.
"""

import base64
import binascii
import mimetypes

from controlplane.core.errors import Refused
from controlplane.messaging.media_fetch import MediaFetcher
from controlplane.messaging.transcode import (
    OPUS_MIMETYPE,
    VOICE_SOURCES,
    ConversionFailed,
    Transcoder,
    base_type,
    ogg_opus_seconds,
)

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
VIDEO_TYPES = frozenset({"video/mp4", "video/3gpp"})
AUDIO_TYPES = frozenset({"audio/aac", "audio/mp4", "audio/m4a", "audio/x-m4a", "audio/mpeg", "audio/mp3",
                         "audio/amr", "audio/ogg", "audio/opus"})


def kind_of(mimetype: str, ptt: bool) -> str:
    """image, video, audio, voice or document, as the engines choose by mimetype."""
    family = base_type(mimetype).split("/")[0]
    if ptt:
        return "voice"
    return {"image": "image", "video": "video", "audio": "audio"}.get(family, "document")


def default_filename(mimetype: str) -> str:
    """A document's name when the caller gave none: both engines then show the same one."""
    return "document" + (mimetypes.guess_extension(base_type(mimetype)) or "")


class MediaPreparer:
    def __init__(self, fetcher: MediaFetcher, transcoder: Transcoder, max_bytes: int):
        self.fetcher = fetcher
        self.transcoder = transcoder
        self.max_bytes = max_bytes

    def prepare(self, media: dict) -> dict:
        """The sealed send's ``media`` object (protocol.py) for a checked ``media`` request field."""
        data, mimetype = self._bytes(media)
        ptt = bool(media.get("ptt"))
        kind = kind_of(mimetype, ptt)
        prepared = {"mimetype": mimetype}
        if kind == "voice":
            data, prepared["mimetype"], seconds = self._voice_note(data, mimetype)
            prepared["ptt"] = True
            prepared["seconds"] = seconds
        elif kind == "image":
            self._allowed(mimetype, IMAGE_TYPES, "an image", "JPEG or PNG")
        elif kind == "video":
            self._allowed(mimetype, VIDEO_TYPES, "a video", "MP4 (H.264)")
            seconds, thumbnail = self.transcoder.seconds(data), self.transcoder.thumbnail(data)
            if seconds:
                prepared["seconds"] = seconds
            if thumbnail:
                prepared["thumbnail"] = base64.b64encode(thumbnail).decode("ascii")
        elif kind == "audio":
            self._allowed(mimetype, AUDIO_TYPES, "an audio", "MP3, M4A/AAC or OGG/Opus (or send it with \"ptt\": true)")
            seconds = ogg_opus_seconds(data) or self.transcoder.seconds(data)
            if seconds:
                prepared["seconds"] = seconds
        for name in ("filename", "caption"):
            if media.get(name):
                prepared[name] = media[name]
        if kind == "document" and "filename" not in prepared:  # a phone shows a nameless one as "Untitled"
            prepared["filename"] = default_filename(mimetype)
        if len(data) > self.max_bytes:
            raise Refused("media_too_large", f"The media is larger than {self.max_bytes} bytes.")
        return {"data": base64.b64encode(data).decode("ascii"), **prepared}

    def _bytes(self, media: dict) -> tuple[bytes, str]:
        if "data" in media:
            try:
                data = base64.b64decode(media["data"], validate=True)
            except (binascii.Error, ValueError):
                raise Refused("invalid_media", "'media.data' is not valid base64.") from None
            mimetype = media["mimetype"]
        else:
            data, fetched_type = self.fetcher.fetch(media["url"])
            mimetype = media.get("mimetype") or fetched_type
        if not data:
            raise Refused("invalid_media", "The media is empty.")
        if len(data) > self.max_bytes:
            raise Refused("media_too_large", f"The media is larger than {self.max_bytes} bytes.")
        return data, mimetype or "application/octet-stream"

    @staticmethod
    def _allowed(mimetype: str, allowed: frozenset, what: str, instead: str) -> None:
        if base_type(mimetype) not in allowed:
            raise Refused("unsupported_media_type", f"WhatsApp does not show {base_type(mimetype)} as {what}: send "
                                                    f"{instead}, or the file as a document (application/octet-stream).")

    def _voice_note(self, data: bytes, mimetype: str) -> tuple[bytes, str, int]:
        seconds = ogg_opus_seconds(data)
        if seconds is not None:  # already what WhatsApp plays: as it is
            return data, OPUS_MIMETYPE, seconds
        if base_type(mimetype) not in VOICE_SOURCES:
            raise Refused("unsupported_media_type", f"A voice note is audio (OGG/Opus, MP3, M4A/AAC, WAV), not "
                                                    f"{base_type(mimetype)}.")
        if not self.transcoder.available:
            raise Refused("voice_note_needs_ffmpeg", "This voice note is not OGG/Opus, the one format WhatsApp plays "
                                                     "as a voice note, and this gateway has no ffmpeg to convert it: "
                                                     "send OGG/Opus, or install ffmpeg (see WHIN_FFMPEG).")
        try:
            converted = self.transcoder.voice_note(data)
        except ConversionFailed:
            raise Refused("invalid_media", f"The voice note is not readable {base_type(mimetype)} audio.") from None
        seconds = ogg_opus_seconds(converted)
        if seconds is None:
            raise Refused("invalid_media", "The voice note could not be converted to OGG/Opus.")
        return converted, OPUS_MIMETYPE, seconds
