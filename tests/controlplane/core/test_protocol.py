"""The slot protocol: every command and reply round-trips through its wire dict (JSON in Redis), in
today's wire shape; an unknown op and a malformed command are refused."""

import json

import pytest

from controlplane.core import protocol

COMMANDS = [
    protocol.Logout(reason="killed"),
    protocol.Logout(),
    protocol.Send(sealed="gAAAA-sealed", reply="r1", deadline=1764170060.5),
    protocol.PairCode(line="34666123456", reply="r2", deadline=1764170060.5),
    protocol.Download(sealed="gAAAA-sealed-message", reply="r3", deadline=1764170060.5),
    *(op(sealed="gAAAA-sealed", reply=f"r-{op.op.value}", deadline=1764170060.5) for op in (
        protocol.SendLocation, protocol.SendContact, protocol.React, protocol.Read, protocol.Presence,
        protocol.Revoke, protocol.Edit, protocol.Exists)),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.op.value)
def test_every_command_round_trips_through_json(command):
    assert protocol.parse_command(json.loads(json.dumps(command.to_dict()))) == command


def test_every_op_has_a_command_type():
    assert set(protocol.COMMANDS) == set(protocol.Op)
    assert {type(c).op for c in COMMANDS} == set(protocol.Op)


def test_the_wire_is_todays():
    assert protocol.Send(sealed="s").to_dict() == {"op": "send", "sealed": "s"}  # ask() adds reply, deadline
    assert protocol.PairCode(line="34666123456").to_dict() == {"op": "paircode", "line": "34666123456"}
    assert protocol.Logout(reason="evicted").to_dict() == {"op": "logout", "reason": "evicted"}
    # what the store's Lua pushes for a released or evicted slot
    assert protocol.parse_command({"op": "logout", "reason": "evicted"}) == protocol.Logout(reason="evicted")
    assert protocol.parse_command({"op": "logout"}) == protocol.Logout(reason="logout")
    assert protocol.Sent("3EB0", 1764170000).to_dict() == {"ok": True, "id": "3EB0", "timestamp": 1764170000}
    assert protocol.PairingCode("ABCD-EFGH").to_dict() == {"ok": True, "code": "ABCD-EFGH"}
    assert protocol.Edit(sealed="s").to_dict() == {"op": "edit", "sealed": "s"}
    assert protocol.Done().to_dict() == {"ok": True}
    assert protocol.Existence(False, None).to_dict() == {"ok": True, "exists": False, "jid": None}
    assert protocol.Failure("engine_timeout", "late").to_dict() == {"ok": False, "error": "engine_timeout",
                                                                    "detail": "late"}


@pytest.mark.parametrize(("command", "reply"), [
    (protocol.Send(sealed="s"), protocol.Sent("3EB0", 1764170000)),
    (protocol.Send(sealed="s"), protocol.Failure(protocol.WHATSAPP_UNREACHABLE, "offline")),
    (protocol.Send(sealed="s"), protocol.Failure("send_failed", "WhatsApp did not accept it")),
    (protocol.PairCode(line="34666123456"), protocol.PairingCode("ABCD-EFGH")),
    (protocol.PairCode(line="34666123456"), protocol.Failure(protocol.NOT_SUPPORTED, "no codes")),
    (protocol.Download(sealed="s"), protocol.MediaHeader(52311)),
    (protocol.Download(sealed="s"), protocol.MediaHeader(None)),
    (protocol.Download(sealed="s"), protocol.Failure("media_gone", "404")),
    (protocol.SendLocation(sealed="s"), protocol.Sent("3EB1", 1764170001)),
    (protocol.React(sealed="s"), protocol.Failure("not_in_group", "not a member")),
    (protocol.Read(sealed="s"), protocol.Done()),
    (protocol.Presence(sealed="s"), protocol.Failure(protocol.NOT_SUPPORTED, "not yet")),
    (protocol.Exists(sealed="s"), protocol.Existence(True, "34611122233@s.whatsapp.net")),
    (protocol.Exists(sealed="s"), protocol.Existence(False, None)),
])
def test_every_reply_round_trips_through_json(command, reply):
    assert command.read_reply(json.loads(json.dumps(reply.to_dict()))) == reply


def test_an_exists_reply_without_a_boolean_is_refused():
    with pytest.raises(protocol.ProtocolError):
        protocol.Exists(sealed="s").read_reply({"ok": True, "exists": "yes"})


def test_a_failure_without_detail_reads_as_an_empty_one():
    assert protocol.Send(sealed="s").read_reply({"ok": False, "error": "x", "detail": None}) == protocol.Failure("x")


def test_a_logout_has_no_reply():
    with pytest.raises(protocol.ProtocolError):
        protocol.Logout().read_reply({"ok": True})


@pytest.mark.parametrize("op", ["reboot", None, 7, ["send"]])
def test_an_unknown_op_is_refused(op):
    with pytest.raises(protocol.UnknownOp) as caught:
        protocol.parse_command({"op": op})
    assert caught.value.op == op


@pytest.mark.parametrize("raw", [
    "send",
    {"op": "send"},
    {"op": "send", "sealed": 7},
    {"op": "send", "sealed": "s", "deadline": "soon"},
    {"op": "send", "sealed": "s", "deadline": True},
    {"op": "paircode", "line": None},
    {"op": "logout", "reason": 3},
])
def test_a_malformed_command_is_refused(raw):
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_command(raw)


def test_fields_a_reader_does_not_know_are_ignored():
    assert protocol.parse_command({"op": "send", "sealed": "s", "priority": 1}) == protocol.Send(sealed="s")


class Queue:
    """CommandQueue.ask's shape, answering at once."""

    def __init__(self, answer):
        self.answer, self.asked = answer, []

    def ask(self, slot_id, command, timeout):
        self.asked.append((slot_id, command, timeout))
        return self.answer, self.answer is not None


def test_ask_sends_the_wire_dict_and_reads_the_reply_typed():
    queue = Queue({"ok": True, "code": "ABCD-EFGH"})
    assert protocol.ask(queue, "AB12CD34", protocol.PairCode(line="34666123456"), timeout=5) == (
        protocol.PairingCode("ABCD-EFGH"), True)
    assert queue.asked == [("AB12CD34", {"op": "paircode", "line": "34666123456"}, 5)]
    assert protocol.ask(Queue(None), "AB12CD34", protocol.Send(sealed="s"), timeout=5) == (None, False)


@pytest.mark.parametrize("part", [
    protocol.MediaChunk(b"\x00\xffsealed bytes"), protocol.MediaChunk(b""), protocol.MediaEnd(52311),
    protocol.Failure("media_corrupt", "the MAC does not match"),
])
def test_every_media_part_round_trips_through_its_binary_frame(part):
    assert protocol.read_media_frame(protocol.media_frame(part)) == part


@pytest.mark.parametrize("frame", [b"", b"x123", b"e12a", b"f{not json", "c-a-str"])
def test_a_malformed_media_frame_is_refused(frame):
    with pytest.raises(protocol.ProtocolError):
        protocol.read_media_frame(frame)
