"""Voice notes and media details with the real ffmpeg (`make test` installs it, scripts/install-ffmpeg):
the test media are made by ffmpeg itself, in memory, from its own signal generators."""

import base64
import shutil
import subprocess

import pytest

from controlplane.core.errors import Refused
from controlplane.messaging.media_fetch import MediaAllow, MediaFetcher
from controlplane.messaging.outbound_media import MediaPreparer
from controlplane.messaging.transcode import OPUS_MIMETYPE, Transcoder, ogg_opus_seconds
from tests.e2e.samples import ogg_opus


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    assert found, "ffmpeg is not installed: `make ffmpeg` (scripts/install-ffmpeg) installs it"
    return found


def generated(ffmpeg: str, source: str, seconds: float, *output: str, into=None) -> bytes:
    """A file ffmpeg makes from one of its generators (``sine``, ``testsrc``), written to a pipe, or
    to the file ``into`` for a format that needs a seekable output (an MP4 with its index at the end)."""
    result = subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"{source}:duration={seconds}",
                             *output, str(into or "pipe:1")], capture_output=True, check=True, timeout=60)
    return into.read_bytes() if into else result.stdout


def preparer(ffmpeg: str = "ffmpeg") -> MediaPreparer:
    return MediaPreparer(MediaFetcher(MediaAllow(()), 10_000_000, 5), Transcoder(ffmpeg), 10_000_000)


def test_the_length_of_an_ogg_opus_file_is_read_from_its_pages(ffmpeg):
    real = generated(ffmpeg, "sine=frequency=440", 3.2, "-c:a", "libopus", "-f", "ogg")
    assert ogg_opus_seconds(real) == 3
    assert ogg_opus_seconds(ogg_opus(61)) == 61
    vorbis = generated(ffmpeg, "sine=frequency=440", 2, "-c:a", "libvorbis", "-f", "ogg")
    assert ogg_opus_seconds(vorbis) is None  # Ogg, but not Opus: WhatsApp plays no Vorbis voice note
    assert ogg_opus_seconds(b"OggS" + bytes(10)) is None
    assert ogg_opus_seconds(real[:-10]) is None  # cut short
    assert ogg_opus_seconds(b"ID3\x03") is None


@pytest.mark.parametrize(("mimetype", "output"), [
    ("audio/mpeg", ("-c:a", "libmp3lame", "-f", "mp3")),
    ("audio/wav", ("-f", "wav")),
    ("audio/mp4", ("-c:a", "aac", "-f", "ipod")),  # an m4a, its index at the end: ffmpeg must seek it
])
def test_a_voice_note_in_another_format_is_converted_to_ogg_opus(ffmpeg, mimetype, output, tmp_path):
    source = generated(ffmpeg, "sine=frequency=300", 4, *output, into=tmp_path / "voice" if "ipod" in output else None)
    prepared = preparer().prepare({"data": base64.b64encode(source).decode(), "mimetype": mimetype, "ptt": True})
    voice = base64.b64decode(prepared["data"])
    assert (prepared["mimetype"], prepared["ptt"], prepared["seconds"]) == (OPUS_MIMETYPE, True, 4)
    assert ogg_opus_seconds(voice) == 4 and voice != source


def test_a_voice_note_that_is_not_audio_it_claims_is_invalid_media(ffmpeg):
    with pytest.raises(Refused) as refused:
        preparer().prepare({"data": base64.b64encode(b"not audio at all" * 20).decode(), "mimetype": "audio/mpeg",
                            "ptt": True})
    assert refused.value.code == "invalid_media"


def test_a_video_gets_its_length_and_a_jpeg_thumbnail(ffmpeg):
    video = generated(ffmpeg, "testsrc=size=640x360:rate=10", 3, "-c:v", "mpeg4", "-f", "mp4",
                      "-movflags", "frag_keyframe+empty_moov")
    prepared = preparer().prepare({"data": base64.b64encode(video).decode(), "mimetype": "video/mp4",
                                   "caption": "El salón"})
    assert (prepared["seconds"], prepared["caption"]) == (3, "El salón")
    assert base64.b64decode(prepared["thumbnail"]).startswith(b"\xff\xd8")  # a JPEG
    assert base64.b64decode(prepared["data"]) == video  # the video itself goes as it is


def test_an_audio_gets_its_length(ffmpeg):
    mp3 = generated(ffmpeg, "sine=frequency=500", 5, "-c:a", "libmp3lame", "-f", "mp3")
    prepared = preparer().prepare({"data": base64.b64encode(mp3).decode(), "mimetype": "audio/mpeg"})
    assert (prepared["mimetype"], prepared.get("ptt"), prepared["seconds"]) == ("audio/mpeg", None, 5)


def test_without_ffmpeg_media_go_without_details_and_other_voice_notes_are_refused(ffmpeg):
    video = generated(ffmpeg, "testsrc=size=320x240:rate=10", 2, "-c:v", "mpeg4", "-f", "mp4",
                      "-movflags", "frag_keyframe+empty_moov")
    plain = preparer(ffmpeg="").prepare({"data": base64.b64encode(video).decode(), "mimetype": "video/mp4"})
    assert "seconds" not in plain and "thumbnail" not in plain
    assert preparer(ffmpeg="/nonexistent/ffmpeg").transcoder.available is False
    mp3 = generated(ffmpeg, "sine=frequency=440", 1, "-c:a", "libmp3lame", "-f", "mp3")
    with pytest.raises(Refused) as refused:
        preparer(ffmpeg="").prepare({"data": base64.b64encode(mp3).decode(), "mimetype": "audio/mpeg", "ptt": True})
    assert refused.value.code == "voice_note_needs_ffmpeg"


@pytest.mark.parametrize("given, shown", [
    ({"mimetype": "application/pdf"}, "document.pdf"),
    ({"mimetype": "application/octet-stream"}, "document.bin"),
    ({"mimetype": "application/pdf", "filename": "contrato.pdf"}, "contrato.pdf"),
])
def test_a_document_always_has_a_name_the_phone_shows(given, shown):
    prepared = preparer(ffmpeg="").prepare({"data": base64.b64encode(b"%PDF-1.4 x").decode(), **given})
    assert prepared["filename"] == shown
