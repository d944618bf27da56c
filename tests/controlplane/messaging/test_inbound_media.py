"""POST /media's relay against a real Redis: the control plane's side (InboundMedia) and the slot's
(slotworker.downloads, on the real command list); only the engine's download is played here, by
``Engine`` below, since the engines' own downloads are the engine contract suite's."""

import os
import time

import pytest

from controlplane.core import keys, protocol
from controlplane.core.config import Settings
from controlplane.core.errors import Refused
from controlplane.core.sealed import Sealer
from controlplane.core.states import SlotStatus
from controlplane.core.store import SlotStore
from controlplane.lifecycle import Lifecycle
from controlplane.messaging.inbound_media import InboundMedia, Interrupted, MediaGone, MediaTooLarge
from slotworker import downloads
from slotworker.downloads import Downloads
from slotworker.engines.base import Download, MediaRefused
from slotworker.outage import Patience
from tests.gateway import QUEUE_KEY
from tests.helpers import SlotLoop, active_slot

LINE = "34666000222"
PHOTO = {"imageMessage": {"mimetype": "image/jpeg", "directPath": "/mms/image/x", "mediaKey": "a2V5",
                          "fileLength": "3000"}}


class Engine:
    """What the slot's engine answers to download(); ``chunks`` may raise midway."""

    def __init__(self, chunks=(), refuse: MediaRefused | None = None, size=None):
        self.chunks, self.refuse, self.size = chunks, refuse, size
        self.asked: list[dict] = []

    def download(self, message: dict, max_bytes: int) -> Download:
        self.asked.append(message)
        if self.refuse:
            raise self.refuse
        return Download(self.size, self.chunks)


class Slot(SlotLoop):
    """The slot worker's command loop, reduced to downloads: the real relay over the real list."""

    def __init__(self, store: SlotStore, slot_id: str, engine: Engine, max_bytes: int = 10_000):
        self.downloads = Downloads(slot_id, store, engine, Sealer(QUEUE_KEY), Patience(slot_id), max_bytes)
        super().__init__(store, slot_id, lambda raw: self.downloads.start(protocol.parse_command(raw)))


@pytest.fixture
def store(redis_client):
    return SlotStore(redis_client)


@pytest.fixture
def media(store, tmp_path):
    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_QUEUE_KEY": QUEUE_KEY,
                                  "WHIN_MEDIA_TIMEOUT": "3", "WHIN_MEDIA_MAX_BYTES": "10000"})
    return InboundMedia(settings, Lifecycle(settings, store, supervisor=None, publisher=None))


def reply_lists(redis_client) -> list[str]:
    return [k for k in redis_client.scan_iter("*") if k.startswith(keys.reply_key(""))]


def test_the_file_arrives_whole_in_order_and_leaves_nothing_in_redis(store, media, redis_client):
    slot_id = active_slot(store, LINE)
    parts = [os.urandom(1000) for _ in range(3)]
    engine = Engine(chunks=iter(parts), size=3000)
    named = {"documentMessage": {**PHOTO["imageMessage"], "mimetype": "application/pdf", "fileName": "piso.pdf"}}
    with Slot(store, slot_id, engine):
        stream = media.open({"line": LINE, "message": named})
        assert (stream.mimetype, stream.filename, stream.size) == ("application/pdf", "piso.pdf", 3000)
        assert b"".join(stream.body) == b"".join(parts)
    assert engine.asked == [named]  # the message reached the slot as given
    assert reply_lists(redis_client) == []


def test_the_chunks_wait_in_redis_sealed_never_in_the_clear(store, media, redis_client):
    slot_id = active_slot(store, LINE)
    secret = b"PLAINTEXT-PHOTO-" * 50
    with Slot(store, slot_id, Engine(chunks=iter([secret, secret]), size=2 * len(secret))):
        stream = media.open({"slot": slot_id, "message": PHOTO})  # it took the first chunk's frame
        time.sleep(0.3)  # the slot pushed everything meanwhile
        (key,) = reply_lists(redis_client)
        held = store._binary_redis().lrange(key, 0, -1)  # the second chunk's frame and the end's
        assert len(held) == 2 and all(b"PLAINTEXT" not in item for item in held)
        assert b"".join(stream.body) == secret * 2


@pytest.mark.parametrize("body, error, code", [
    ("not json", Refused, "invalid_json"),
    ({"line": LINE, "slot": "AB12CD34", "message": PHOTO}, Refused, "invalid_target"),
    ({"line": LINE, "message": "hola"}, Refused, "invalid_message"),
    ({"line": LINE, "message": {"conversation": "hola"}}, Refused, "no_media"),
    ({"line": LINE, "message": {"imageMessage": {"fileLength": "10001"}}}, MediaTooLarge, "media_too_large"),
    ({"line": 34666000222, "message": PHOTO}, Refused, "invalid_line"),
])
def test_bad_requests_are_refused_before_the_slot_is_asked(store, media, body, error, code):
    active_slot(store, LINE)
    with pytest.raises(error) as refused:
        media.open(body)
    assert refused.value.code == code and refused.value.detail
    assert store.redis.llen(keys.command_key(store.slot_for_line(LINE))) == 0


def test_a_sleeping_line_is_line_sleeping(store, media):
    slot_id = active_slot(store, LINE)
    store.move(slot_id, SlotStatus.ACTIVE, SlotStatus.SLEEPING)
    with pytest.raises(Refused) as refused:
        media.open({"line": LINE, "message": PHOTO})
    assert refused.value.code == "line_sleeping"


def test_a_file_whatsapp_forgot_is_media_gone(store, media, redis_client):
    slot_id = active_slot(store, LINE)
    engine = Engine(refuse=MediaRefused("media_gone", "404 from the media server"))
    with Slot(store, slot_id, engine), pytest.raises(MediaGone) as gone:
        media.open({"line": LINE, "message": PHOTO})
    assert (gone.value.status, gone.value.code) == (410, "media_gone")
    assert reply_lists(redis_client) == []


def _failing_midway():
    yield b"x" * 1000
    raise MediaRefused("media_corrupt", "the MAC does not match")


@pytest.mark.parametrize("chunks, size", [
    (_failing_midway, None),  # the last check failed: the end never comes
    (lambda: iter([b"x" * 6000, b"y" * 6000]), None),  # more than WHIN_MEDIA_MAX_BYTES after all
    (lambda: iter([b"x" * 1000]), 3000),  # shorter than the engine said
    (lambda: iter([b"x" * 1000, b"y" * 1000]), 1500),  # longer than the engine said
])
def test_a_stream_that_does_not_end_whole_is_cut_not_completed(store, media, redis_client, chunks, size):
    slot_id = active_slot(store, LINE)
    with Slot(store, slot_id, Engine(chunks=chunks(), size=size)):
        stream = media.open({"line": LINE, "message": PHOTO})
        with pytest.raises(Interrupted):
            b"".join(stream.body)
    assert reply_lists(redis_client) == []


def test_a_client_that_goes_away_midway_leaves_no_chunk_behind(store, media, redis_client):
    slot_id = active_slot(store, LINE)
    with Slot(store, slot_id, Engine(chunks=iter([b"a" * 1000] * 5), size=5000)):
        stream = media.open({"line": LINE, "message": PHOTO})
        next(stream.body)
        time.sleep(0.3)
        stream.body.close()  # what the WSGI server does when the client hangs up
    assert reply_lists(redis_client) == []


def test_a_response_closed_before_its_first_byte_leaves_nothing_behind(store, media, redis_client):
    slot_id = active_slot(store, LINE)
    with Slot(store, slot_id, Engine(chunks=iter([b"a" * 1000] * 3), size=3000)):
        stream = media.open({"line": LINE, "message": PHOTO})
        stream.body.close()  # never iterated: a generator's own finally would not run
        time.sleep(0.3)
    assert reply_lists(redis_client) == []


class _Counting:
    """The engine's chunks, counting how many the slot took from it."""

    def __init__(self, count: int):
        self.count, self.taken, self.closed = count, 0, False

    def __iter__(self):
        try:
            for _ in range(self.count):
                self.taken += 1
                yield b"z" * 100
        finally:
            self.closed = True


def test_the_slot_stops_downloading_once_the_client_went_away(store, media, redis_client):
    slot_id = active_slot(store, LINE)
    chunks = _Counting(10_000)
    counting = iter(chunks)
    with Slot(store, slot_id, Engine(chunks=counting, size=None)) as slot:
        slot.downloads.max_bytes = 10**9
        stream = media.open({"line": LINE, "message": PHOTO})
        next(stream.body)
        stream.body.close()
        deadline = time.monotonic() + 5
        while not chunks.closed and time.monotonic() < deadline:
            time.sleep(0.02)
    assert chunks.closed and chunks.taken < 100  # it stopped, and had never run far ahead of the reader
    assert reply_lists(redis_client) == []


def test_a_slow_reader_holds_the_slot_back_instead_of_filling_redis(store, media, redis_client):
    slot_id = active_slot(store, LINE)
    chunks = _Counting(80)
    with Slot(store, slot_id, Engine(chunks=iter(chunks), size=8000)):
        stream = media.open({"line": LINE, "message": PHOTO})
        time.sleep(0.5)  # the client reads nothing meanwhile
        (key,) = reply_lists(redis_client)
        assert redis_client.llen(key) <= downloads.MAX_UNREAD_FRAMES + 1 and chunks.taken < 20
        assert b"".join(stream.body) == b"z" * 8000  # and then all of it, in order
    assert reply_lists(redis_client) == []


def _refused_before_any_byte():
    raise MediaRefused("media_corrupt", "the MAC does not match")
    yield b""  # a generator: it fails on its first step, after the header went out


def test_a_file_that_fails_its_checks_before_any_byte_is_an_error_not_a_cut_response(store, media, redis_client):
    slot_id = active_slot(store, LINE)
    with Slot(store, slot_id, Engine(chunks=_refused_before_any_byte(), size=1000)), \
            pytest.raises(Refused) as refused:
        media.open({"line": LINE, "message": PHOTO})
    assert refused.value.code == "media_corrupt" and refused.value.status == 422
    assert reply_lists(redis_client) == []


@pytest.mark.parametrize("fields, mimetype, filename", [
    ({"mimetype": "text/html\r\nSet-Cookie: x=1"}, "image/jpeg", None),
    ({"mimetype": 7, "fileName": ["a"]}, "image/jpeg", None),
    ({"mimetype": "image/png; q=\"a\nb\""}, "image/jpeg", None),
    ({"mimetype": "audio/ogg; codecs=opus", "fileName": "nota.ogg"}, "audio/ogg; codecs=opus", "nota.ogg"),
])
def test_a_stated_type_or_name_that_could_split_a_header_is_not_used(fields, mimetype, filename):
    from controlplane.core.whatsapp_media import media_of

    ref = media_of({"imageMessage": fields})
    assert (ref.mimetype, ref.filename) == (mimetype, filename)


def test_a_message_bigger_than_any_media_reference_is_refused(store, media):
    active_slot(store, LINE)
    huge = {"imageMessage": {**PHOTO["imageMessage"], "jpegThumbnail": "A" * 300_000}}
    with pytest.raises(Refused) as refused:
        media.open({"line": LINE, "message": huge})
    assert refused.value.code == "invalid_message"


def test_a_slot_that_never_answers_is_engine_timeout(store, media):
    active_slot(store, LINE)
    started = time.monotonic()
    with pytest.raises(Exception) as timed_out:
        media.open({"line": LINE, "message": PHOTO})
    assert timed_out.value.code == "engine_timeout" and time.monotonic() - started < 6


@pytest.mark.parametrize("stated", [float("inf"), -5, "1e400", [3], None])
def test_a_stated_size_that_is_no_size_is_unknown_not_a_500(stated):
    from controlplane.core.whatsapp_media import media_of

    assert media_of({"imageMessage": {"fileLength": stated}}).length is None
