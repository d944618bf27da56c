"""The OpenAPI document: public, complete, and true of the real gateway (schemathesis fuzzes it).

The fuzz runs against the shared gateway over HTTP (gunicorn, Redis, supervisord), with the generated
requests signed by a non-admin token, so POST /slots is exercised down to its 403 without provisioning
thousands of slots; a second, smaller fuzz runs POST /slots with the admin token.
"""

import os
import re

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from controlplane.app import create_app
from controlplane.config import Settings
from tests.gateway import QUEUE_KEY

# Every check but one: "schema-valid data is accepted" cannot hold here, as a well-formed slot id or
# line that does not exist is a 422 by contract (the document cannot list which ones exist).
NOT_CHECKED = [positive_data_acceptance]
EXAMPLES = int(os.environ.get("WHIN_FUZZ_EXAMPLES", "30"))
CONTRACT = {  # the manual's table, the contract's additions and the operations endpoints
    ("GET", "/slots"), ("POST", "/slots"), ("GET", "/slots/{status}"), ("GET", "/slot/{slot}"),
    ("GET", "/enroll/{slot}"), ("POST", "/enroll/{slot}"), ("GET", "/paircode/{slot}/{line}"),
    ("GET", "/sleep/{line}"), ("GET", "/sleepid/{slot}"), ("GET", "/resume/{line}"),
    ("GET", "/resumeid/{slot}"), ("GET", "/kill/{line}"), ("GET", "/killid/{slot}"),
    ("POST", "/kill/{line}"), ("GET", "/slots2lines"), ("GET", "/lines2slots"), ("POST", "/send"),
    ("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"),
}


def _app_document() -> dict:
    app = create_app(Settings.from_env({"WHIN_API_TOKENS": "x", "WHIN_DATA_DIR": "/nonexistent",
                                        "WHIN_QUEUE_KEY": QUEUE_KEY}))
    with app.test_request_context():
        return app.spec


# Loaded at import, as schemathesis' lazy fixture loader does not run under pytest 9; the first test
# checks that the gateway serves exactly this document.
DOCUMENT = _app_document()
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
        blueprint = rule.endpoint.rpartition(".")[0]
        if blueprint in ("slots", "enrollment", "lines", "messages", "health", "metrics"):
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
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")) and "content" in response and response["content"]:
                    assert response["content"]["application/json"]["schema"]["$ref"].endswith(("/Error", "/Ready"))


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
def test_provisioning_with_the_admin_token_keeps_to_the_document(case, gateway):
    case.call_and_validate(base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.admin_token}"},
                          excluded_checks=NOT_CHECKED)
