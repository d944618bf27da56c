"""The slot's side of the message index: every Message event its callbacks forward is indexed
(metadata only) before it is queued, on the real Redis, with the real runner and envelope."""

import time

import pytest
import redis

from controlplane.core import keys
from controlplane.core.config import Settings
from controlplane.core.sealed import Sealer
from controlplane.core.store import SlotStore
from controlplane.messaging.events import EventPublisher
from controlplane.messaging.message_index import MessageIndex, chat_of
from slotworker.runner import SlotRunner
from tests.gateway import QUEUE_KEY
from tests.helpers import active_slot
from tests.slotworker.test_runner import EchoingEngine

LINE, CONTACT, MEMBER = "34666000444", "34611122233", "34622233344"
GROUP = "120363012345678901@g.us"


def payload(message_id: str, message: dict, chat: dict, sender: dict, from_me: bool = False,
            timestamp: int | str | None = None) -> dict:
    info = {"ID": message_id, "MessageSource": {"Chat": chat, "Sender": sender, "IsFromMe": from_me}}
    if timestamp is not None:
        info["Timestamp"] = timestamp
    return {"Info": info, "Message": message}


PN = {"User": CONTACT, "Server": "s.whatsapp.net"}


@pytest.fixture
def runner(redis_client, tmp_path):
    store = SlotStore(redis_client)
    kwargs = redis_client.connection_pool.connection_kwargs
    connection = redis.Redis(unix_socket_path=kwargs["path"], db=kwargs["db"])
    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_QUEUE_KEY": QUEUE_KEY,
                                  "WHIN_MESSAGE_INDEX_TTL": "3600"})
    runner = SlotRunner(active_slot(store, LINE), settings, store, EchoingEngine, EventPublisher(settings, connection))
    runner.line = LINE
    yield runner
    connection.close()


@pytest.fixture
def index(redis_client):
    return MessageIndex(redis_client, Sealer(QUEUE_KEY), 3600)


def test_a_received_text_is_indexed_with_its_author_and_time(runner, index, redis_client):
    sent_at_ms = int(time.time() * 1000) - 60_000  # whatsmeow's Info.Timestamp: Unix ms, as a string
    runner.on_event("Message", payload("IN1", {"conversation": "Hola"}, PN, PN, timestamp=str(sent_at_ms)))
    found = index.find(LINE, CONTACT, "IN1")
    assert (found.from_me, found.sender, found.timestamp, found.text) == (False, CONTACT, sent_at_ms // 1000, True)
    assert index.find(LINE, "34600000000", "IN1") is None  # another chat
    (key,) = redis_client.scan_iter(keys.message_key(LINE, "*"))
    assert 3500 < redis_client.ttl(key) <= 3600  # WHIN_MESSAGE_INDEX_TTL


def test_a_group_message_is_indexed_by_the_group_with_its_member(runner, index):
    group = {"User": GROUP.split("@")[0], "Server": "g.us"}
    runner.on_event("Message", payload("G1", {"imageMessage": {"mimetype": "image/jpeg"}}, group,
                                       {"User": MEMBER, "Server": "s.whatsapp.net"}))
    found = index.find(LINE, GROUP, "G1")
    assert (found.from_me, found.sender, found.text) == (False, MEMBER, False)


def test_what_the_lines_own_phone_sends_is_the_lines_own(runner, index):
    runner.on_event("Message", payload("OWN1", {"extendedTextMessage": {"text": "x"}}, PN,
                                       {"User": LINE, "Server": "s.whatsapp.net"}, from_me=True))
    found = index.find(LINE, CONTACT, "OWN1")
    assert (found.from_me, found.sender, found.text) == (True, LINE, True)


@pytest.mark.parametrize("message", [
    {"reactionMessage": {"key": {"ID": "IN1"}, "text": "👍"}},
    {"protocolMessage": {"type": "REVOKE", "key": {"ID": "IN1"}}},
    {"editedMessage": {"message": {"protocolMessage": {"type": "MESSAGE_EDIT"}}}},
])
def test_reactions_edits_and_deletions_are_not_messages_to_act_on(runner, index, message):
    runner.on_event("Message", payload("ACT1", message, PN, PN))
    assert index.find(LINE, CONTACT, "ACT1") is None


def test_the_index_holds_neither_the_content_nor_the_numbers(runner, redis_client):
    runner.on_event("Message", payload("IN2", {"conversation": "Mi DNI es 12345678Z"}, PN, PN))
    (key,) = redis_client.scan_iter(keys.message_key(LINE, "*"))
    stored = f"{key} {redis_client.get(key)}"
    assert CONTACT not in stored and "IN2" not in stored and "12345678Z" not in stored


def test_chats_are_named_as_the_api_names_them():
    assert chat_of(f"{CONTACT}@s.whatsapp.net") == CONTACT
    assert chat_of(f"{CONTACT}:12@s.whatsapp.net") == CONTACT
    assert chat_of(GROUP) == GROUP
    assert chat_of("201234567890123@lid") is None and chat_of(None) is None
