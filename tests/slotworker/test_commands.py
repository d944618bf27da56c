"""The slot's handlers of the conversation ops: unseal, one engine method with the engine's types,
one reply; every failure a code, never the content (and never a crash of the command loop)."""

import base64
import time

import pytest

from controlplane.core import protocol
from controlplane.core.sealed import Sealer
from slotworker.commands import CommandHandler
from slotworker.engines.base import NotSupported, OutboundMedia, Quote, SendRefused, SendResult
from slotworker.outage import Patience
from tests.gateway import QUEUE_KEY

SEALER = Sealer(QUEUE_KEY)


class Engine:
    def __init__(self):
        self.sent = []

    def send(self, to, text=None, media=None, reply=None):
        self.sent.append((to, text, media, reply))
        return SendResult("OUT2", 1764170001)

    def edit(self, to, message_id, text):
        raise SendRefused("send_failed", "whatsmeow said no")

    def react(self, to, reaction):
        raise NotSupported("The test engine cannot react.")

    def send_presence(self, to, state):
        self.sent.append((to, state))


def handler(engine) -> CommandHandler:
    return CommandHandler("AB12CD34", store=None, engine=engine, sealer=SEALER, patience=Patience("AB12CD34"),
                          teardown=lambda reason: None, media_max_bytes=1000)


def test_a_send_without_a_reply_quotes_nothing():
    engine = Engine()
    answer = handler(engine).send(protocol.Send(sealed=SEALER.seal({"to": "34611122233", "text": "Hola"})))
    assert answer == protocol.Sent("OUT2", 1764170001)
    assert engine.sent == [("34611122233", "Hola", None, None)]


def test_a_reply_and_every_media_detail_reach_the_engine_typed():
    engine = Engine()
    media = {"data": base64.b64encode(b"OggS...").decode(), "mimetype": "audio/ogg; codecs=opus", "ptt": True,
             "seconds": 4, "thumbnail": base64.b64encode(b"\xff\xd8jpeg").decode()}
    reply = {"message_id": "IN1", "sender": "34622233344", "message": {"conversation": "¿Garaje?"}}
    answer = handler(engine).send(protocol.Send(sealed=SEALER.seal({"to": "120363012345678901@g.us", "media": media,
                                                                    "reply": reply})))
    assert answer == protocol.Sent("OUT2", 1764170001)
    assert engine.sent == [("120363012345678901@g.us", None, OutboundMedia(
        b"OggS...", "audio/ogg; codecs=opus", None, None, True, 4, b"\xff\xd8jpeg"),
        Quote("IN1", "34622233344", {"conversation": "¿Garaje?"}))]


def test_an_expired_request_is_never_done():
    engine = Engine()
    command = protocol.Send(sealed=SEALER.seal({"to": "34611122233", "text": "tarde"}), deadline=time.time() - 1)
    assert handler(engine).send(command).error == protocol.ENGINE_TIMEOUT
    assert engine.sent == []


@pytest.mark.parametrize(("command", "code"), [
    (protocol.Edit(sealed=SEALER.seal({"to": "34611122233", "message_id": "X", "text": "y"})), "send_failed"),
    (protocol.React(sealed=SEALER.seal({"to": "34611122233", "reaction": {"message_id": "X", "emoji": "👍",
                                                                          "from_me": False}})), "not_supported"),
    (protocol.Presence(sealed=SEALER.seal({"to": "34611122233"})), "send_failed"),  # no state: unreadable
    (protocol.Exists(sealed="not a sealed token"), "send_failed"),
])
def test_a_refusal_an_op_the_engine_lacks_or_an_unreadable_request_is_a_failure_code(command, code):
    answer = handler(Engine()).handlers[command.op](command)
    assert isinstance(answer, protocol.Failure) and answer.error == code
    assert "34611122233" not in answer.detail


def test_an_engine_error_after_the_request_was_read_is_not_an_unreadable_request():
    class Breaking(Engine):
        def send(self, to, text=None, media=None, reply=None):
            self.sent.append(to)
            raise ValueError("a protobuf field, after WhatsApp took the message")

    engine = Breaking()
    answer = handler(engine).send(protocol.Send(sealed=SEALER.seal({"to": "34611122233", "text": "Hola"})))
    assert engine.sent == ["34611122233"]
    # It may have gone: the caller hears "done by now or never" (a 504), not "failed" (a 422 one retries).
    assert answer.error == protocol.ENGINE_TIMEOUT and "may have been done" in answer.detail


def test_a_request_that_does_not_read_never_reaches_the_engine():
    engine = Engine()
    bad_media = {"to": "34611122233", "media": {"data": 5, "mimetype": "image/png"}}
    answer = handler(engine).send(protocol.Send(sealed=SEALER.seal(bad_media)))
    assert (answer.error, engine.sent) == ("send_failed", [])
    assert "nothing was sent" in answer.detail
