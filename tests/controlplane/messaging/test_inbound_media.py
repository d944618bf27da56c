"""POST /media's relay against a real Redis: the control plane's side (InboundMedia) and the slot's
(slotworker.downloads, on the real command list); only the engine's download is played here, by
``Engine`` below, since the engines' own downloads are the engine contract suite's."""

import os
import threading
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
from slotworker.downloads import Downloads
from slotworker.engines.base import Download, MediaRefused
from slotworker.outage import Patience
from tests.gateway import QUEUE_KEY
from tests.helpers import active_slot

LINE = "34666000222"
PHOTO = {"imageMessage": {"mimetype": "image/jpeg", "directPath": "/mms/image/x", "mediaKey": "a2V5",
                          "fileLength": "3000"}}


class Engine:
    """What the slot's engine answers to download(); ``chunks`` may raise midway."""

    def __init__(self, chunks=(), refuse: MediaRefused | None = None, size=None, filename=None):
        self.chunks, self.refuse, self.size, self.filename = chunks, refuse, size, filename
        self.asked: list[dict] = []

    def download(self, message: dict, max_bytes: int) -> Download:
        self.asked.append(message)
        if self.refuse:
            raise self.refuse
        return Download("image/jpeg", self.filename, self.size, self.chunks)


class Slot:
    """The slot worker's command loop, reduced to downloads: the real relay over the real list."""

    def __init__(self, store: SlotStore, slot_id: str, engine: Engine, max_bytes: int = 10_000):
        self.store, self.slot_id = store, slot_id
        self.downloads = Downloads(slot_id, store, engine, Sealer(QUEUE_KEY), Patience(slot_id), max_bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        while not self._stop.is_set():
            raw = self.store.pop_command(self.slot_id, timeout=0.05)
            if raw:
                self.downloads.start(protocol.parse_command(raw))


@pytest.fixture
def store(redis_client):
    return SlotStore(redis_client)


@pytest.fixture
def media(store, tmp_path):
    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_QUEUE_KEY": QUEUE_KEY,
                                  "WHIN_MEDIA_TIMEOUT": "3", "WHIN_MEDIA_MAX_BYTES": "10000"})
    return InboundMedia(settings, Lifecycle(settings, store, supervisor=None, publisher=None))


def reply_lists(redis_client) -> list[str]:
    return [k for k in redis_client.scan_iter("*") if k.startswith(keys.reply_key("").rstrip(":"))]


def test_the_file_arrives_whole_in_order_and_leaves_nothing_in_redis(store, media, redis_client):
    slot_id = active_slot(store, LINE)
    parts = [os.urandom(1000) for _ in range(3)]
    engine = Engine(chunks=iter(parts), size=3000, filename="piso.jpg")
    with Slot(store, slot_id, engine):
        stream = media.open({"line": LINE, "message": PHOTO})
        assert (stream.mimetype, stream.filename, stream.size) == ("image/jpeg", "piso.jpg", 3000)
        assert b"".join(stream.body) == b"".join(parts)
    assert engine.asked == [PHOTO]  # the message reached the slot as given
    assert reply_lists(redis_client) == []


def test_the_chunks_wait_in_redis_sealed_never_in_the_clear(store, media, redis_client):
    slot_id = active_slot(store, LINE)
    secret = b"PLAINTEXT-PHOTO-" * 50
    with Slot(store, slot_id, Engine(chunks=iter([secret]), size=len(secret))):
        stream = media.open({"slot": slot_id, "message": PHOTO})
        time.sleep(0.3)  # the slot pushed everything meanwhile
        (key,) = reply_lists(redis_client)
        held = store._binary_redis().lrange(key, 0, -1)  # the chunk's frame and the end's
        assert len(held) == 2 and all(b"PLAINTEXT" not in item for item in held)
        assert b"".join(stream.body) == secret


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
