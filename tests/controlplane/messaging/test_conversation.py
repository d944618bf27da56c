"""Every kind of /send and every chat action against a real Redis: the control plane's side
(Outbound) and the slot's (slotworker.commands.CommandHandler over the real command list, and the
message index the slot writes from its callbacks); only the engine is played here, by ``Engine``
below, which records what it was asked as the engine's own types."""

import base64
import time

import pytest
import redis

from controlplane.core import keys
from controlplane.core.config import Settings
from controlplane.core.errors import GatewayError, Refused
from controlplane.core.sealed import Sealer
from controlplane.core.store import SlotStore
from controlplane.lifecycle import Lifecycle
from controlplane.messaging.message_index import IndexedMessage
from controlplane.messaging.outbound import EDIT_WINDOW, MAX_READ_AUTHORS, REVOKE_WINDOW, Outbound, RateLimited
from slotworker.commands import CommandHandler
from slotworker.engines.base import (
    Contact,
    EngineUnavailable,
    Existence,
    Location,
    NotSupported,
    Quote,
    Reaction,
    SendRefused,
    SendResult,
)
from slotworker.outage import Patience
from tests.e2e.samples import ogg_opus
from tests.gateway import QUEUE_KEY
from tests.helpers import SlotLoop, active_slot

LINE, TO, MEMBER = "34666000333", "34611122233", "34622233344"
GROUP = "120363012345678901@g.us"


class Engine:
    """What the slot's engine was asked, as the engine's types; answers as told."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.refuse: Exception | None = None
        self.known = {TO}

    def _did(self, *call):
        self.calls.append(call)
        if self.refuse:
            raise self.refuse
        return SendResult(id=f"OUT{len(self.calls)}", timestamp=int(time.time()))

    def send(self, to, text=None, media=None, reply=None):
        return self._did("send", to, text, media, reply)

    def send_location(self, to, location, reply=None):
        return self._did("send_location", to, location, reply)

    def send_contact(self, to, contact, reply=None):
        return self._did("send_contact", to, contact, reply)

    def react(self, to, reaction):
        return self._did("react", to, reaction)

    def mark_read(self, chat, message_ids, sender=None):
        self._did("mark_read", chat, message_ids, sender)

    def send_presence(self, to, state):
        self._did("send_presence", to, state)

    def revoke(self, to, message_id):
        return self._did("revoke", to, message_id)

    def edit(self, to, message_id, text):
        return self._did("edit", to, message_id, text)

    def exists(self, number):
        self._did("exists", number)
        return Existence(number in self.known, f"{number}@s.whatsapp.net" if number in self.known else None)


def slot_loop(store: SlotStore, slot_id: str, engine: Engine) -> SlotLoop:
    """The slot worker's command loop: the real CommandHandler over the real list."""
    handler = CommandHandler(slot_id, store, engine, Sealer(QUEUE_KEY), Patience(slot_id), lambda r: None, 10_000_000)
    return SlotLoop(store, slot_id, handler.handle)


@pytest.fixture
def store(redis_client):
    return SlotStore(redis_client)


def make_outbound(store, tmp_path, **env) -> Outbound:
    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_QUEUE_KEY": QUEUE_KEY,
                                  "WHIN_SEND_TIMEOUT": "5", "WHIN_SEND_RATE": "600", "WHIN_SEND_BURST": "100", **env})
    return Outbound(settings, Lifecycle(settings, store, supervisor=None, publisher=None))


@pytest.fixture
def outbound(store, tmp_path):
    return make_outbound(store, tmp_path)


@pytest.fixture
def engine(store, outbound):
    engine = Engine()
    with slot_loop(store, active_slot(store, LINE), engine):
        yield engine


def received(outbound, message_id: str, chat: str = TO, sender: str = TO, text: bool = True, age: float = 0):
    """A message the line received, as the slot's callbacks index it."""
    outbound.index.record(LINE, chat, message_id, IndexedMessage(False, sender, int(time.time() - age), text))


def send(outbound, **body):
    return outbound.submit({"line": LINE, "to": TO, **body})


# --- each kind reaches the engine as its own type ---

def test_a_location_reaches_the_engine_as_a_location(outbound, engine):
    answer = send(outbound, location={"latitude": 40.4168, "longitude": -3.7038, "name": "Piso en Sol",
                                      "address": None})
    assert answer["id"] == "OUT1"
    assert engine.calls == [("send_location", TO, Location(40.4168, -3.7038, "Piso en Sol", None), None)]


def test_a_contact_from_name_and_number_is_a_vcard_3(outbound, engine):
    send(outbound, contact={"name": "Ana; agente", "number": "+34 611-177-788"})
    ((op, to, contact, reply),) = engine.calls
    assert (op, to, contact.name, reply) == ("send_contact", TO, "Ana; agente", None)
    assert contact.vcard.splitlines() == ["BEGIN:VCARD", "VERSION:3.0", "N:;Ana\\; agente;;;", "FN:Ana\\; agente",
                                          "TEL;type=CELL;type=VOICE;waid=34611177788:+34611177788", "END:VCARD"]


def test_a_given_vcard_goes_as_it_is_named_by_its_fn(outbound, engine):
    vcard = "BEGIN:VCARD\nVERSION:3.0\nFN:Oficina Centro\nTEL;type=WORK:+34911222333\nEND:VCARD"
    send(outbound, contact={"vcard": vcard})
    assert engine.calls == [("send_contact", TO, Contact("Oficina Centro", vcard), None)]


def test_a_group_is_a_destination_and_the_sent_message_is_indexed_as_the_lines(outbound, engine):
    answer = outbound.submit({"line": LINE, "to": GROUP, "text": "Hola a todos"})
    assert engine.calls == [("send", GROUP, "Hola a todos", None, None)]
    found = outbound.index.find(LINE, GROUP, answer["id"])
    assert (found.from_me, found.sender, found.text) == (True, LINE, True)
    assert outbound.index.find(LINE, TO, answer["id"]) is None  # per chat


def test_a_reply_quotes_a_received_message_with_its_author_and_payload(outbound, engine):
    received(outbound, "IN1", chat=GROUP, sender=MEMBER)
    quoted = {"conversation": "¿Tiene garaje?"}
    outbound.submit({"line": LINE, "to": GROUP, "text": "Sí", "reply_to": "IN1", "quoted": quoted})
    assert engine.calls == [("send", GROUP, "Sí", None, Quote("IN1", MEMBER, quoted))]


def test_a_reply_to_an_own_message_names_the_line(outbound, engine):
    first = send(outbound, text="Primero")
    send(outbound, location={"latitude": 1, "longitude": 2}, reply_to=first["id"])
    assert engine.calls[1] == ("send_location", TO, Location(1.0, 2.0), Quote(first["id"], LINE, None))


def test_a_reaction_on_a_received_message_and_on_an_own_one(outbound, engine):
    received(outbound, "IN1")
    own = send(outbound, text="Mío")
    send(outbound, reaction={"message_id": "IN1", "emoji": "👍"})
    send(outbound, reaction={"message_id": own["id"], "emoji": ""})
    assert engine.calls[1:] == [("react", TO, Reaction("IN1", "👍", False, TO)),
                                ("react", TO, Reaction(own["id"], "", True, None))]


def test_a_voice_note_in_ogg_opus_goes_as_it_is_with_its_length(outbound, engine):
    voice = ogg_opus(7)
    send(outbound, media={"data": base64.b64encode(voice).decode(), "mimetype": "audio/ogg", "ptt": True})
    ((op, to, text, media, reply),) = engine.calls
    assert (op, media.data, media.mimetype, media.ptt, media.seconds) == ("send", voice, "audio/ogg; codecs=opus",
                                                                          True, 7)


def test_without_ffmpeg_a_voice_note_that_is_not_opus_is_refused(store, tmp_path, engine):
    outbound = make_outbound(store, tmp_path, WHIN_FFMPEG="")
    with pytest.raises(Refused) as refused:
        send(outbound, media={"data": base64.b64encode(b"ID3" + bytes(500)).decode(), "mimetype": "audio/mpeg",
                              "ptt": True})
    assert refused.value.code == "voice_note_needs_ffmpeg" and "ffmpeg" in refused.value.detail
    assert engine.calls == []
    # ...while OGG/Opus still goes.
    send(outbound, media={"data": base64.b64encode(ogg_opus(2)).decode(), "mimetype": "audio/ogg", "ptt": True})
    assert engine.calls[0][3].seconds == 2


@pytest.mark.parametrize(("media", "code"), [
    ({"mimetype": "application/pdf", "ptt": True}, "unsupported_media_type"),
    ({"mimetype": "video/quicktime"}, "unsupported_media_type"),
    ({"mimetype": "image/bmp"}, "unsupported_media_type"),
    ({"mimetype": "audio/wav"}, "unsupported_media_type"),
])
def test_a_type_whatsapp_refuses_for_its_kind_is_refused(outbound, engine, media, code):
    with pytest.raises(Refused) as refused:
        send(outbound, media={"data": base64.b64encode(b"x" * 100).decode(), **media})
    assert refused.value.code == code and refused.value.detail
    assert engine.calls == []


# --- the chat actions ---

def test_read_marks_received_messages_one_call_per_author_in_a_group(outbound, engine):
    received(outbound, "G1", chat=GROUP, sender=MEMBER)
    received(outbound, "G2", chat=GROUP, sender="34633344455")
    received(outbound, "G3", chat=GROUP, sender=MEMBER)
    received(outbound, "D1")
    outbound.read({"line": LINE, "chat": GROUP, "message_ids": ["G1", "G2", "G3"]})
    outbound.read({"line": LINE, "chat": TO, "message_ids": ["D1"]})
    assert engine.calls == [("mark_read", GROUP, ["G1", "G3"], MEMBER), ("mark_read", GROUP, ["G2"], "34633344455"),
                            ("mark_read", TO, ["D1"], None)]


def test_the_webhooks_chat_finds_what_the_index_recorded_from_the_webhook(outbound, engine):
    fields = {"message_id": "W1", "chat": f"{TO}:7@s.whatsapp.net", "from": TO, "from_me": False}
    assert outbound.index.record_event(LINE, fields, {"Message": {"conversation": "hola"}, "Info": {}})
    outbound.read({"line": LINE, "chat": fields["chat"], "message_ids": ["W1"]})
    send(outbound, to=f"{TO}@s.whatsapp.net", text="ok", reply_to="W1")
    assert engine.calls[0] == ("mark_read", TO, ["W1"], None)
    assert engine.calls[1][1] == TO  # the engine is given the number, as for any chat


def test_a_group_message_whose_author_is_only_a_lid_cannot_be_acted_on(outbound, engine):
    fields = {"message_id": "L1", "chat": GROUP, "from": None, "from_lid": "123456789012345@lid", "from_me": False}
    assert outbound.index.record_event(LINE, fields, {"Message": {"conversation": "hola"}, "Info": {}})
    for act in (lambda: outbound.read({"line": LINE, "chat": GROUP, "message_ids": ["L1"]}),
                lambda: send(outbound, to=GROUP, reaction={"message_id": "L1", "emoji": "👍"}),
                lambda: send(outbound, to=GROUP, text="sí", reply_to="L1")):
        with pytest.raises(Refused) as refused:
            act()
        assert refused.value.code == "unknown_sender"
    assert engine.calls == []


def test_presence_reaches_the_engine(outbound, engine):
    outbound.presence({"line": LINE, "to": TO, "state": "recording"})
    assert engine.calls == [("send_presence", TO, "recording")]


def test_revoke_deletes_an_own_message_which_is_then_gone_from_the_index(outbound, engine):
    own = send(outbound, text="Error")
    assert outbound.revoke({"line": LINE, "to": TO, "message_id": own["id"]}) is None  # the API answers OK
    assert engine.calls[1] == ("revoke", TO, own["id"])
    with pytest.raises(Refused) as refused:
        outbound.edit({"line": LINE, "to": TO, "message_id": own["id"], "text": "x"})
    assert refused.value.code == "unknown_message"


def test_edit_replaces_an_own_text(outbound, engine):
    own = send(outbound, text="3 habitaciones")
    assert outbound.edit({"line": LINE, "to": TO, "message_id": own["id"], "text": "4 habitaciones"}) is None
    assert engine.calls[1] == ("edit", TO, own["id"], "4 habitaciones")


def test_exists_answers_for_a_known_and_an_unknown_number(outbound, engine):
    assert outbound.exists(LINE, TO) == {"number": TO, "exists": True, "jid": f"{TO}@s.whatsapp.net"}
    assert outbound.exists(LINE, "34699999999") == {"number": "34699999999", "exists": False, "jid": None}


# --- the refusals the message index makes, before the slot is asked ---

def _refused(call, code: str) -> str:
    with pytest.raises(GatewayError) as refused:
        call()
    assert refused.value.code == code and refused.value.status == 422, refused.value
    return refused.value.detail


def test_acting_on_a_message_the_line_never_had_is_unknown_message(outbound, engine):
    received(outbound, "ELSEWHERE", chat="34600000000")
    for call in (lambda: send(outbound, reaction={"message_id": "ELSEWHERE", "emoji": "👍"}),
                 lambda: send(outbound, text="hola", reply_to="ELSEWHERE"),
                 lambda: outbound.read({"line": LINE, "chat": TO, "message_ids": ["ELSEWHERE"]}),
                 lambda: outbound.revoke({"line": LINE, "to": TO, "message_id": "NOPE"}),
                 lambda: outbound.edit({"line": LINE, "to": TO, "message_id": "NOPE", "text": "x"})):
        _refused(call, "unknown_message")
    assert engine.calls == []


def test_revoking_or_editing_a_received_message_is_not_own_message(outbound, engine):
    received(outbound, "IN1")
    _refused(lambda: outbound.revoke({"line": LINE, "to": TO, "message_id": "IN1"}), "not_own_message")
    _refused(lambda: outbound.edit({"line": LINE, "to": TO, "message_id": "IN1", "text": "x"}), "not_own_message")
    assert engine.calls == []


def test_reading_an_own_message_is_not_received(outbound, engine):
    own = send(outbound, text="Mío")
    _refused(lambda: outbound.read({"line": LINE, "chat": TO, "message_ids": [own["id"]]}), "not_received")


def test_an_edit_after_whatsapps_window_or_of_a_non_text_is_refused(outbound, engine):
    outbound.index.record(LINE, TO, "OLD", IndexedMessage(True, LINE, int(time.time() - EDIT_WINDOW - 5), True))
    outbound.index.record(LINE, TO, "PIN", IndexedMessage(True, LINE, int(time.time()), False))
    assert "20 minutes" in _refused(lambda: outbound.edit({"line": LINE, "to": TO, "message_id": "OLD", "text": "x"}),
                                    "edit_window_passed")
    _refused(lambda: outbound.edit({"line": LINE, "to": TO, "message_id": "PIN", "text": "x"}), "not_editable")
    own_pin = send(outbound, location={"latitude": 1, "longitude": 1})
    _refused(lambda: outbound.edit({"line": LINE, "to": TO, "message_id": own_pin["id"], "text": "x"}), "not_editable")


def test_a_revoke_after_whatsapps_window_is_refused_and_one_just_inside_goes(outbound, engine):
    outbound.index.record(LINE, TO, "OLD", IndexedMessage(True, LINE, int(time.time() - REVOKE_WINDOW - 60), True))
    outbound.index.record(LINE, TO, "DAY", IndexedMessage(True, LINE, int(time.time() - REVOKE_WINDOW + 600), True))
    assert "48 hours" in _refused(lambda: outbound.revoke({"line": LINE, "to": TO, "message_id": "OLD"}),
                                  "revoke_window_passed")
    outbound.revoke({"line": LINE, "to": TO, "message_id": "DAY"})
    assert [call[0] for call in engine.calls] == ["revoke"]


def test_reading_more_authors_than_a_call_takes_is_refused_before_any_mark(outbound, engine):
    authors = [f"3463334445{n}" for n in range(MAX_READ_AUTHORS + 1)]
    for n, author in enumerate(authors):
        received(outbound, f"A{n}", chat=GROUP, sender=author)
    every = [f"A{n}" for n in range(len(authors))]
    assert "split" in _refused(lambda: outbound.read({"line": LINE, "chat": GROUP, "message_ids": every}),
                               "too_many_authors")
    assert engine.calls == []
    outbound.read({"line": LINE, "chat": GROUP, "message_ids": every[:MAX_READ_AUTHORS]})
    assert len(engine.calls) == MAX_READ_AUTHORS


# --- the engine's refusals and failures, through the slot ---

@pytest.mark.parametrize(("failure", "code", "status"), [
    (SendRefused("not_in_group", "The line is not in that group."), "not_in_group", 422),
    (SendRefused("invalid_media", "Not an image."), "invalid_media", 422),
    (NotSupported("The sim engine cannot do this yet."), "not_supported", 422),
    (EngineUnavailable("not connected"), "whatsapp_unreachable", 503),
])
def test_an_engine_refusal_is_its_code_never_a_500(outbound, engine, failure, code, status):
    engine.refuse = failure
    for call in (lambda: outbound.submit({"line": LINE, "to": GROUP, "location": {"latitude": 1, "longitude": 1}}),
                 lambda: outbound.presence({"line": LINE, "to": GROUP, "state": "paused"}),
                 lambda: outbound.exists(LINE, TO)):
        with pytest.raises(GatewayError) as refused:
            call()
        assert (refused.value.code, refused.value.status) == (code, status)


# --- the rate limit: every kind counts, cheaper kinds less ---

def test_every_kind_counts_against_the_rate_limit_and_cheap_ones_count_less(store, tmp_path, engine):
    outbound = make_outbound(store, tmp_path, WHIN_SEND_RATE="1", WHIN_SEND_BURST="2")
    for _ in range(20):  # two messages' worth of typing indicators (0.1 each)
        outbound.presence({"line": LINE, "to": TO, "state": "composing"})
    with pytest.raises(RateLimited):
        outbound.presence({"line": LINE, "to": TO, "state": "paused"})
    store.redis.delete(keys.rate_key(LINE))
    send(outbound, text="uno")
    send(outbound, text="dos")
    with pytest.raises(RateLimited):
        send(outbound, location={"latitude": 0, "longitude": 0})
    assert len(engine.calls) == 22
    store.redis.delete(keys.rate_key(LINE))
    outbound.exists(LINE, TO)
    outbound.exists(LINE, TO)
    with pytest.raises(RateLimited):  # a number check costs as much as a message
        outbound.exists(LINE, TO)


def test_the_chat_actions_outcomes_are_counted_as_sends_are(store, outbound, engine):
    received(outbound, "IN1")
    outbound.act("read", {"line": LINE, "chat": TO, "message_ids": ["IN1"]})
    with pytest.raises(Refused):
        outbound.act("revoke", {"line": LINE, "to": TO, "message_id": "IN1"})
    with pytest.raises(Refused):
        outbound.act("exists", LINE, "+34")
    stats = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in store.redis.hgetall(keys.STATS).items()}
    assert (stats["action_read_ok"], stats["action_revoke_not_own_message"], stats["action_exists_invalid_number"]) \
        == (1, 1, 1)


# --- nothing of the content in Redis ---

def test_the_index_holds_no_number_or_id_in_the_clear(store, outbound, engine, redis_client):
    received(outbound, "SECRETID1", sender=TO)
    send(outbound, text="Hola", reply_to="SECRETID1")
    dump = " ".join(f"{k} {redis_client.get(k)}" for k in redis_client.scan_iter(keys.message_key(LINE, "*")))
    assert dump.count(keys.message_key(LINE, "")) == 2
    assert TO not in dump and "SECRETID1" not in dump and "OUT1" not in dump and "Hola" not in dump
    assert 0 < redis_client.ttl(next(redis_client.scan_iter(keys.message_key(LINE, "*")))) <= 7 * 24 * 3600


def test_a_message_sent_is_answered_even_when_redis_fails_to_index_it(outbound, engine, monkeypatch):
    def fails(*args, **kwargs):
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(outbound.index, "record", fails)
    assert send(outbound, text="Hola")["id"] == "OUT1"  # not a 503 that a retry would send twice
    monkeypatch.setattr(outbound.index, "forget", fails)
    outbound.index.find = lambda *args: IndexedMessage(True, LINE, int(time.time()), True)
    outbound.revoke({"line": LINE, "to": TO, "message_id": "OUT1"})
    assert engine.calls[-1] == ("revoke", TO, "OUT1")
