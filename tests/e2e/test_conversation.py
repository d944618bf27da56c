"""Everything an agent does in a chat, end to end: the API, the slot worker, its engine, simnet, and
what the phone shows (its inbox, what the line read, the line's typing), as one real gateway runs it."""

import base64
import hashlib
import shutil
import subprocess

import pytest

from tests.assertions import assert_json_error
from tests.e2e.samples import image, ogg_opus
from tests.gateway import Gateway, wait_for
from tests.helpers import delivered_message, redis_url

LINE = "34655500013"
CONTACT = "34622000013"
MEMBERS = ("34622000014", "34622000015")
STRANGER = "34622000099"


@pytest.fixture(scope="module")
def gateway(redis_server, receiver, tmp_path_factory):
    """A gateway of this module's own, whose rate limit lets one line do all of this in a few seconds."""
    gw = Gateway(tmp_path_factory.mktemp("conversation"), redis_url(redis_server), WHIN_WEBHOOK_URL=receiver.url,
                 WHIN_SEND_RATE="6000", WHIN_SEND_BURST="1000").start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def line(gateway):
    gateway.enrolled_slot(LINE)
    return LINE


def api(gateway, path: str, **body):
    return gateway.api("POST", path, json={"line": LINE, **body})


def sent(gateway, **body) -> str:
    response = api(gateway, "/send", to=body.pop("to", CONTACT), **body)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def ok(response) -> None:
    assert (response.status_code, response.text) == (200, "OK"), response.text


def entry(gateway, message_id: str, number: str = CONTACT) -> dict:
    (found,) = [m for m in gateway.inbox(number) if m["id"] == message_id]
    return found


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ffmpeg_made(*args: str) -> bytes:
    return subprocess.run([shutil.which("ffmpeg"), "-loglevel", "error", "-f", "lavfi", *args, "pipe:1"],
                          capture_output=True, check=True, timeout=60).stdout


# --- each kind arrives as that kind ---

def test_each_kind_arrives_in_the_phones_inbox_as_that_kind(gateway, line):
    photo, pdf = image("PNG"), b"%PDF-1.4\n" + bytes(500)
    mp3 = ffmpeg_made("-i", "sine=frequency=440:duration=3", "-c:a", "libmp3lame", "-f", "mp3")
    video = ffmpeg_made("-i", "testsrc=size=320x240:rate=10:duration=2", "-c:v", "mpeg4", "-f", "mp4",
                        "-movflags", "frag_keyframe+empty_moov")
    ids = {
        "text": sent(gateway, text="Hola"),
        "image": sent(gateway, media={"data": b64(photo), "mimetype": "image/png", "caption": "El salón"}),
        "video": sent(gateway, media={"data": b64(video), "mimetype": "video/mp4"}),
        "audio": sent(gateway, media={"data": b64(mp3), "mimetype": "audio/mpeg"}),
        "voice": sent(gateway, media={"data": b64(mp3), "mimetype": "audio/mpeg", "ptt": True}),
        "document": sent(gateway, media={"data": b64(pdf), "mimetype": "application/pdf", "filename": "ficha.pdf"}),
        "location": sent(gateway, location={"latitude": 40.4168, "longitude": -3.7038, "name": "Piso en Sol"}),
        "contact": sent(gateway, contact={"name": "Ana (agente)", "number": "34611177788"}),
    }
    inbox = {m["id"]: m for m in gateway.inbox(CONTACT)}
    assert {kind: inbox[message_id]["kind"] for kind, message_id in ids.items()} == {kind: kind for kind in ids}
    shown = {kind: inbox[message_id] for kind, message_id in ids.items()}
    assert shown["image"]["media"]["sha256"] == hashlib.sha256(photo).hexdigest()
    assert (shown["video"]["media"]["seconds"], shown["audio"]["media"]["seconds"]) == (2, 3)
    voice = shown["voice"]["media"]
    assert (voice["ptt"], voice["mimetype"], voice["seconds"]) == (True, "audio/ogg; codecs=opus", 3)
    assert voice["sha256"] != hashlib.sha256(mp3).hexdigest()  # converted to OGG/Opus on its way
    assert shown["document"]["media"]["filename"] == "ficha.pdf"
    assert shown["location"]["location"] == {"latitude": 40.4168, "longitude": -3.7038, "name": "Piso en Sol"}
    card = shown["contact"]["contact"]
    assert card["name"] == "Ana (agente)" and "waid=34611177788:+34611177788" in card["vcard"]


def test_an_ogg_opus_voice_note_goes_as_it_is(gateway, line):
    voice = ogg_opus(5)
    shown = entry(gateway, sent(gateway, media={"data": b64(voice), "mimetype": "audio/ogg", "ptt": True}))
    assert (shown["kind"], shown["media"]["seconds"]) == ("voice", 5)
    assert shown["media"]["sha256"] == hashlib.sha256(voice).hexdigest()


# --- replies, reactions, revokes, edits ---

def test_a_reply_carries_the_quoted_id_and_text(gateway, line, receiver):
    question = gateway.phone_sends(CONTACT, LINE, "¿Tiene garaje?")
    event = delivered_message(receiver, LINE, "¿Tiene garaje?")
    answer = sent(gateway, text="Sí, dos plazas", reply_to=question, quoted=event["payload"]["Message"])
    shown = entry(gateway, answer)
    assert (shown["text"], shown["reply_to"], shown["quoted_text"]) == ("Sí, dos plazas", question, "¿Tiene garaje?")
    pin = sent(gateway, location={"latitude": 1.5, "longitude": 2.5}, reply_to=answer)  # quoting its own
    assert entry(gateway, pin)["reply_to"] == answer


def test_a_reaction_lands_on_the_right_message_and_can_be_taken_back(gateway, line):
    first, second = sent(gateway, text="Primero"), sent(gateway, text="Segundo")
    sent(gateway, reaction={"message_id": second, "emoji": "❤️"})
    assert entry(gateway, second)["reactions"] == {LINE: "❤️"} and "reactions" not in entry(gateway, first)
    sent(gateway, reaction={"message_id": second, "emoji": ""})
    assert "reactions" not in entry(gateway, second)


def test_a_reaction_on_the_phones_own_message(gateway, line, receiver):
    question = gateway.phone_sends(CONTACT, LINE, "¿Se admiten mascotas?")
    delivered_message(receiver, LINE, "¿Se admiten mascotas?")
    reaction = sent(gateway, reaction={"message_id": question, "emoji": "👍"})
    shown = entry(gateway, reaction)
    assert (shown["kind"], shown["reaction"]) == ("reaction", {"message_id": question, "emoji": "👍"})


def test_revoke_and_edit_change_what_the_phone_shows(gateway, line):
    wrong, typo = sent(gateway, text="Precio: 100.000 €"), sent(gateway, text="3 habitaciones")
    ok(api(gateway, "/revoke", to=CONTACT, message_id=wrong))
    ok(api(gateway, "/edit", to=CONTACT, message_id=typo, text="4 habitaciones"))
    revoked, edited = entry(gateway, wrong), entry(gateway, typo)
    assert revoked.get("revoked") is True and "text" not in revoked
    assert (edited["text"], edited.get("edited")) == ("4 habitaciones", True)
    assert_json_error(api(gateway, "/edit", to=CONTACT, message_id=wrong, text="x"), 422, "unknown_message")


# --- the chat actions ---

def test_read_marks_the_phones_messages_as_read_by_the_line(gateway, line, receiver):
    first = gateway.phone_sends(CONTACT, LINE, "Buenos días")
    second = gateway.phone_sends(CONTACT, LINE, "¿Sigue disponible?")
    delivered_message(receiver, LINE, "¿Sigue disponible?")
    ok(api(gateway, "/read", chat=CONTACT, message_ids=[first, second]))
    assert {first, second} <= set(gateway.simnet("GET", f"/phones/{CONTACT}/read-by-line"))


def test_typing_reaches_the_phone(gateway, line):
    ok(api(gateway, "/presence", to=CONTACT, state="composing"))
    assert gateway.simnet("GET", f"/phones/{CONTACT}/chat-state") == {LINE: "composing"}
    ok(api(gateway, "/presence", to=CONTACT, state="paused"))
    assert gateway.simnet("GET", f"/phones/{CONTACT}/chat-state") == {LINE: "paused"}


def test_exists_is_true_for_a_known_phone_and_false_for_an_unknown_one(gateway, line):
    gateway.simnet("POST", "/phones", {"number": "34622000016"})
    known = gateway.api("GET", f"/exists/{LINE}/34622000016")
    assert known.json() == {"number": "34622000016", "exists": True, "jid": "34622000016@s.whatsapp.net"}
    unknown = gateway.api("GET", f"/exists/{LINE}/{STRANGER}")
    assert (unknown.status_code, unknown.json()) == (200, {"number": STRANGER, "exists": False, "jid": None})
    assert_json_error(gateway.api("GET", f"/exists/{LINE}/+34611"), 422, "invalid_number")


# --- groups ---

def test_a_group_the_line_is_in_gets_every_kind_and_one_it_is_not_in_is_refused(gateway, line, receiver):
    group = gateway.simnet("POST", "/groups", {"name": "Visita Sol", "members": [MEMBERS[0], LINE, MEMBERS[1]]})["id"]
    text = sent(gateway, to=group, text="Hola a todos")
    pin = sent(gateway, to=group, location={"latitude": 40.4, "longitude": -3.7})
    posted = gateway.simnet("POST", "/messages", {"from": MEMBERS[0], "group": group, "text": "¿A qué hora?"})["id"]
    wait_for(lambda: receiver.delivered(line=LINE, message_id=posted), what="the group message")
    reply = sent(gateway, to=group, text="A las 10", reply_to=posted)
    ok(api(gateway, "/read", chat=group, message_ids=[posted]))
    ok(api(gateway, "/presence", to=group, state="composing"))
    inbox = {m["id"]: m for m in gateway.simnet("GET", f"/groups/{group}/inbox")}
    assert (inbox[text]["kind"], inbox[pin]["kind"], inbox[reply]["reply_to"]) == ("text", "location", posted)
    assert all(inbox[i]["group"] == group for i in (text, pin, reply))
    assert posted in gateway.simnet("GET", f"/phones/{MEMBERS[0]}/read-by-line")
    assert gateway.simnet("GET", f"/groups/{group}/chat-state") == {LINE: "composing"}

    other = gateway.simnet("POST", "/groups", {"name": "Sin la línea", "members": list(MEMBERS)})["id"]
    assert_json_error(api(gateway, "/send", to=other, text="hola"), 422, "not_in_group")
    assert_json_error(api(gateway, "/presence", to=other, state="composing"), 422, "not_in_group")


# --- refusals: each a 422 with its code, nothing sent ---

def test_refusals_have_their_own_codes_and_send_nothing(gateway, line, receiver):
    before = len(gateway.inbox(CONTACT))
    theirs = gateway.phone_sends(CONTACT, LINE, "Mensaje del cliente")
    delivered_message(receiver, LINE, "Mensaje del cliente")
    for path, body, code in [
        ("/send", {"to": CONTACT, "reaction": {"message_id": "NOT-A-MESSAGE", "emoji": "👍"}}, "unknown_message"),
        ("/send", {"to": CONTACT, "text": "x", "reply_to": "NOT-A-MESSAGE"}, "unknown_message"),
        ("/send", {"to": STRANGER, "reaction": {"message_id": theirs, "emoji": "👍"}}, "unknown_message"),
        ("/revoke", {"to": CONTACT, "message_id": theirs}, "not_own_message"),
        ("/edit", {"to": CONTACT, "message_id": theirs, "text": "x"}, "not_own_message"),
        ("/read", {"chat": CONTACT, "message_ids": ["NOT-A-MESSAGE"]}, "unknown_message"),
        ("/send", {"to": CONTACT, "location": {"latitude": 100, "longitude": 0}}, "invalid_location"),
        ("/send", {"to": CONTACT, "contact": {"name": "Sin número"}}, "invalid_contact"),
        ("/send", {"to": CONTACT, "reaction": {"message_id": theirs, "emoji": "hola"}}, "invalid_reaction"),
        ("/send", {"to": CONTACT, "media": {"data": b64(b"x" * 50), "mimetype": "video/quicktime"}},
         "unsupported_media_type"),
        ("/send", {"to": CONTACT, "media": {"data": b64(b"not an image"), "mimetype": "image/png"}}, "invalid_media"),
        ("/send", {"to": "34611@s.whatsapp.net", "text": "x"}, "invalid_to"),
        ("/presence", {"to": CONTACT, "state": "typing"}, "invalid_state"),
        ("/read", {"chat": CONTACT, "message_ids": []}, "invalid_message_ids"),
    ]:
        response = api(gateway, path, **body)
        assert_json_error(response, 422, code)
        assert response.json()["detail"], (path, body)
    assert len(gateway.inbox(CONTACT)) == before


def test_without_ffmpeg_a_voice_note_that_is_not_opus_is_refused(redis_server, receiver, tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("no-ffmpeg"), redis_url(redis_server), WHIN_WEBHOOK_URL=receiver.url,
                 WHIN_FFMPEG="").start()
    try:
        (slot_id,) = gw.provision(1)
        gw.enroll(slot_id, "34655500014")
        mp3 = ffmpeg_made("-i", "sine=frequency=440:duration=1", "-c:a", "libmp3lame", "-f", "mp3")
        body = {"line": "34655500014", "to": CONTACT, "media": {"data": b64(mp3), "mimetype": "audio/mpeg",
                                                                "ptt": True}}
        response = gw.api("POST", "/send", json=body)
        assert_json_error(response, 422, "voice_note_needs_ffmpeg")
        assert "ffmpeg" in response.json()["detail"]
        body["media"] = {"data": b64(ogg_opus(2)), "mimetype": "audio/ogg", "ptt": True}
        assert gw.api("POST", "/send", json=body).status_code == 200  # OGG/Opus needs no ffmpeg
    finally:
        gw.stop()
