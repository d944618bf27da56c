"""Voice notes and the details WhatsApp shows of audio and video, with ffmpeg when it is installed.

A voice note (``ptt``) plays on a phone only as OGG/Opus. One that already is passes as it is, its
length read from its Ogg pages (no ffmpeg needed); any other audio a CRM is likely to hold (mp3,
m4a/aac, wav, …) is converted by ffmpeg (WHIN_FFMPEG; "" turns it off), and without ffmpeg it is
refused (``voice_note_needs_ffmpeg``). With ffmpeg (and its ffprobe) audio and video also get their
length, and a video a JPEG thumbnail.

The bytes never touch a disk: ffmpeg reads them from an in-memory file (memfd, which it can seek,
as an MP4 whose index is at its end needs) and writes to a pipe.
"""

import os
import shutil
import struct
import subprocess
from pathlib import Path

OPUS_MIMETYPE = "audio/ogg; codecs=opus"
# What a voice note may be given as: ffmpeg turns any of these into OGG/Opus.
VOICE_SOURCES = frozenset({"audio/ogg", "audio/opus", "audio/mpeg", "audio/mp3", "audio/mp4", "audio/m4a",
                           "audio/x-m4a", "audio/aac", "audio/x-aac", "audio/wav", "audio/x-wav", "audio/wave",
                           "audio/vnd.wave", "audio/webm", "audio/amr", "audio/3gpp", "video/mp4"})
_OPUS_RATE = 48000  # an Ogg/Opus granule position counts 48 kHz samples, whatever the source rate
THUMBNAIL_WIDTH = 320
RUN_SECONDS = 60


class ConversionFailed(Exception):
    """ffmpeg could not read the file (it is not what its type says) or did not finish in time."""


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

    def voice_note(self, data: bytes) -> bytes:
        """Any audio ffmpeg reads, as OGG/Opus mono: what WhatsApp's voice notes are."""
        return self._ffmpeg(data, ["-vn", "-ac", "1", "-ar", "48000", "-c:a", "libopus", "-b:a", "32k",
                                   "-application", "voip", "-f", "ogg"])

    def thumbnail(self, data: bytes) -> bytes | None:
        """A JPEG of a video's first frame, or None when ffmpeg cannot make one."""
        if not self.available:
            return None
        try:
            jpeg = self._ffmpeg(data, ["-frames:v", "1", "-vf", f"scale={THUMBNAIL_WIDTH}:-2", "-c:v", "mjpeg",
                                       "-f", "image2"])
        except ConversionFailed:
            return None
        return jpeg if jpeg.startswith(b"\xff\xd8") else None

    def seconds(self, data: bytes) -> int | None:
        """An audio's or a video's length in whole seconds (at least 1), or None when unknown."""
        if not self.ffprobe:
            return None
        try:
            out = self._run(self.ffprobe, data, ["-v", "error", "-show_entries", "format=duration",
                                                 "-of", "default=noprint_wrappers=1:nokey=1"], before_input=True)
            return max(1, round(float(out.decode("ascii").strip())))
        except (ConversionFailed, ValueError, UnicodeDecodeError):
            return None

    def _ffmpeg(self, data: bytes, output: list[str]) -> bytes:
        if not self.ffmpeg:
            raise ConversionFailed("ffmpeg is not installed")
        return self._run(self.ffmpeg, data, output)

    def _run(self, program: str, data: bytes, args: list[str], before_input: bool = False) -> bytes:
        fd = os.memfd_create("whin-media", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            source = f"/proc/self/fd/{fd}"
            if before_input:  # ffprobe: options, then the file
                command = [program, *args, source]
            else:
                command = [program, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", source, *args, "pipe:1"]
            try:
                # ffmpeg's messages name the file's tags at most: never logged, only a failure's fact is kept.
                result = subprocess.run(command, pass_fds=(fd,), capture_output=True, timeout=RUN_SECONDS,
                                        check=False)
            except subprocess.TimeoutExpired:
                raise ConversionFailed(f"{Path(program).name} took over {RUN_SECONDS} s") from None
            if result.returncode != 0 or not result.stdout:
                raise ConversionFailed(f"{Path(program).name} could not read the file")
            return result.stdout
        finally:
            os.close(fd)
