"""What /send and the chat actions accept: every refusal has its own code and a sentence."""

import pytest

from controlplane.core.errors import Refused
from controlplane.messaging import asks
from controlplane.messaging.asks import MAX_READ_IDS, build_vcard, parse_send_request

LINE, TO = "34666000111", "34611122233"
GROUP = "120363012345678901@g.us"


def body(**fields) -> dict:
    return {"line": LINE, "to": TO, **fields}


@pytest.mark.parametrize(("given", "code"), [
    (body(to="34611@s.whatsapp.net", text="hi"), "invalid_to"),  # too few digits for a number
    (body(to="34611122233@lid", text="hi"), "invalid_to"),
    (body(to="34611122233:x@s.whatsapp.net", text="hi"), "invalid_to"),
    (body(to="1203@g.us", text="hi"), "invalid_to"),
    (body(to="+34611122233", text="hi"), "invalid_number"),
    (body(text="hi", location={"latitude": 1, "longitude": 1}), "invalid_content"),
    (body(location={"latitude": 91, "longitude": 0}), "invalid_location"),
    (body(location={"latitude": 0, "longitude": -180.5}), "invalid_location"),
    (body(location={"latitude": "40.4", "longitude": 0}), "invalid_location"),
    (body(location={"latitude": True, "longitude": 0}), "invalid_location"),
    (body(location={"latitude": float("nan"), "longitude": 0}), "invalid_location"),
    (body(location={"longitude": 0}), "invalid_location"),
    (body(location={"latitude": 10**400, "longitude": 1}), "invalid_location"),  # no float holds it
    (body(location={"latitude": -(10**400), "longitude": 1}), "invalid_location"),
    (body(media={"url": "http://[::1"}), "invalid_media"),  # urlparse: "Invalid IPv6 URL"
    (body(location={"latitude": 0, "longitude": 0, "name": 7}), "invalid_location"),
    (body(location=[40.4, -3.7]), "invalid_location"),
    (body(contact={"name": "Ana"}), "invalid_contact"),
    (body(contact={"name": "Ana", "number": "611 22"}), "invalid_contact"),
    (body(contact={"name": "Ana", "number": 34611122233}), "invalid_contact"),
    (body(contact={"number": "34611122233"}), "invalid_contact"),
    (body(contact={"vcard": "BEGIN:VCARD\nFN:Ana\nEND:VCARD"}), "invalid_contact"),
    (body(contact={"vcard": "FN:Ana\nTEL:+34611122233"}), "invalid_contact"),
    (body(contact={"vcard": "BEGIN:VCARD\nTEL:+34611122233\nEND:VCARD"}), "invalid_contact"),
    (body(contact={"vcard": "BEGIN:VCARD\nFN:A\nTEL:+346\nEND:VCARD", "number": "34611122233"}), "invalid_contact"),
    (body(reaction={"message_id": "X", "emoji": "ok"}), "invalid_reaction"),
    (body(reaction={"message_id": "X", "emoji": "👍" * 17}), "invalid_reaction"),
    (body(reaction={"message_id": "", "emoji": "👍"}), "invalid_reaction"),
    (body(reaction={"emoji": "👍"}), "invalid_reaction"),
    (body(reaction={"message_id": "X", "emoji": None}), "invalid_reaction"),
    (body(reaction={"message_id": "X", "emoji": "^"}), "invalid_reaction"),  # Sk, not an emoji
    (body(reaction={"message_id": "X", "emoji": "`"}), "invalid_reaction"),
    (body(reaction={"message_id": "X", "emoji": "\u202e"}), "invalid_reaction"),  # right-to-left override
    (body(reaction={"message_id": "X", "emoji": "\u0301"}), "invalid_reaction"),  # a lone combining accent
    (body(reaction={"message_id": "X", "emoji": "\u202e👍"}), "invalid_reaction"),
    (body(text="hi", reply_to="X", quoted={"conversation": 5}), "invalid_reply"),
    (body(text="hi", reply_to="X", quoted={}), "invalid_reply"),
    (body(contact={"name": "Ana\rTEL;waid=34600000000:+34600000000", "number": "34611122233"}), "invalid_contact"),
    (body(location={"latitude": 0, "longitude": 0, "address": "Sol\x001"}), "invalid_location"),
    (body(media={"data": "AA==", "mimetype": "application/pdf", "filename": "a" * 256}), "invalid_media"),
    (body(media={"data": "AA==", "mimetype": "application/pdf", "filename": "a\nb.pdf"}), "invalid_media"),
    (body(media={"data": "AA==", "mimetype": "application/pdf", "filename": "../etc/passwd"}), "invalid_media"),
    (body(reaction={"message_id": "X", "emoji": "👍"}, reply_to="Y"), "invalid_reply"),
    (body(text="hi", quoted={"conversation": "q"}), "invalid_reply"),
    (body(text="hi", reply_to=""), "invalid_reply"),
    (body(text="hi", reply_to="X", quoted="the text"), "invalid_reply"),
    (body(media={"data": "AA==", "mimetype": "audio/ogg", "ptt": "yes"}), "invalid_media"),
])
def test_a_malformed_send_is_refused_with_its_code(given, code):
    with pytest.raises(Refused) as refused:
        parse_send_request(given)
    assert refused.value.code == code and refused.value.detail.endswith((".", ")"))


def test_each_kind_parses_to_its_content():
    assert parse_send_request(body(to=GROUP, text="hola", reply_to="3EB0", quoted=None)).reply_to == "3EB0"
    pin = parse_send_request(body(location={"latitude": 40, "longitude": -3.5, "name": "", "address": "Sol 1"}))
    assert (pin.kind, pin.location) == ("location", {"latitude": 40.0, "longitude": -3.5, "address": "Sol 1"})
    for emoji in ("👍", "❤️", "👩🏽‍💻", "🇪🇸", "1️⃣", "", "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
                  "👍🏾", "#️⃣"):
        assert parse_send_request(body(reaction={"message_id": "X", "emoji": emoji})).reaction["emoji"] == emoji
    given = "BEGIN:VCARD\nVERSION:3.0\nFN:Oficina\\, Centro\nTEL:+34911222333\nEND:VCARD\n"
    assert parse_send_request(body(contact={"vcard": given})).contact == {"name": "Oficina, Centro",
                                                                          "vcard": given.strip()}
    assert parse_send_request(body(location={"latitude": 1, "longitude": 1, "address": "Sol 1\nMadrid"}))
    named = parse_send_request(body(contact={"vcard": given, "name": "Centro"}))
    assert named.contact["name"] == "Centro"


def test_the_webhooks_own_chat_names_its_number():
    for jid in ("34611122233@s.whatsapp.net", "34611122233:12@s.whatsapp.net"):
        assert parse_send_request(body(to=jid, text="hi")).to == TO
        assert asks.parse_read({"line": LINE, "chat": jid, "message_ids": ["X"]}).chat == TO
    assert asks.parse_presence({"line": LINE, "to": GROUP, "state": "paused"}).to == GROUP


def test_a_vcard_escapes_what_vcard_reserves():
    assert "FN:Pérez\\, Ana\\; agente\\nMadrid" in build_vcard("Pérez, Ana; agente\nMadrid", "34611122233")


@pytest.mark.parametrize(("parse", "given", "code"), [
    (asks.parse_read, {"line": LINE, "chat": TO, "message_ids": []}, "invalid_message_ids"),
    (asks.parse_read, {"line": LINE, "chat": TO, "message_ids": ["X"] * (MAX_READ_IDS + 1)},
     "invalid_message_ids"),
    (asks.parse_read, {"line": LINE, "chat": TO, "message_ids": "X"}, "invalid_message_ids"),
    (asks.parse_read, {"line": LINE, "chat": TO, "message_ids": [7]}, "invalid_message_ids"),
    (asks.parse_read, {"line": LINE, "chat": "x@y", "message_ids": ["X"]}, "invalid_chat"),
    (asks.parse_read, {"line": LINE, "message_ids": ["X"]}, "invalid_chat"),
    (asks.parse_presence, {"line": LINE, "to": TO, "state": "typing"}, "invalid_state"),
    (asks.parse_presence, {"line": LINE, "to": TO}, "invalid_state"),
    (asks.parse_presence, {"to": TO, "state": "paused"}, "invalid_target"),
    (asks.parse_revoke, {"line": LINE, "to": TO}, "invalid_message_id"),
    (asks.parse_revoke, {"line": LINE, "to": "bad", "message_id": "X"}, "invalid_number"),
    (asks.parse_edit, {"line": LINE, "to": TO, "message_id": "X", "text": ""}, "invalid_text"),
    (asks.parse_edit, {"line": LINE, "to": TO, "message_id": "X\n", "text": "y"}, "invalid_message_id"),
    (asks.parse_edit, "text", "invalid_json"),
])
def test_a_malformed_chat_action_is_refused_with_its_code(parse, given, code):
    with pytest.raises(Refused) as refused:
        parse(given)
    assert refused.value.code == code and refused.value.detail


def test_read_drops_repeated_ids():
    assert asks.parse_read({"slot": "ab12cd34", "chat": GROUP, "message_ids": ["A", "B", "A"]}).message_ids == \
        ("A", "B")
