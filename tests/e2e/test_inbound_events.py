"""Every inbound event type end to end on simnet, and POST /media: phone -> simnet -> slot -> webhook."""

import base64
import hashlib
import io
import os
import time

import pytest

from tests.gateway import WEBHOOK_SECRET, Gateway, wait_for
from tests.helpers import SENDER, delivered_message, openapi_document, redis_url, webhook_problems
from tests.receiver import Receiver

ALL_TYPES = "message,receipt,call,presence,group,message.undecryptable,slot.status"


def _png(marker: bytes = b"") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue() + marker  # a PNG viewer ignores what follows IEND


def _events(receiver, line, **match):
    return receiver.delivered(line=line, **match)


def _one(receiver, line, timeout=20, **match):
    return wait_for(lambda: _events(receiver, line, **match), timeout=timeout,
                    what=f"a {match} event on line {line}")[0]


@pytest.fixture(scope="module")
def every_type(tmp_path_factory, redis_server):
    """A gateway of this module's own that delivers every type, presence included, to its receiver."""
    receiver = Receiver(WEBHOOK_SECRET).start()
    gw = Gateway(tmp_path_factory.mktemp("every-type"), redis_url(redis_server), WHIN_WEBHOOK_URL=receiver.url,
                 WHIN_EVENTS=ALL_TYPES, WHIN_MEDIA_MAX_BYTES=str(2 * 1024 * 1024)).start()
    yield gw, receiver
    gw.stop()
    receiver.stop()


def _download(gw, line, event):
    return gw.api("POST", "/media", json={"line": line, "message": event["payload"]["Message"]}, stream=True)


def test_a_photo_a_voice_note_and_a_pdf_arrive_as_messages_and_download_byte_for_byte(every_type, new_line):
    gw, receiver = every_type
    line = new_line()
    gw.enrolled_slot(line)
    photo, voice, pdf = _png(os.urandom(64)), b"OggS" + os.urandom(3000), b"%PDF-1.4\n" + os.urandom(300_000)
    sent = {
        gw.phone_sends_media(SENDER, line, photo, "image/png", caption="El salón"): (photo, "image/png", None),
        gw.phone_sends_media(SENDER, line, voice, "audio/ogg; codecs=opus", ptt=True): (voice, "audio/ogg; codecs=opus",
                                                                                        None),
        gw.phone_sends_media(SENDER, line, pdf, "application/pdf", filename="ático 3ºB.pdf"): (pdf, "application/pdf",
                                                                                              "ático 3ºB.pdf"),
    }
    for message_id, (data, mimetype, filename) in sent.items():
        event = _one(receiver, line, type="message", message_id=message_id)
        assert event["from"] == SENDER
        assert "imageMessage" in event["payload"]["Message"] or "audioMessage" in event["payload"]["Message"] \
            or "documentMessage" in event["payload"]["Message"]
        response = _download(gw, line, event)
        assert response.status_code == 200, response.text
        body = response.content
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
        assert response.headers["Content-Type"].startswith(mimetype.split(";")[0])
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Disposition"].startswith("attachment;")
        if filename:
            assert "filename*=UTF-8''%C3%A1tico%203%C2%BAB.pdf" in response.headers["Content-Disposition"]
    voice_event = next(e for e in _events(receiver, line, type="message") if "audioMessage" in e["payload"]["Message"])
    assert voice_event["payload"]["Message"]["audioMessage"]["PTT"] is True


def test_media_refusals_are_json_errors_with_their_codes(every_type, new_line):
    gw, receiver = every_type
    line = new_line()
    slot_id = gw.enrolled_slot(line)
    text_id = gw.phone_sends(SENDER, line, "sin foto")
    photo_id = gw.phone_sends_media(SENDER, line, _png(), "image/png")
    text = _one(receiver, line, type="message", message_id=text_id)
    photo = _one(receiver, line, type="message", message_id=photo_id)

    def refused(body, status, code):
        response = gw.api("POST", "/media", json=body)
        assert (response.status_code, response.json()["error"]) == (status, code), response.text
        assert response.json()["detail"]

    refused({"line": line, "message": text["payload"]["Message"]}, 422, "no_media")
    refused({"line": line, "message": ["not", "an", "object"]}, 422, "invalid_message")
    refused({"line": line, "message": {"imageMessage": {"directPath": 7, "mediaKey": {}}}}, 422, "no_media")
    refused({"line": line}, 422, "invalid_message")
    refused({"slot": slot_id, "line": line, "message": {}}, 422, "invalid_target")
    big = {**photo["payload"]["Message"]["imageMessage"], "fileLength": str(3 * 1024 * 1024)}
    refused({"line": line, "message": {"imageMessage": big}}, 413, "media_too_large")
    tampered = {**photo["payload"]["Message"]["imageMessage"], "mediaKey": base64.b64encode(os.urandom(32)).decode()}
    refused({"line": line, "message": {"imageMessage": tampered}}, 422, "media_corrupt")  # the MAC fails: no byte sent
    gw.simnet("DELETE", "/media")  # WhatsApp's media servers forgot it
    refused({"line": line, "message": photo["payload"]["Message"]}, 410, "media_gone")
    assert gw.api("GET", f"/sleep/{line}").status_code == 200
    refused({"line": line, "message": photo["payload"]["Message"]}, 422, "line_sleeping")


def test_the_line_sends_the_phone_reads_the_receiver_gets_delivered_then_read(every_type, new_line):
    gw, receiver = every_type
    line = new_line()
    gw.enrolled_slot(line)
    sent = gw.api("POST", "/send", json={"line": line, "to": SENDER, "text": "¿Le va bien el jueves?"})
    assert sent.status_code == 200, sent.text
    message_id = sent.json()["id"]
    delivered = _one(receiver, line, type="receipt", status="delivered")
    gw.simnet("POST", f"/phones/{SENDER}/read", {"line": line, "ids": [message_id]})
    read = _one(receiver, line, type="receipt", status="read")
    for receipt in (delivered, read):
        assert (receipt["message_ids"], receipt["chat"], receipt["event"]) == (
            [message_id], f"{SENDER}@s.whatsapp.net", "Receipt")
    assert delivered["seq"] < read["seq"]


def test_calls_typing_presence_groups_and_undecryptable_messages_arrive_as_their_types(every_type, new_line):
    gw, receiver = every_type
    line = new_line()
    gw.enrolled_slot(line)
    call_id = gw.simnet("POST", f"/phones/{SENDER}/call", {"line": line})["call_id"]
    gw.simnet("POST", f"/phones/{SENDER}/hangup", {"line": line, "call_id": call_id})
    calls = wait_for(lambda: len(_events(receiver, line, type="call")) >= 2 and _events(receiver, line, type="call"),
                     what="the call's offer and end")
    assert [(c["event"], c["call_id"], c["from"]) for c in calls] == [
        ("CallOffer", call_id, SENDER), ("CallTerminate", call_id, SENDER)]

    gw.simnet("POST", f"/phones/{SENDER}/typing", {"line": line, "state": "composing"})
    typing = _one(receiver, line, type="presence", event="ChatPresence")
    assert (typing["from"], typing["chat"]) == (SENDER, f"{SENDER}@s.whatsapp.net")
    gw.simnet("POST", f"/phones/{SENDER}/presence", {"line": line, "available": True})
    assert _one(receiver, line, type="presence", event="Presence")["from"] == SENDER

    group = gw.simnet("POST", "/groups", {"name": "Visitas calle Mayor", "members": [line, SENDER]})["id"]
    joined = _one(receiver, line, type="group", event="JoinedGroup")
    assert joined["chat"] == group
    gw.simnet("POST", "/messages", {"from": SENDER, "group": group, "text": "¿A qué hora quedamos?"})
    in_group = delivered_message(receiver, line, "¿A qué hora quedamos?")
    assert (in_group["chat"], in_group["from"]) == (group, SENDER)  # the LID sender, resolved to the phone
    assert in_group["from_lid"].endswith("@lid")

    undecryptable_id = gw.simnet("POST", f"/phones/{SENDER}/undecryptable", {"line": line})["id"]
    broken = _one(receiver, line, type="message.undecryptable")
    assert (broken["message_id"], broken["from"]) == (undecryptable_id, SENDER)


def test_what_the_lines_own_phone_sends_and_a_reaction_arrive_as_messages(every_type, new_line):
    gw, receiver = every_type
    line = new_line()
    gw.enrolled_slot(line)
    gw.simnet("POST", "/messages", {"from": line, "to": SENDER, "text": "Le escribo desde el móvil"})
    own = delivered_message(receiver, line, "Le escribo desde el móvil")
    assert (own["from_me"], own["from"], own["chat"]) == (True, line, f"{SENDER}@s.whatsapp.net")
    sent = gw.api("POST", "/send", json={"line": line, "to": SENDER, "text": "Aquí tiene las fotos"}).json()
    gw.simnet("POST", "/messages", {"from": SENDER, "to": line, "reaction": {"message_id": sent["id"], "emoji": "👍"}})
    reaction = wait_for(lambda: [e for e in _events(receiver, line, type="message")
                                 if "reactionMessage" in e["payload"]["Message"]], what="the reaction")[0]
    assert reaction["payload"]["Message"]["reactionMessage"]["key"]["ID"] == sent["id"]


def test_a_ban_and_a_replaced_session_are_slot_status_offline_with_their_reasons(every_type, new_line):
    gw, receiver = every_type
    line = new_line()
    slot_id = gw.enrolled_slot(line)
    gw.simnet("POST", f"/phones/{line}/ban", {"seconds": 3})
    banned = _one(receiver, line, type="slot.status", status="offline")
    assert banned["payload"]["reason"] == "temporary_ban" and 0 < banned["payload"]["expires_in"] <= 3
    assert banned["payload"]["ban_code"]
    wait_for(lambda: not gw.detail(slot_id)["connected"], what="the slot to show the line offline")
    back = _one(receiver, line, timeout=30, type="slot.status", status="active")
    assert (back["payload"]["reason"], back["payload"]["was"]) == ("back_online", "temporary_ban")
    wait_for(lambda: gw.detail(slot_id)["connected"], timeout=20, what="the slot to reconnect after the ban")
    gw.simnet("POST", f"/phones/{line}/replace")
    replaced = wait_for(lambda: [e for e in _events(receiver, line, type="slot.status", status="offline")
                                 if e["payload"]["reason"] == "stream_replaced"], what="stream_replaced")[0]
    assert replaced["seq"] > back["seq"]


def test_every_type_a_line_can_receive_matches_the_webhooks_section(every_type, new_line):
    """One line gets one event of every type; each delivery is checked against the OpenAPI document."""
    gw, receiver = every_type
    line = new_line()
    gw.enrolled_slot(line)
    sent = gw.api("POST", "/send", json={"line": line, "to": SENDER, "text": "Hola"}).json()
    gw.simnet("POST", f"/phones/{SENDER}/read", {"line": line, "ids": [sent["id"]]})
    gw.phone_sends_media(SENDER, line, _png(), "image/png")
    gw.simnet("POST", f"/phones/{SENDER}/call", {"line": line})
    gw.simnet("POST", f"/phones/{SENDER}/typing", {"line": line, "state": "recording"})
    gw.simnet("POST", "/groups", {"name": "Propietarios", "members": [line, SENDER]})
    gw.simnet("POST", f"/phones/{SENDER}/undecryptable", {"line": line})
    gw.simnet("POST", f"/phones/{line}/ban", {"seconds": 1})
    document = openapi_document()
    wanted = set(document["webhooks"])
    wait_for(lambda: {e["type"] for e in _events(receiver, line)} >= wanted
             and _events(receiver, line, type="slot.status", status="active"), timeout=30,
             what="one event of every type, and the line back after its ban")
    for event in _events(receiver, line):
        assert not webhook_problems(document, event), (event["type"], webhook_problems(document, event))


def test_whin_events_message_delivers_only_messages(make_gateway, own_receiver, new_line):
    gw = make_gateway(WHIN_WEBHOOK_URL=own_receiver.url, WHIN_EVENTS="message")
    line = new_line()
    gw.enrolled_slot(line)
    gw.simnet("POST", f"/phones/{SENDER}/call", {"line": line})
    sent = gw.api("POST", "/send", json={"line": line, "to": SENDER, "text": "hola"}).json()
    gw.simnet("POST", f"/phones/{SENDER}/read", {"line": line, "ids": [sent["id"]]})
    gw.phone_sends(SENDER, line, "solo esto")
    delivered_message(own_receiver, line, "solo esto")
    time.sleep(1)  # anything else would have been queued before the later message
    assert {e["type"] for e in own_receiver.delivered(line=line)} == {"message"}
    assert [e["seq"] for e in own_receiver.delivered(line=line)] == [1]
