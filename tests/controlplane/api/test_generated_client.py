"""A client generated from the served /openapi.json drives a slot's whole life: the document is usable.

openapi-python-client (what an integrator would reach for) generates a typed package from the
running gateway's document, refusing any warning; the test then provisions, enrolls (the simulated
phone scans the QR the client got), lists, sends a text and a URL-only media message, sleeps,
resumes and kills, only through that package, and checks every answer as the typed model it is.
The webhook's events of that life are read with the models generated from the document's
`webhooks` schemas. Everything is local: the generator runs once per session, the media URL is an
HTTP server of the test.
"""

import base64
import importlib
import json
import subprocess
import sys

import httpx
import pytest

from controlplane.cli import decode_qr_png
from tests.e2e.samples import image, ogg_opus
from tests.gateway import wait_for
from tests.helpers import delivered_message
from tests.httpserver import QuietHandler, serving

PACKAGE = "whin_client"
PNG = image("PNG")
SENDER = "34611177788"
OGG_OPUS = ogg_opus(3)


@pytest.fixture(scope="session")
def generated(gateway, tmp_path_factory):
    """The generated client package, imported; ``generated("slots.list_slots")`` imports an operation."""
    folder = tmp_path_factory.mktemp("generated-client")
    response = gateway.api("GET", "/openapi.json", token=None)
    assert response.status_code == 200
    (folder / "openapi.json").write_bytes(response.content)
    # No post hooks: the generator would run ruff over its output, which only formats it.
    (folder / "config.json").write_text(json.dumps({"post_hooks": []}))
    result = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(folder / "openapi.json"),
         "--meta", "none", "--output-path", str(folder / PACKAGE), "--config", str(folder / "config.json"),
         "--fail-on-warning"],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(folder))
    try:
        yield lambda module: importlib.import_module(f"{PACKAGE}.{module}")
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def media_url():
    """Where the gateway fetches the media of a URL-only message from."""

    class Handler(QuietHandler):
        def do_GET(self):
            if self.path == "/piso.png":
                self.answer(200, PNG, "image/png")
            else:
                self.answer(404)

    with serving(Handler) as url:
        yield f"{url}/piso.png"


def test_the_generated_client_has_one_function_per_operation_named_by_its_operation_id(generated):
    for module in ("lines.kill_line", "lines.kill_line_post", "lines.kill_slot", "enrollment.pair_by_code",
                   "enrollment.enroll_slot", "slots.provision_slots", "messages.send_message"):
        assert callable(generated(f"api.{module}").sync), module
    media = generated("models").Media(url="https://example.com/piso.jpg")  # no mimetype, no data: a URL is enough
    assert media.to_dict() == {"url": "https://example.com/piso.jpg"}


def test_a_slots_life_through_the_generated_client(generated, gateway, receiver, media_url, new_line):
    models = generated("models")
    client = generated("client").AuthenticatedClient(
        base_url=gateway.url, token=gateway.admin_token, timeout=httpx.Timeout(60), raise_on_unexpected_status=True)
    line, to = new_line(), new_line()

    def detail(slot_id):
        found = generated("api.slots.get_slot").sync(slot_id, client=client)
        assert isinstance(found, models.SlotDetail), found
        return found

    provisioned = generated("api.slots.provision_slots").sync(client=client, body=models.ProvisionRequest(count=1))
    assert isinstance(provisioned, models.Provisioned), provisioned
    (slot,) = provisioned.created

    qr = generated("api.enrollment.enroll_slot").sync(slot, client=client)
    assert isinstance(qr, models.QRCode) and qr.expires_in > 0, qr
    assert gateway.scan(line, decode_qr_png(base64.b64decode(qr.qr))).status_code == 200
    wait_for(lambda: detail(slot).connected, what=f"slot {slot} to connect")
    linked = detail(slot)
    assert (linked.status, linked.line, linked.pairing) == (models.SlotDetailStatus.ACTIVE, line, False)

    listing = generated("api.slots.list_slots").sync(client=client)
    assert {slot: models.SlotStatusesItemAdditionalProperty.ACTIVE} in [i.additional_properties for i in listing]
    active = generated("api.slots.list_slots_by_status").sync(models.ListSlotsByStatusStatus.ACTIVE, client=client)
    assert slot in [key for item in active for key in item.additional_properties]
    slots_to_lines = generated("api.slots.map_slots_to_lines").sync(client=client)
    assert {slot: line} in [item.additional_properties for item in slots_to_lines]
    lines_to_slots = generated("api.slots.map_lines_to_slots").sync(client=client)
    assert {line: slot} in [item.additional_properties for item in lines_to_slots]

    send = generated("api.messages.send_message")
    text = send.sync(client=client, body=models.SendRequest(to=to, line=line, text="Hola, ¿le interesa el piso?"))
    assert isinstance(text, models.SendResult) and text.id and text.timestamp > 0, text
    photo = send.sync(client=client, body=models.SendRequest(
        to=to, slot=slot, media=models.Media(url=media_url, caption="El salón", filename="piso.png")))
    assert isinstance(photo, models.SendResult) and photo.id != text.id, photo
    inbox = {m["id"]: m for m in gateway.inbox(to)}
    assert inbox[text.id]["text"] == "Hola, ¿le interesa el piso?"
    got = inbox[photo.id]["media"]
    assert (base64.b64decode(got["data"]), got["mimetype"], got["caption"]) == (PNG, "image/png", "El salón")
    gateway.phone_sends(SENDER, line, "Sí, ¿cuándo puedo verlo?")

    assert generated("api.lines.sleep_line").sync(line, client=client) == "OK"
    assert detail(slot).status is models.SlotDetailStatus.SLEEPING
    asleep = send.sync(client=client, body=models.SendRequest(to=to, line=line, text="dormido"))
    assert isinstance(asleep, models.Error) and asleep.error == "line_sleeping", asleep
    assert generated("api.lines.resume_line_post").sync(line, client=client) == "OK"  # the POST twin
    assert detail(slot).status is models.SlotDetailStatus.ACTIVE and detail(slot).connected

    assert generated("api.lines.kill_line").sync(line, client=client) == "OK"
    killed = detail(slot)
    assert (killed.status, killed.line) == (models.SlotDetailStatus.AVAILABLE, None)
    again = generated("api.lines.kill_slot").sync(slot, client=client)
    assert isinstance(again, models.Error) and again.error == "not_enrolled", again

    # The webhook's side of the same life, read with the models of the document's webhooks section.
    def events():
        delivered = sorted(receiver.delivered(line=line), key=lambda e: e["seq"])
        kinds = [(e["type"], e.get("status")) for e in delivered]
        return delivered if ("slot.status", "killed") in kinds and ("message", None) in kinds else None

    delivered = wait_for(events, timeout=30, what=f"the events of line {line} to reach the webhook")
    statuses = [models.SlotStatusEvent.from_dict(e) for e in delivered if e["type"] == "slot.status"]
    assert [s.status.value for s in statuses] == ["enrolled", "sleeping", "active", "killed"]
    assert all((s.slot, s.line, s.payload.status.value) == (slot, line, s.status.value) for s in statuses)
    (message,) = [models.MessageEvent.from_dict(e) for e in delivered if e["type"] == "message"]
    assert (message.from_, message.slot, message.type_) == (SENDER, slot, "message")
    assert message.payload.message["conversation"] == "Sí, ¿cuándo puedo verlo?"


def test_every_kind_and_chat_action_through_the_generated_client(generated, gateway, receiver, new_line):
    """Each /send kind and each chat action built from the document's typed models, on a real line."""
    models = generated("models")
    client = generated("client").AuthenticatedClient(
        base_url=gateway.url, token=gateway.admin_token, timeout=httpx.Timeout(60), raise_on_unexpected_status=True)
    line, to = new_line(), new_line()
    gateway.enrolled_slot(line)
    send = generated("api.messages.send_message").sync

    def sent(**content):
        answer = send(client=client, body=models.SendRequest(to=to, line=line, **content))
        assert isinstance(answer, models.SendResult), answer
        return answer.id

    text = sent(text="El piso tiene 3 habitaciones")
    pin = sent(location=models.Location(latitude=40.4168, longitude=-3.7038, name="Piso en Sol"))
    card = sent(contact=models.Contact(name="Ana (agente)", number="34611177788"))
    voice = sent(media=models.Media(data=base64.b64encode(OGG_OPUS).decode(), mimetype="audio/ogg", ptt=True))
    quoting = sent(text="¿Le va bien el martes?", reply_to=text)
    sent(reaction=models.Reaction(message_id=text, emoji="👍"))
    edited = generated("api.messages.edit_message").sync(client=client, body=models.EditRequest(
        to=to, line=line, message_id=text, text="El piso tiene 4 habitaciones"))
    assert edited == "OK", edited
    typing = generated("api.messages.send_presence").sync(client=client, body=models.PresenceRequest(
        to=to, line=line, state=models.PresenceRequestState.COMPOSING))
    assert typing == "OK", typing
    assert generated("api.messages.revoke_message").sync(client=client, body=models.RevokeRequest(
        to=to, line=line, message_id=card)) == "OK"
    known = generated("api.messages.number_exists").sync(line, to, client=client)
    assert isinstance(known, models.Existence) and known.exists is True and known.number == to, known

    question = gateway.phone_sends(to, line, "¿Tiene garaje?")
    delivered_message(receiver, line, "¿Tiene garaje?")
    read = generated("api.messages.mark_read").sync(client=client, body=models.ReadRequest(
        chat=to, line=line, message_ids=[question]))
    assert read == "OK", read
    refused = generated("api.messages.revoke_message").sync(client=client, body=models.RevokeRequest(
        to=to, line=line, message_id=question))
    assert isinstance(refused, models.Error) and refused.error == "not_own_message", refused

    inbox = {m["id"]: m for m in gateway.inbox(to)}
    assert (inbox[text]["text"], inbox[text].get("edited"), inbox[text]["reactions"]) == (
        "El piso tiene 4 habitaciones", True, {line: "👍"})
    assert (inbox[pin]["kind"], inbox[voice]["kind"], inbox[quoting]["reply_to"]) == ("location", "voice", text)
    assert inbox[card].get("revoked") is True
    assert question in gateway.simnet("GET", f"/phones/{to}/read-by-line")
