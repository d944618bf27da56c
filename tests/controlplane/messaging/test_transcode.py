"""Voice notes and media details with the real ffmpeg (`make test` installs it, scripts/install-ffmpeg):
the test media are made by ffmpeg itself, in memory, from its own signal generators."""

import base64
import shutil
import subprocess
import time

import pytest

from controlplane.core.errors import Refused
from controlplane.messaging.media_fetch import MediaAllow, MediaFetcher
from controlplane.messaging.outbound_media import (
    MAX_VOICE_SECONDS,
    PROXY_TIMEOUT,
    MediaPreparer,
    prepare_budget,
)
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


# --- bounds: length, time, size, what ffmpeg may read ---

def fake_programs(tmp_path, body: str) -> str:
    """An ``ffmpeg`` and its ``ffprobe`` beside it, both the shell script ``body``; the ffmpeg's path."""
    for name in ("ffmpeg", "ffprobe"):
        script = tmp_path / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return str(tmp_path / "ffmpeg")


def test_a_voice_note_over_the_length_is_refused_before_it_is_converted(ffmpeg):
    # 15 minutes at 8 kb/s: under a megabyte, but seconds of CPU to convert had it not been measured first.
    mp3 = generated(ffmpeg, "sine=frequency=300:sample_rate=8000", 15 * 60, "-ac", "1", "-c:a", "libmp3lame",
                    "-b:a", "8k", "-f", "mp3")
    started = time.monotonic()
    with pytest.raises(Refused) as refused:
        preparer().prepare({"data": base64.b64encode(mp3).decode(), "mimetype": "audio/mpeg", "ptt": True})
    assert refused.value.code == "media_too_long" and str(MAX_VOICE_SECONDS // 60) in refused.value.detail
    assert time.monotonic() - started < 3  # ffprobe read its length; ffmpeg never ran
    as_audio = preparer().prepare({"data": base64.b64encode(mp3).decode(), "mimetype": "audio/mpeg"})
    assert as_audio["seconds"] == 900  # as an audio it goes (MAX_PLAYED_SECONDS)
    with pytest.raises(Refused) as refused:
        preparer().prepare({"data": base64.b64encode(ogg_opus(MAX_VOICE_SECONDS + 5)).decode(),
                            "mimetype": "audio/ogg", "ptt": True})
    assert refused.value.code == "media_too_long"  # an Opus one too, measured from its pages


def test_ffmpeg_that_hangs_is_media_timeout_within_the_budget(tmp_path):
    hanging = MediaPreparer(MediaFetcher(MediaAllow(()), 10_000_000, 5),
                            Transcoder(fake_programs(tmp_path, "exec sleep 30")), 10_000_000, budget=1.5)
    for media in ({"mimetype": "audio/mpeg", "ptt": True}, {"mimetype": "video/mp4"}, {"mimetype": "audio/mpeg"}):
        started = time.monotonic()
        with pytest.raises(Refused) as refused:
            hanging.prepare({"data": base64.b64encode(b"ID3" + bytes(500)).decode(), **media})
        assert refused.value.code == "media_timeout" and "nothing was sent" in refused.value.detail
        assert time.monotonic() - started < 4  # one deadline for every run, not one per run


def test_the_budget_with_the_send_timeout_fits_the_proxys_timeout():
    assert prepare_budget(15) + 15 < PROXY_TIMEOUT
    assert prepare_budget(15) + 15 + 20 > PROXY_TIMEOUT  # the fetch's own 20 s are inside the budget, not added
    assert prepare_budget(300) == 5


def test_ffmpeg_reads_only_the_memfd_in_known_containers_and_stops_at_a_size(ffmpeg, tmp_path):
    log = tmp_path / "argv"
    wrapper = fake_programs(tmp_path, f'echo "$@" >> {log}; exec "$(dirname {ffmpeg})/$(basename "$0")" "$@"')
    mp3 = generated(ffmpeg, "sine=frequency=300:sample_rate=8000", 15, "-ac", "1", "-c:a", "libmp3lame",
                    "-b:a", "8k", "-f", "mp3")
    small = MediaPreparer(MediaFetcher(MediaAllow(()), 10_000_000, 5), Transcoder(wrapper), 20_000)
    assert len(mp3) < 20_000
    with pytest.raises(Refused) as refused:  # 15 s of Opus at 32 kb/s is 60 kB: stopped past 20 kB
        small.prepare({"data": base64.b64encode(mp3).decode(), "mimetype": "audio/mpeg", "ptt": True})
    runs = log.read_text().splitlines()
    assert len(runs) == 2 and all("-protocol_whitelist file" in run and "-format_whitelist" in run for run in runs)
    assert "-fs 20001" in runs[1] and f"-t {MAX_VOICE_SECONDS + 1}" in runs[1]
    assert refused.value.code == "media_too_large"
    flac = generated(ffmpeg, "sine=frequency=300", 2, "-f", "flac")  # a container not on the list
    with pytest.raises(Refused) as refused:
        preparer().prepare({"data": base64.b64encode(flac).decode(), "mimetype": "audio/mpeg", "ptt": True})
    assert refused.value.code == "invalid_media"
