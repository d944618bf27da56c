"""Outbound (POST /send) against a real Redis; the slot worker's side is a thread on the command list."""

import base64
import threading
import time

import pytest

from controlplane.core import keys, protocol
from controlplane.core.config import Settings
from controlplane.core.errors import EngineTimeout, GatewayError, Refused
from controlplane.core.ids import InvalidIdentifier
from controlplane.core.sealed import Sealer
from controlplane.core.states import SlotStatus
from controlplane.core.store import SlotStore
from controlplane.lifecycle import Lifecycle
from controlplane.messaging.asks import MAX_CAPTION, MAX_TEXT, parse_send_request
from controlplane.messaging.outbound import Outbound, RateLimited
from tests.gateway import QUEUE_KEY

LINE, TO = "34666000111", "34611122233"


def _settings(tmp_path, **env) -> Settings:
    return Settings.from_env({"WHIN_API_TOKENS": "x", "WHIN_DATA_DIR": str(tmp_path), "WHIN_QUEUE_KEY": QUEUE_KEY,
                              "WHIN_SEND_TIMEOUT": "10", **env})


def _outbound(redis_client, tmp_path, **env) -> Outbound:
    settings = _settings(tmp_path, **env)
    return Outbound(settings, Lifecycle(settings, SlotStore(redis_client), supervisor=None, publisher=None))


def _active_slot(store: SlotStore, line: str = LINE) -> str:
    (slot_id,) = store.create_slots(1)
    assert store.begin_pairing(slot_id, time.time() + 60)
    store.pair_success(slot_id, line)
    assert store.require(slot_id).status is SlotStatus.ACTIVE
    return slot_id


class Worker:
    """The slot worker's side of the command list: pops commands and answers them (or not)."""

    def __init__(self, store: SlotStore, slot_id: str, answer: bool = True):
        self.store, self.slot_id, self.answer = store, slot_id, answer
        self.taken: list[protocol.Command] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Worker":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            raw = self.store.wait_command(self.slot_id, timeout=0.05)
            if raw is None:
                continue
            command = protocol.parse_command(raw)
            self.taken.append(command)
            if self.answer:
                sent = protocol.Sent(id=f"MSG{len(self.taken)}", timestamp=1764170000)
                self.store.push_reply(command.reply, sent.to_dict())


def _count(redis_client, name: str) -> int:
    return int(redis_client.hget(keys.STATS, name) or 0)


# --- parsing: every refusal has its code ---

@pytest.mark.parametrize(("body", "code"), [
    ([], "invalid_json"),
    ("text", "invalid_json"),
    ({"to": TO, "text": "hi"}, "invalid_target"),
    ({"line": LINE, "slot": "AB12CD34", "to": TO, "text": "hi"}, "invalid_target"),
    ({"line": 34666000111, "to": TO, "text": "hi"}, "invalid_line"),
    ({"line": LINE, "to": "+34611122233", "text": "hi"}, "invalid_number"),
    ({"line": LINE, "to": 34611122233, "text": "hi"}, "invalid_number"),
    ({"line": LINE, "to": TO}, "missing_content"),
    ({"line": LINE, "to": TO, "text": "hi", "media": {"url": "https://example.com/a.jpg"}}, "invalid_content"),
    ({"line": LINE, "to": TO, "text": ""}, "invalid_text"),
    ({"line": LINE, "to": TO, "text": "x" * (MAX_TEXT + 1)}, "invalid_text"),
    ({"line": LINE, "to": TO, "media": {}}, "invalid_media"),
    ({"line": LINE, "to": TO, "media": {"url": "https://e.com/a", "data": "AA=="}}, "invalid_media"),
    ({"line": LINE, "to": TO, "media": {"data": "AA=="}}, "invalid_media"),
    ({"line": LINE, "to": TO, "media": {"url": "ftp://example.com/a.jpg"}}, "invalid_media"),
    ({"line": LINE, "to": TO, "media": {"url": None}}, "invalid_media"),
    ({"line": LINE, "to": TO, "media": {"url": "https://e.com/a", "caption": "x" * (MAX_CAPTION + 1)}},
     "invalid_media"),
])
def test_a_malformed_request_is_refused_with_its_code(body, code):
    with pytest.raises((Refused, InvalidIdentifier)) as caught:
        parse_send_request(body)
    assert caught.value.code == code


def test_a_well_formed_request_parses():
    request = parse_send_request({"slot": "ab12cd34", "to": TO, "media": {"data": "AA==", "mimetype": "image/png",
                                                                         "caption": None}})
    assert (request.line, request.slot, request.to, request.text) == (None, "AB12CD34", TO, None)


# --- submit: what the worker gets, what the caller gets, what is counted ---

def test_a_text_reaches_the_worker_sealed_and_its_answer_is_the_result(redis_client, tmp_path):
    outbound = _outbound(redis_client, tmp_path)
    slot_id = _active_slot(outbound.store)
    with Worker(outbound.store, slot_id) as worker:
        assert outbound.submit({"line": LINE, "to": TO, "text": "Hola"}) == {"id": "MSG1", "timestamp": 1764170000}
    (command,) = worker.taken
    assert isinstance(command, protocol.Send)
    assert "Hola" not in str(command.to_dict())  # sealed on its way through Redis
    assert Sealer(QUEUE_KEY).unseal(command.sealed) == {"to": TO, "text": "Hola"}
    assert _count(redis_client, "sent") == 1


def test_media_data_goes_to_the_worker_decoded_and_re_encoded(redis_client, tmp_path):
    outbound = _outbound(redis_client, tmp_path)
    slot_id = _active_slot(outbound.store)
    data = base64.b64encode(b"\x89PNG fake").decode()
    with Worker(outbound.store, slot_id) as worker:
        outbound.submit({"slot": slot_id, "to": TO, "media": {"data": data, "mimetype": "image/png", "caption": "c"}})
    message = Sealer(QUEUE_KEY).unseal(worker.taken[0].sealed)
    assert message["media"] == {"data": data, "mimetype": "image/png", "caption": "c"}


@pytest.mark.parametrize(("body", "code"), [
    ({"line": LINE, "to": TO, "text": ""}, "invalid_text"),
    ({"line": "34699999999", "to": TO, "text": "hi"}, "unknown_line"),
    ({"line": "bad", "to": TO, "text": "hi"}, "invalid_line"),
    ({"line": LINE, "to": TO, "media": {"data": "not base64!", "mimetype": "image/png"}}, "invalid_media"),
])
def test_every_refusal_is_counted_by_its_code_and_nothing_reaches_the_worker(redis_client, tmp_path, body, code):
    outbound = _outbound(redis_client, tmp_path)
    slot_id = _active_slot(outbound.store)
    with Worker(outbound.store, slot_id) as worker, pytest.raises((Refused, InvalidIdentifier)) as caught:
        outbound.submit(body)
    assert caught.value.code == code
    assert worker.taken == []
    assert _count(redis_client, f"send_{code}") == 1
    assert _count(redis_client, "sent") == 0


def test_a_slot_without_a_line_or_asleep_is_refused(redis_client, tmp_path):
    outbound = _outbound(redis_client, tmp_path)
    (available,) = outbound.store.create_slots(1)
    with pytest.raises(Refused) as caught:
        outbound.submit({"slot": available, "to": TO, "text": "hi"})
    assert caught.value.code == "not_active"
    sleeping = _active_slot(outbound.store)
    outbound.store.move(sleeping, SlotStatus.ACTIVE, SlotStatus.SLEEPING)
    with pytest.raises(Refused) as caught:
        outbound.submit({"line": LINE, "to": TO, "text": "hi"})
    assert caught.value.code == "line_sleeping"
    assert (_count(redis_client, "send_not_active"), _count(redis_client, "send_line_sleeping")) == (1, 1)


def test_past_the_burst_a_line_is_rate_limited_with_a_429(redis_client, tmp_path):
    # One message a minute after a burst of two: the third in a row waits for most of a minute.
    outbound = _outbound(redis_client, tmp_path, WHIN_SEND_RATE="1", WHIN_SEND_BURST="2")
    slot_id = _active_slot(outbound.store)
    with Worker(outbound.store, slot_id) as worker:
        for _ in range(2):
            outbound.submit({"line": LINE, "to": TO, "text": "hi"})
        with pytest.raises(RateLimited) as caught:
            outbound.submit({"line": LINE, "to": TO, "text": "hi"})
    assert (caught.value.status, caught.value.code) == (429, "rate_limited")
    assert caught.value.retry_after > 0
    assert len(worker.taken) == 2
    assert (_count(redis_client, "sent"), _count(redis_client, "send_rate_limited")) == (2, 1)


def test_a_worker_that_never_takes_the_message_gets_it_withdrawn(redis_client, tmp_path):
    outbound = _outbound(redis_client, tmp_path, WHIN_SEND_TIMEOUT="0.2")
    slot_id = _active_slot(outbound.store)  # and no worker at all
    with pytest.raises(EngineTimeout) as caught:
        outbound.submit({"line": LINE, "to": TO, "text": "hi"})
    assert (caught.value.status, caught.value.code) == (504, "engine_timeout")
    assert "nothing was sent" in caught.value.detail
    assert redis_client.llen(keys.command_key(slot_id)) == 0  # withdrawn: no late send
    assert _count(redis_client, "send_engine_timeout") == 1


def test_a_worker_that_takes_the_message_and_never_answers_is_an_engine_timeout(redis_client, tmp_path):
    outbound = _outbound(redis_client, tmp_path, WHIN_SEND_TIMEOUT="0.5")
    slot_id = _active_slot(outbound.store)
    with Worker(outbound.store, slot_id, answer=False) as worker, pytest.raises(EngineTimeout) as caught:
        outbound.submit({"line": LINE, "to": TO, "text": "hi"})
    if worker.taken:  # it took it in time (it usually does; if not, the command was withdrawn)
        assert "sent by now or never will be" in caught.value.detail
    assert redis_client.llen(keys.command_key(slot_id)) == 0
    assert _count(redis_client, "send_engine_timeout") == 1


@pytest.mark.parametrize(("reply", "error", "status"), [
    (protocol.Failure(protocol.WHATSAPP_UNREACHABLE, "offline"), "whatsapp_unreachable", 503),
    (protocol.Failure(protocol.ENGINE_TIMEOUT, "the engine hung"), "engine_timeout", 504),
    (protocol.Failure("not_on_whatsapp", "no such number"), "not_on_whatsapp", 422),
])
def test_a_worker_refusal_becomes_the_answer_and_is_counted(redis_client, tmp_path, reply, error, status):
    outbound = _outbound(redis_client, tmp_path)
    slot_id = _active_slot(outbound.store)

    def refuse():
        command = protocol.parse_command(outbound.store.wait_command(slot_id, timeout=10))
        outbound.store.push_reply(command.reply, reply.to_dict())

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    with pytest.raises(GatewayError) as caught:
        outbound.submit({"line": LINE, "to": TO, "text": "hi"})
    thread.join(10)
    assert (caught.value.code, caught.value.status) == (error, status)
    assert _count(redis_client, f"send_{error}") == 1
