"""Voice notes and the details WhatsApp shows of audio and video, with ffmpeg when it is installed.

A voice note (``ptt``) plays on a phone only as OGG/Opus. One that already is passes as it is, its
length read from its Ogg pages (no ffmpeg needed); any other audio a CRM is likely to hold (mp3,
m4a/aac, wav, …) is converted by ffmpeg (WHIN_FFMPEG; "" turns it off), and without ffmpeg it is
refused (``voice_note_needs_ffmpeg``). With ffmpeg (and its ffprobe) audio and video also get their
length, and a video a JPEG thumbnail.

The bytes never touch a disk: ffmpeg reads them from an in-memory file (memfd, which it can seek,
as an MP4 whose index is at its end needs) and writes to a pipe.

Bounded: every run ends by a deadline its caller gives (one for all the runs of a /send, see
outbound_media.py) and ``MediaTimeout`` says it did not; ffmpeg and ffprobe read only the
in-memory file (``-protocol_whitelist file``: no playlist reaching the network or another file)
and only the containers a CRM's media come in (``-format_whitelist``); a conversion stops at a
given length and size (``-t``, ``-fs``).
"""

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

OPUS_MIMETYPE = "audio/ogg; codecs=opus"
# What a voice note may be given as: ffmpeg turns any of these into OGG/Opus.
VOICE_SOURCES = frozenset({"audio/ogg", "audio/opus", "audio/mpeg", "audio/mp3", "audio/mp4", "audio/m4a",
                           "audio/x-m4a", "audio/aac", "audio/x-aac", "audio/wav", "audio/x-wav", "audio/wave",
                           "audio/vnd.wave", "audio/webm", "audio/amr", "audio/3gpp", "video/mp4"})
_OPUS_RATE = 48000  # an Ogg/Opus granule position counts 48 kHz samples, whatever the source rate
THUMBNAIL_WIDTH = 320
RUN_SECONDS = 60  # one run's bound when the caller gives no deadline
# What ffmpeg and ffprobe may read: the memfd (a file), in the containers of VOICE_SOURCES and of the
# audio and video kinds (outbound_media.py). The mov demuxer is named "mov,mp4,m4a,3gp,3g2,mj2".
_INPUT_BOUNDS = ["-protocol_whitelist", "file",
                 "-format_whitelist", "mp3,mov,mp4,m4a,3gp,3g2,mj2,ogg,wav,aac,amr,matroska,webm"]


class ConversionFailed(Exception):
    """ffmpeg could not read the file (it is not what its type says)."""


class MediaTimeout(ConversionFailed):
    """ffmpeg or ffprobe did not finish by the deadline."""


def base_type(mimetype: str | None) -> str:
    return (mimetype or "").split(";")[0].strip().lower()


def ogg_opus_seconds(data: bytes) -> int | None:
    """The length of an OGG/Opus file in whole seconds (at least 1), or None if it is not one."""
    if not data.startswith(b"OggS"):
        return None
    offset, first, last_granule, pre_skip = 0, True, 0, 0
    while offset < len(data):
        if data[offset:offset + 4] != b"OggS" or offset + 27 > len(data):
            return None
        granule = struct.unpack_from("<q", data, offset + 6)[0]
        segments = data[offset + 26]
        table = data[offset + 27:offset + 27 + segments]
        if len(table) != segments:
            return None
        body = offset + 27 + segments
        if first:
            head = data[body:body + 19]
            if not head.startswith(b"OpusHead") or len(head) < 12:
                return None
            pre_skip = struct.unpack_from("<H", head, 10)[0]
            first = False
        if granule >= 0:
            last_granule = granule
        offset = body + sum(table)
    if offset != len(data):
        return None
    return max(1, round(max(last_granule - pre_skip, 0) / _OPUS_RATE))


class Transcoder:
    def __init__(self, ffmpeg: str):
        self.ffmpeg = shutil.which(ffmpeg) if ffmpeg else None
        self.ffprobe = None
        if self.ffmpeg:
            beside = Path(self.ffmpeg).with_name("ffprobe")
            self.ffprobe = str(beside) if os.access(beside, os.X_OK) else shutil.which("ffprobe")

    @property
    def available(self) -> bool:
        return self.ffmpeg is not None

    def voice_note(self, data: bytes, deadline: float | None = None, max_seconds: float | None = None,
                   max_bytes: int | None = None) -> bytes:
        """Any audio ffmpeg reads, as OGG/Opus mono: what WhatsApp's voice notes are; cut at
        ``max_seconds`` and stopped past ``max_bytes`` (the caller refuses what reaches either)."""
        bounds = (["-t", f"{max_seconds:g}"] if max_seconds else []) + (["-fs", str(max_bytes)] if max_bytes else [])
        return self._ffmpeg(data, ["-vn", "-ac", "1", "-ar", "48000", "-c:a", "libopus", "-b:a", "32k",
                                   "-application", "voip", *bounds, "-f", "ogg"], deadline)

    def thumbnail(self, data: bytes, deadline: float | None = None) -> bytes | None:
        """A JPEG of a video's first frame, or None when ffmpeg cannot make one (MediaTimeout when
        it did not finish by the deadline)."""
        if not self.available:
            return None
        try:
            jpeg = self._ffmpeg(data, ["-frames:v", "1", "-vf", f"scale={THUMBNAIL_WIDTH}:-2", "-c:v", "mjpeg",
                                       "-f", "image2"], deadline)
        except MediaTimeout:
            raise
        except ConversionFailed:
            return None
        return jpeg if jpeg.startswith(b"\xff\xd8") else None

    def seconds(self, data: bytes, deadline: float | None = None) -> int | None:
        """An audio's or a video's length in whole seconds (at least 1), or None when unknown
        (MediaTimeout when ffprobe did not finish by the deadline)."""
        if not self.ffprobe:
            return None
        try:
            out = self._run(self.ffprobe, data, ["-v", "error", *_INPUT_BOUNDS, "-show_entries", "format=duration",
                                                 "-of", "default=noprint_wrappers=1:nokey=1"], deadline,
                            before_input=True)
            return max(1, round(float(out.decode("ascii").strip())))
        except MediaTimeout:
            raise
        except (ConversionFailed, ValueError, UnicodeDecodeError, OverflowError):
            return None

    def _ffmpeg(self, data: bytes, output: list[str], deadline: float | None) -> bytes:
        if not self.ffmpeg:
            raise ConversionFailed("ffmpeg is not installed")
        return self._run(self.ffmpeg, data, output, deadline)

    def _run(self, program: str, data: bytes, args: list[str], deadline: float | None,
             before_input: bool = False) -> bytes:
        timeout = RUN_SECONDS if deadline is None else min(RUN_SECONDS, deadline - time.monotonic())
        if timeout <= 0:
            raise MediaTimeout(f"no time left to run {Path(program).name}")
        fd = os.memfd_create("whin-media", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            source = f"/proc/self/fd/{fd}"
            if before_input:  # ffprobe: options, then the file
                command = [program, *args, source]
            else:
                command = [program, "-nostdin", "-hide_banner", "-loglevel", "error", *_INPUT_BOUNDS, "-i", source,
                           *args, "pipe:1"]
            try:
                # ffmpeg's messages name the file's tags at most: never logged, only a failure's fact is kept.
                result = subprocess.run(command, pass_fds=(fd,), capture_output=True, timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                raise MediaTimeout(f"{Path(program).name} took over {timeout:.0f} s") from None
            if result.returncode != 0 or not result.stdout:
                raise ConversionFailed(f"{Path(program).name} could not read the file")
            return result.stdout
        finally:
            os.close(fd)
