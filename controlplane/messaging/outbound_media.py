"""A /send's media, made ready for the slot: its bytes (given, or fetched through the guarded
fetcher), its kind by mimetype, a voice note as OGG/Opus, and the details WhatsApp shows of audio
and video (length, a video's thumbnail) when ffmpeg can tell them (transcode.py).

The kinds follow the mimetype as WhatsApp's own apps send them; a type WhatsApp does not play as
that kind (a QuickTime video, a WAV audio that is not a voice note, a PDF as a voice note) is a 422
``unsupported_media_type`` saying what to send instead: as a document, any file goes.

Bounded in time and length, so that a /send answers before the proxy in front gives up (a 504 there
would leave the request running on, and the integrator's retry would send it twice): the fetch and
every ffmpeg run share one deadline (``budget`` seconds, ``prepare_budget``), past which the media is
a 422 ``media_timeout``; a voice note over MAX_VOICE_SECONDS, or an audio or video over
MAX_PLAYED_SECONDS, is a 422 ``media_too_long``, measured before anything is converted.
"""

import base64
import binascii
import mimetypes
import time

from controlplane.core.errors import Refused
from controlplane.messaging.media_fetch import MediaFetcher
from controlplane.messaging.transcode import (
    OPUS_MIMETYPE,
    VOICE_SOURCES,
    ConversionFailed,
    MediaTimeout,
    Transcoder,
    base_type,
    ogg_opus_seconds,
)

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
VIDEO_TYPES = frozenset({"video/mp4", "video/3gpp"})
AUDIO_TYPES = frozenset({"audio/aac", "audio/mp4", "audio/m4a", "audio/x-m4a", "audio/mpeg", "audio/mp3",
                         "audio/amr", "audio/ogg", "audio/opus"})
MAX_VOICE_SECONDS = 10 * 60  # a voice note longer than this is an audio file: send it as one
MAX_PLAYED_SECONDS = 3 * 3600  # an audio or a video
PROXY_TIMEOUT = 60.0  # proxy_read_timeout in deploy/nginx-whinmovilla.conf
_ANSWER_MARGIN = 5.0  # Redis, sealing, the answer itself


def prepare_budget(send_timeout: float) -> float:
    """How long a /send may spend on its media so that it plus the slot's WHIN_SEND_TIMEOUT stays
    under the proxy's timeout (at least a few seconds, even when WHIN_SEND_TIMEOUT leaves none)."""
    return max(5.0, PROXY_TIMEOUT - send_timeout - _ANSWER_MARGIN)


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
    def __init__(self, fetcher: MediaFetcher, transcoder: Transcoder, max_bytes: int, budget: float = 40.0):
        self.fetcher = fetcher
        self.transcoder = transcoder
        self.max_bytes = max_bytes
        self.budget = budget

    def prepare(self, media: dict) -> dict:
        """The sealed send's ``media`` object (protocol.py) for a checked ``media`` request field."""
        deadline = time.monotonic() + self.budget
        try:
            return self._prepare(media, deadline)
        except MediaTimeout:
            raise Refused("media_timeout", f"Preparing the media took over {self.budget:g} s (the time a send may "
                                           "spend on it); nothing was sent. Send a shorter or smaller file, or a "
                                           "voice note already in OGG/Opus.") from None

    def _prepare(self, media: dict, deadline: float) -> dict:
        data, mimetype = self._bytes(media)
        ptt = bool(media.get("ptt"))
        kind = kind_of(mimetype, ptt)
        prepared = {"mimetype": mimetype}
        if kind == "voice":
            data, prepared["mimetype"], seconds = self._voice_note(data, mimetype, deadline)
            prepared["ptt"] = True
            prepared["seconds"] = seconds
        elif kind == "image":
            self._allowed(mimetype, IMAGE_TYPES, "an image", "JPEG or PNG")
        elif kind == "video":
            self._allowed(mimetype, VIDEO_TYPES, "a video", "MP4 (H.264)")
            seconds = self._measured(self.transcoder.seconds(data, deadline), MAX_PLAYED_SECONDS, "A video")
            thumbnail = self.transcoder.thumbnail(data, deadline)
            if seconds:
                prepared["seconds"] = seconds
            if thumbnail:
                prepared["thumbnail"] = base64.b64encode(thumbnail).decode("ascii")
        elif kind == "audio":
            self._allowed(mimetype, AUDIO_TYPES, "an audio", "MP3, M4A/AAC or OGG/Opus (or send it with \"ptt\": true)")
            seconds = ogg_opus_seconds(data) or self.transcoder.seconds(data, deadline)
            if self._measured(seconds, MAX_PLAYED_SECONDS, "An audio"):
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
    def _measured(seconds: int | None, limit: int, what: str) -> int | None:
        if seconds is not None and seconds > limit:
            raise Refused("media_too_long", f"{what} is {seconds} s long; WhatsApp takes at most {limit // 60} "
                                            "minutes of it here: send it as a document.")
        return seconds

    @staticmethod
    def _allowed(mimetype: str, allowed: frozenset, what: str, instead: str) -> None:
        if base_type(mimetype) not in allowed:
            raise Refused("unsupported_media_type", f"WhatsApp does not show {base_type(mimetype)} as {what}: send "
                                                    f"{instead}, or the file as a document (application/octet-stream).")

    def _voice_note(self, data: bytes, mimetype: str, deadline: float) -> tuple[bytes, str, int]:
        seconds = ogg_opus_seconds(data)
        if seconds is not None:  # already what WhatsApp plays: as it is
            return data, OPUS_MIMETYPE, self._voice_length(seconds)
        if base_type(mimetype) not in VOICE_SOURCES:
            raise Refused("unsupported_media_type", f"A voice note is audio (OGG/Opus, MP3, M4A/AAC, WAV), not "
                                                    f"{base_type(mimetype)}.")
        if not self.transcoder.available:
            raise Refused("voice_note_needs_ffmpeg", "This voice note is not OGG/Opus, the one format WhatsApp plays "
                                                     "as a voice note, and this gateway has no ffmpeg to convert it: "
                                                     "send OGG/Opus, or install ffmpeg (see WHIN_FFMPEG).")
        self._voice_length(self.transcoder.seconds(data, deadline))  # measured first: ffprobe reads headers
        try:
            # Cut one second past the limit and stopped one byte past the size: what reaches either is refused.
            converted = self.transcoder.voice_note(data, deadline, MAX_VOICE_SECONDS + 1, self.max_bytes + 1)
        except MediaTimeout:
            raise
        except ConversionFailed:
            raise Refused("invalid_media", f"The voice note is not readable {base_type(mimetype)} audio.") from None
        if len(converted) > self.max_bytes:
            raise Refused("media_too_large", f"The voice note as OGG/Opus is larger than {self.max_bytes} bytes.")
        seconds = ogg_opus_seconds(converted)
        if seconds is None:
            raise Refused("invalid_media", "The voice note could not be converted to OGG/Opus.")
        return converted, OPUS_MIMETYPE, self._voice_length(seconds)

    @staticmethod
    def _voice_length(seconds: int | None) -> int | None:
        if seconds is not None and seconds > MAX_VOICE_SECONDS:
            raise Refused("media_too_long", f"The voice note is {seconds} s long; a voice note is at most "
                                            f"{MAX_VOICE_SECONDS // 60} minutes: send a longer one as an audio "
                                            "(\"ptt\": false).")
        return seconds
