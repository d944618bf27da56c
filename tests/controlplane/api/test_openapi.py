"""The OpenAPI document: public, complete, and true of the real gateway (schemathesis fuzzes it).

The fuzz runs against the shared gateway over HTTP (gunicorn, Redis, supervisord), with the generated
requests signed by a non-admin token, so POST /slots is exercised down to its 403 without provisioning
thousands of slots; POST /slots with the admin token is fuzzed on a gateway of its own. Random ids
are never real ones, so a last test walks real slots through every operation and validates each answer.
"""

import os
import re

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from controlplane.api.app import create_app
from controlplane.core.config import Settings
from tests.assertions import assert_json_error
from tests.gateway import QUEUE_KEY, wait_for
from tests.helpers import openapi_document

# Every check but one: "schema-valid data is accepted" cannot hold here, as a well-formed slot id or
# line that does not exist is a 422 by contract (the document cannot list which ones exist).
NOT_CHECKED = [positive_data_acceptance]
EXAMPLES = int(os.environ.get("WHIN_FUZZ_EXAMPLES", "30"))
NOT_IN_DOCUMENT = {"static", "openapi", "docs_assets", "ui", "rq_dashboard"}  # pages, not the API
CONTRACT = {  # the manual's table, the contract's additions and the operations endpoints
    ("GET", "/slots"), ("POST", "/slots"), ("GET", "/slots/{status}"), ("GET", "/slot/{slot}"),
    ("GET", "/enroll/{slot}"), ("POST", "/enroll/{slot}"), ("GET", "/paircode/{slot}/{line}"),
    ("GET", "/sleep/{line}"), ("GET", "/sleepid/{slot}"), ("GET", "/resume/{line}"),
    ("GET", "/resumeid/{slot}"), ("GET", "/kill/{line}"), ("GET", "/killid/{slot}"),
    ("POST", "/kill/{line}"), ("GET", "/slots2lines"), ("GET", "/lines2slots"), ("POST", "/send"),
    ("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"), ("GET", "/qr/{slot}"), ("POST", "/cancel/{slot}"),
    ("POST", "/read"), ("POST", "/presence"), ("POST", "/revoke"), ("POST", "/edit"),
    ("GET", "/exists/{line}/{number}"),
}

# The operationIds generated clients are built from: changing one breaks every integrator's code, so
# they are spelled out here. The manual's GET actions also take POST: the POST twin is <id>Post.
OPERATION_IDS = {
    ("GET", "/slots"): "listSlots", ("POST", "/slots"): "provisionSlots",
    ("GET", "/slots/{status}"): "listSlotsByStatus", ("GET", "/slot/{slot}"): "getSlot",
    ("GET", "/slots/details"): "listSlotDetails",
    ("GET", "/hosts"): "listHosts", ("POST", "/hosts/{name}/drain"): "drainHost",
    ("GET", "/slots2lines"): "mapSlotsToLines", ("GET", "/lines2slots"): "mapLinesToSlots",
    ("GET", "/enroll/{slot}"): "enrollSlot", ("POST", "/enroll/{slot}"): "enrollSlotPost",
    ("GET", "/qr/{slot}"): "getQrCode",
    ("GET", "/cancel/{slot}"): "cancelPairing", ("POST", "/cancel/{slot}"): "cancelPairingPost",
    ("GET", "/paircode/{slot}/{line}"): "pairByCode", ("POST", "/paircode/{slot}/{line}"): "pairByCodePost",
    ("GET", "/sleep/{line}"): "sleepLine", ("POST", "/sleep/{line}"): "sleepLinePost",
    ("GET", "/sleepid/{slot}"): "sleepSlot", ("POST", "/sleepid/{slot}"): "sleepSlotPost",
    ("GET", "/resume/{line}"): "resumeLine", ("POST", "/resume/{line}"): "resumeLinePost",
    ("GET", "/resumeid/{slot}"): "resumeSlot", ("POST", "/resumeid/{slot}"): "resumeSlotPost",
    ("GET", "/kill/{line}"): "killLine", ("POST", "/kill/{line}"): "killLinePost",
    ("GET", "/killid/{slot}"): "killSlot", ("POST", "/killid/{slot}"): "killSlotPost",
    ("POST", "/send"): "sendMessage", ("POST", "/media"): "downloadMedia",
    ("POST", "/read"): "markRead", ("POST", "/presence"): "sendPresence", ("POST", "/revoke"): "revokeMessage",
    ("POST", "/edit"): "editMessage", ("GET", "/exists/{line}/{number}"): "numberExists",
    ("GET", "/health"): "getHealth", ("GET", "/ready"): "getReadiness", ("GET", "/metrics"): "getMetrics",
}
# The contract's "Inbound delivery to inmovilla" table, with the schema each envelope has.
WEBHOOK_EVENTS = {
    "message": "MessageEvent", "receipt": "ReceiptEvent", "call": "CallEvent", "presence": "PresenceEvent",
    "group": "GroupEvent", "message.undecryptable": "UndecryptableMessageEvent", "slot.status": "SlotStatusEvent",
}


# Loaded at import, as schemathesis' lazy fixture loader does not run under pytest 9; the first test
# checks that the gateway serves exactly this document.
DOCUMENT = openapi_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)
_fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                 suppress_health_check=list(HealthCheck))


def _document(gateway) -> dict:
    response = gateway.api("GET", "/openapi.json", token=None)
    assert response.status_code == 200
    return response.json()


def test_the_document_is_public_and_lists_every_operation_of_the_contract(gateway):
    document = _document(gateway)
    assert document == DOCUMENT  # what the fuzz below runs on
    assert document["openapi"].startswith("3.")
    operations = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert operations >= CONTRACT
    assert not any(path.startswith(("/rq", "/docs", "/ui", "/openapi")) for _, path in operations)


def test_the_document_is_generated_from_the_routes():
    """Every API route of the app is in the document, so a new route cannot be left out of it."""
    app = create_app(Settings.from_env({"WHIN_API_TOKENS": "x", "WHIN_DATA_DIR": "/nonexistent",
                                        "WHIN_QUEUE_KEY": QUEUE_KEY}))
    paths = DOCUMENT["paths"]
    for rule in app.url_map.iter_rules():
        if rule.endpoint.partition(".")[0] not in NOT_IN_DOCUMENT:
            path = rule.rule.replace("<", "{").replace(">", "}")
            assert {m.lower() for m in rule.methods - {"HEAD", "OPTIONS"}} <= set(paths[path]), path


def test_security_and_errors_follow_the_code(gateway):
    paths = _document(gateway)["paths"]
    assert paths["/health"]["get"]["security"] == []
    assert paths["/slots"]["get"]["security"] == [{"bearerAuth": []}]
    assert "403" in paths["/slots"]["post"]["responses"]  # admin only
    assert "403" not in paths["/slots"]["get"]["responses"]
    assert paths["/send"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SendRequest"}
    slot = next(p for p in paths["/enroll/{slot}"]["get"]["parameters"] if p["name"] == "slot")
    assert slot["schema"]["pattern"] == "^[A-Za-z0-9]{8}$"
    for ops in paths.values():
        for op in ops.values():
            if "requestBody" in op:
                assert op["requestBody"]["required"] is True
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")):  # every error has its JSON shape documented
                    assert response["content"]["application/json"]["schema"]["$ref"].endswith(("/Error", "/Ready"))


def test_the_document_is_valid_openapi_3_1():
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in OPENAPI_31_VALIDATOR.iter_errors(DOCUMENT)]
    assert DOCUMENT["openapi"].startswith("3.1.") and not errors, errors[:5]


def test_every_operation_has_a_stable_distinct_operation_id():
    """A route added without @bp.doc(operation_id=...) fails here, and so does a renamed id."""
    operations = {(method.upper(), path): op.get("operationId")
                  for path, ops in DOCUMENT["paths"].items() for method, op in ops.items()}
    assert operations == OPERATION_IDS
    webhook_ids = [item["post"]["operationId"] for item in DOCUMENT["webhooks"].values()]
    every_id = [*operations.values(), *webhook_ids]
    assert len(set(every_id)) == len(every_id)  # unique in the whole document, as OpenAPI requires
    assert all(re.fullmatch(r"[a-z][A-Za-z]+", i) for i in every_id), every_id  # camelCase: clean in any language


def _combinators(schema) -> list[str]:
    found = []
    if isinstance(schema, dict):
        found += [key for key in ("oneOf", "anyOf", "allOf", "not") if key in schema]
        for value in schema.values():
            found += _combinators(value)
    elif isinstance(schema, list):
        for value in schema:
            found += _combinators(value)
    return found


def test_media_is_plain_properties_that_generators_keep():
    media = DOCUMENT["components"]["schemas"]["Media"]
    assert _combinators(media) == []  # generators turned the oneOf into a model with only `mimetype`
    assert media["type"] == "object" and "required" not in media
    assert set(media["properties"]) == {"url", "data", "mimetype", "filename", "caption", "ptt"}
    assert media["properties"]["url"]["type"] == media["properties"]["data"]["type"] == "string"
    assert media["properties"]["ptt"]["type"] == ["boolean", "null"]
    assert "Exactly one of `url`" in media["description"] and "invalid_media" in media["description"]


@pytest.mark.parametrize(("name", "fields"), [
    ("Location", {"latitude", "longitude", "name", "address"}), ("Contact", {"name", "number", "vcard"}),
    ("Reaction", {"message_id", "emoji"}), ("Existence", {"number", "exists", "jid"}),
])
def test_every_content_kind_is_plain_properties_too(name, fields):
    kind = DOCUMENT["components"]["schemas"][name]
    assert _combinators(kind) == [] and kind["type"] == "object" and set(kind["properties"]) == fields


def test_send_names_every_content_kind_and_the_reply():
    send = DOCUMENT["components"]["schemas"]["SendRequest"]
    assert {"text", "media", "location", "contact", "reaction", "reply_to", "quoted"} <= set(send["properties"])
    assert re.fullmatch(send["properties"]["to"]["pattern"], "120363012345678901@g.us")
    assert re.fullmatch(send["properties"]["to"]["pattern"], "34611122233")


def test_the_media_rule_is_kept_by_the_server(gateway):
    """The either/or the schema only describes: refused before the line is even looked up."""
    jpeg = "/9j/4AAQ"
    for media in ({"url": "http://127.0.0.1:9/a.jpg", "data": jpeg, "mimetype": "image/jpeg"},  # both
                  {"mimetype": "image/jpeg", "caption": "neither"},
                  {"data": jpeg},  # data needs a mimetype
                  {"url": "ftp://example.com/a.jpg"},
                  {"url": None}):
        body = {"line": "34600999999", "to": "34611122233", "media": media}
        assert_json_error(gateway.api("POST", "/send", json=body), 422, "invalid_media")


def test_the_webhooks_section_describes_every_event_type_with_its_signature_headers():
    webhooks, components = DOCUMENT["webhooks"], DOCUMENT["components"]
    assert set(webhooks) == set(WEBHOOK_EVENTS)
    for kind, schema_name in WEBHOOK_EVENTS.items():
        operation = webhooks[kind]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{schema_name}"}
        envelope = components["schemas"][schema_name]
        assert envelope["properties"]["type"]["const"] == kind
        assert {"type", "line", "slot", "seq", "received_at", "payload"} <= set(envelope["required"])
        headers = [components["parameters"][p["$ref"].rsplit("/", 1)[1]] for p in operation["parameters"]]
        assert {(h["in"], h["name"], h["required"]) for h in headers} == {
            ("header", "webhook-id", True), ("header", "webhook-timestamp", True),
            ("header", "webhook-signature", True)}
        assert "2XX" in operation["responses"]
    # What the contract's table says each type adds to the envelope.
    # What the contract's table says each type adds to the envelope, and the routing aids it may add
    # besides: the whatsmeow event behind it, the sender's @lid id, and who a receipt came from.
    adds = {"message": {"message_id", "chat", "from", "from_me"}, "receipt": {"status", "message_ids", "chat"},
            "call": {"from", "call_id"}, "presence": {"from", "chat"}, "group": {"chat"},
            "message.undecryptable": {"message_id", "chat", "from"}, "slot.status": {"status"}}
    for kind, fields in adds.items():
        properties = set(components["schemas"][WEBHOOK_EVENTS[kind]]["properties"])
        extra = properties - {"type", "line", "slot", "seq", "received_at", "payload"} - fields
        assert fields <= properties and extra <= {"event", "from_lid", "from"}, (kind, extra)


def _validator(pointer: str):
    return jsonschema_rs.Draft202012Validator({"$ref": pointer, "components": DOCUMENT["components"]})


def test_delivered_webhooks_match_the_webhooks_section(gateway, receiver, new_line):
    """Real deliveries (enrolled, a message, sleeping, active, killed), bodies and headers, against the document."""
    line = new_line()
    slot_id = gateway.enrolled_slot(line)
    gateway.phone_sends("34611122233", line, "¿Sigue disponible?")
    for action in ("sleep", "resume", "kill"):
        assert gateway.api("GET", f"/{action}/{line}").status_code == 200
    statuses = ["enrolled", "sleeping", "active", "killed"]

    def arrived():
        events = receiver.delivered(line=line)
        got = [e["status"] for e in events if e["type"] == "slot.status"]
        return all(s in got for s in statuses) and any(e["type"] == "message" for e in events)
    wait_for(arrived, timeout=30, what=f"the events of line {line} to reach the webhook")

    with receiver.lock:
        deliveries = [d for d in receiver.attempts if d.status < 300 and d.event.get("line") == line]
    headers = {p["name"]: _validator(f"#/components/parameters/{name}/schema")
               for name, p in DOCUMENT["components"]["parameters"].items() if p["in"] == "header"}
    for delivery in deliveries:
        event = delivery.event
        operation = DOCUMENT["webhooks"][event["type"]]["post"]
        body_schema = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        errors = [e.message for e in _validator(body_schema).iter_errors(event)]
        assert not errors, (event["type"], errors)
        documented = DOCUMENT["components"]["schemas"][body_schema.rsplit("/", 1)[1]]["properties"]
        assert set(event) <= set(documented), (event["type"], set(event) - set(documented))  # nothing undocumented
        assert event["slot"] == slot_id
        for name, value in (("webhook-id", delivery.webhook_id), ("webhook-timestamp", delivery.timestamp),
                            ("webhook-signature", delivery.signature)):
            assert headers[name].is_valid(value), (name, value)
    assert {d.event["type"] for d in deliveries} == {"message", "slot.status"}


def test_docs_is_an_offline_swagger_ui(gateway):
    page = gateway.api("GET", "/docs", token=None)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert "/openapi.json" in page.text
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", page.text)  # nothing fetched from elsewhere
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"):
        response = gateway.api("GET", f"/docs/assets/{asset}", token=None)
        assert response.status_code == 200 and len(response.content) > 1000, asset


@schema.parametrize()
@_fuzz
def test_no_generated_request_breaks_the_document(case, gateway):
    case.call_and_validate(base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.user_token}"},
                          excluded_checks=NOT_CHECKED)


@schema.include(method="POST", path="/slots").parametrize()
@settings(_fuzz, max_examples=min(EXAMPLES, 15))
def test_provisioning_with_the_admin_token_keeps_to_the_document(case, fresh_gateway):
    if isinstance(case.body, dict) and type(case.body.get("count")) is int and 2 < case.body["count"] <= 100:
        case.body["count"] = 2  # still valid; spares supervisord hundreds of programs per example
    case.call_and_validate(base_url=fresh_gateway.url, excluded_checks=NOT_CHECKED,
                           headers={"Authorization": f"Bearer {fresh_gateway.admin_token}"})


def test_real_slots_through_every_operation_answer_as_documented(gateway, new_line):
    """What random ids cannot reach: the 200s, and the refusals that depend on a slot's state."""
    spare, enrolled = gateway.provision(2)
    line, other = new_line(), new_line()
    gateway.enroll(enrolled, line)
    steps = [
        ("GET", "/slots", {}, None, 200), ("GET", "/slots/{status}", {"status": "active"}, None, 200),
        ("GET", "/slots2lines", {}, None, 200), ("GET", "/lines2slots", {}, None, 200),
        ("GET", "/slot/{slot}", {"slot": enrolled}, None, 200),
        ("GET", "/qr/{slot}", {"slot": spare}, None, 422),
        ("GET", "/enroll/{slot}", {"slot": spare}, None, 200), ("GET", "/qr/{slot}", {"slot": spare}, None, 200),
        ("GET", "/paircode/{slot}/{line}", {"slot": spare, "line": other}, None, 200),
        ("POST", "/cancel/{slot}", {"slot": spare}, None, 200), ("GET", "/cancel/{slot}", {"slot": spare}, None, 422),
        ("GET", "/enroll/{slot}", {"slot": enrolled}, None, 422),
        ("POST", "/send", {}, {"line": line, "to": other, "text": "checked against the document"}, 200),
        ("POST", "/send", {}, {"line": line, "to": other, "location": {"latitude": 40.4, "longitude": -3.7}}, 200),
        ("POST", "/send", {}, {"line": line, "to": other, "reaction": {"message_id": "NOPE", "emoji": "👍"}}, 422),
        ("POST", "/presence", {}, {"line": line, "to": other, "state": "composing"}, 200),
        ("POST", "/read", {}, {"line": line, "chat": other, "message_ids": ["NOPE"]}, 422),
        ("POST", "/revoke", {}, {"line": line, "to": other, "message_id": "NOPE"}, 422),
        ("POST", "/edit", {}, {"line": line, "to": other, "message_id": "NOPE", "text": "x"}, 422),
        ("GET", "/exists/{line}/{number}", {"line": line, "number": other}, None, 200),
        ("GET", "/sleep/{line}", {"line": line}, None, 200), ("GET", "/sleepid/{slot}", {"slot": enrolled}, None, 422),
        ("POST", "/send", {}, {"slot": enrolled, "to": other, "text": "asleep"}, 422),
        ("GET", "/resume/{line}", {"line": line}, None, 200),
        ("GET", "/resumeid/{slot}", {"slot": enrolled}, None, 422),
        ("GET", "/kill/{line}", {"line": line}, None, 200), ("GET", "/killid/{slot}", {"slot": enrolled}, None, 422),
        ("GET", "/metrics", {}, None, 200), ("GET", "/health", {}, None, 200), ("GET", "/ready", {}, None, 200),
    ]
    for method, path, parameters, body, expected in steps:
        extra = {} if body is None else {"body": body, "media_type": "application/json"}
        case = schema[path][method].Case(path_parameters=parameters, **extra)
        response = case.call_and_validate(base_url=gateway.url, excluded_checks=NOT_CHECKED,
                                          headers={"Authorization": f"Bearer {gateway.admin_token}"})
        assert response.status_code == expected, (method, path, response.text)
