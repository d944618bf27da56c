"""Every route of the API: authentication, bad input, JSON errors.

What the API answers from validation and Redis alone is asked of the app in this process (``app_client``,
Flask's test client on a real Redis); what needs supervisord, simnet or a slot's worker, of the real
gateway (``gateway``)."""

import re

import pytest

from controlplane.api.app import create_app
from controlplane.core.config import Settings
from controlplane.core.store import SlotStore
from tests.assertions import assert_json_error
from tests.gateway import QUEUE_KEY

PUBLIC = {"/health", "/ready", "/openapi.json", "/docs", "/docs/assets/swagger-ui.css", "/ui", "/ui/app.js",
          "/ui/app.css"}
BAD_SLOTS = ["ABC", "ABCDEFGHI", "ABCD-123", "ABCD_123", "ÁBCDEFGH"]
BAD_LINES = ["+34666123456", "34%20666123456", "34-666-123", "abc", "0346661234", "123456", "1234567890123456"]


def _app_routes():
    """(method, path) of every route the application defines, with sample values for its parameters."""
    app = create_app(Settings.from_env({"WHIN_API_TOKENS": "x", "WHIN_DATA_DIR": "/nonexistent",
                                        "WHIN_QUEUE_KEY": QUEUE_KEY}))
    samples = {"slot": "AAAAAAAA", "line": "34666123456", "number": "34611122233", "status": "active",
               "instance_number": "0",
               "job_id": "x", "queue_name": "deliveries", "registry_name": "queued", "per_page": "8",
               "order": "asc", "page": "1", "filename": "css/main.css", "name": "swagger-ui.css"}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: samples[m.group(1)], rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, path


ROUTES = sorted(set(_app_routes()))


def test_the_route_table_is_the_manuals():
    paths = {p for _, p in ROUTES}
    for expected in ["/slots", "/slots/active", "/enroll/AAAAAAAA", "/sleep/34666123456", "/sleepid/AAAAAAAA",
                     "/resume/34666123456", "/resumeid/AAAAAAAA", "/kill/34666123456", "/killid/AAAAAAAA",
                     "/slots2lines", "/lines2slots", "/health", "/ready"]:
        assert expected in paths
    for action in ("enroll", "sleep", "sleepid", "resume", "resumeid", "kill", "killid", "cancel"):
        methods = {m for m, p in ROUTES if p.startswith(f"/{action}/")}
        assert methods == {"GET", "POST"}, action


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r[1] not in PUBLIC])
def test_every_private_route_needs_a_valid_bearer_token(app_client, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic dGVzdA=="},
                    {"Authorization": "Bearer"}, {"Authorization": f"Bearer {app_client.admin_token}x"}):
        response = app_client.api(method, path, token=None, headers=headers)
        assert_json_error(response, 401, "unauthorized")
        challenge = "Basic" if path.startswith("/rq") else "Bearer"  # the dashboard asks the browser
        assert response.headers["WWW-Authenticate"].startswith(challenge)


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_health_and_ready_are_public(gateway, path):
    response = gateway.api("GET", path, token=None)
    assert response.status_code == 200
    assert response.json()["status"] in ("ok", "ready")


@pytest.mark.parametrize("path", sorted(PUBLIC - {"/health", "/ready"}))
def test_the_documents_and_pages_are_public(app_client, path):
    assert app_client.api("GET", path, token=None).status_code == 200


def test_every_public_route_exists():
    assert {p for _, p in ROUTES if p in PUBLIC} == PUBLIC


def test_any_configured_token_reads_but_only_the_admin_token_provisions(gateway):
    assert gateway.api("GET", "/slots", token=gateway.user_token).status_code == 200
    assert_json_error(gateway.api("POST", "/slots", token=gateway.user_token, json={"count": 1}), 403, "forbidden")
    assert gateway.api("POST", "/slots", json={"count": 1}).status_code == 200


@pytest.mark.parametrize("route", ["enroll", "sleepid", "resumeid", "killid", "slot"])
@pytest.mark.parametrize("bad", BAD_SLOTS)
def test_malformed_slot_ids_are_422_invalid_slot(app_client, route, bad):
    assert_json_error(app_client.api("GET", f"/{route}/{bad}"), 422, "invalid_slot")


@pytest.mark.parametrize("route", ["enroll", "sleepid", "resumeid", "killid", "slot"])
def test_unknown_slot_ids_are_422_unknown_slot(app_client, route):
    assert_json_error(app_client.api("GET", f"/{route}/ZZZZZZZ9"), 422, "unknown_slot")


@pytest.mark.parametrize("route", ["sleep", "resume", "kill"])
@pytest.mark.parametrize("bad", BAD_LINES)
def test_malformed_lines_are_422_invalid_line_saying_why(app_client, route, bad):
    body = assert_json_error(app_client.api("GET", f"/{route}/{bad}"), 422, "invalid_line")
    assert "line" in body["detail"].lower()


def test_a_plus_sign_is_named_in_the_error(app_client):
    body = assert_json_error(app_client.api("GET", "/sleep/%2B34666123456"), 422, "invalid_line")
    assert "'+'" in body["detail"]


@pytest.mark.parametrize("route", ["sleep", "resume", "kill"])
def test_lines_not_enrolled_are_422_unknown_line(app_client, route):
    assert_json_error(app_client.api("GET", f"/{route}/34999000111"), 422, "unknown_line")


def test_a_slot_id_in_lower_case_finds_the_slot(app_client):
    (slot_id,) = SlotStore.from_url(app_client.settings.redis_url).create_slots(1)
    assert app_client.api("GET", f"/slot/{slot_id.lower()}").json()["id"] == slot_id


def test_actions_in_the_wrong_state_are_422_with_their_codes(gateway, new_line):
    available, enrolled = gateway.provision(2)
    line = new_line()
    gateway.enroll(enrolled, line)
    assert_json_error(gateway.api("GET", f"/sleepid/{available}"), 422, "not_active")
    assert_json_error(gateway.api("GET", f"/resumeid/{available}"), 422, "not_sleeping")
    assert_json_error(gateway.api("GET", f"/killid/{available}"), 422, "not_enrolled")
    assert_json_error(gateway.api("GET", f"/enroll/{enrolled}"), 422, "slot_not_available")
    assert_json_error(gateway.api("GET", f"/resume/{line}"), 422, "not_sleeping")
    assert gateway.api("GET", f"/sleep/{line}").status_code == 200
    assert_json_error(gateway.api("GET", f"/sleep/{line}"), 422, "not_active")
    assert_json_error(gateway.api("GET", f"/sleepid/{enrolled}"), 422, "not_active")
    assert_json_error(gateway.api("GET", f"/enroll/{enrolled}"), 422, "slot_not_available")
    assert gateway.status_of(enrolled) == "sleeping"  # refusals changed nothing


def test_cancel_ends_a_pairing_and_never_touches_a_linked_line(gateway, new_line):
    pairing, enrolled = gateway.provision(2)
    line = new_line()
    gateway.enroll(enrolled, line)
    gateway.enroll_qr_text(pairing)
    assert gateway.api("POST", f"/cancel/{pairing}").text == "OK"
    assert (gateway.detail(pairing)["pairing"], gateway.status_of(pairing)) == (False, "available")
    assert_json_error(gateway.api("POST", f"/cancel/{pairing}"), 422, "not_pairing")
    assert_json_error(gateway.api("POST", f"/cancel/{enrolled}"), 422, "not_pairing")
    assert gateway.detail(enrolled)["line"] == line  # what /killid would have wiped


@pytest.mark.parametrize("status", ["available", "active", "sleeping"])
def test_slots_by_status_lists_only_that_status(app_client, status):
    listing = app_client.api("GET", f"/slots/{status}").json()
    assert all(list(pair.values()) == [status] for pair in listing)


@pytest.mark.parametrize("bad", ["pairing", "ACTIVE", "x", "12345678"])
def test_slots_by_an_unknown_status_is_422(app_client, bad):
    assert_json_error(app_client.api("GET", f"/slots/{bad}"), 422, "invalid_status")


@pytest.mark.parametrize("body", [{"count": 0}, {"count": -1}, {"count": "2"}, {"count": 101}, {"count": True},
                                  {"count": 1.5}, {}, {"number": 2}])
def test_provisioning_refuses_bad_counts(app_client, body):
    assert_json_error(app_client.api("POST", "/slots", json=body), 422, "invalid_count")


@pytest.mark.parametrize("raw", ['{"count": 2', "count=2", "[1]", "", "null"])
def test_provisioning_refuses_broken_json(app_client, raw):
    response = app_client.api("POST", "/slots", data=raw, headers={"Content-Type": "application/json"})
    assert_json_error(response, 422, "invalid_json")


def test_unknown_routes_are_json_404_and_wrong_methods_json_405(app_client):
    assert_json_error(app_client.api("GET", "/nope"), 404, "not_found")
    assert_json_error(app_client.api("GET", "/nope", token=None), 404, "not_found")
    assert_json_error(app_client.api("GET", "/enroll"), 404)
    wrong_method = app_client.api("DELETE", "/slots")
    assert_json_error(wrong_method, 405, "method_not_allowed")
    assert set(wrong_method.headers["Allow"].split(", ")) >= {"GET", "POST"}  # RFC 9110; found by the fuzz
    assert_json_error(app_client.api("PUT", "/slots2lines"), 405, "method_not_allowed")


def test_redis_down_is_a_json_503_not_a_500(tmp_path):
    settings = Settings.from_env({"WHIN_API_TOKENS": "t", "WHIN_DATA_DIR": str(tmp_path), "WHIN_QUEUE_KEY": QUEUE_KEY,
                                  "WHIN_REDIS_URL": f"unix://{tmp_path}/no-redis.sock"})
    client = create_app(settings).test_client()
    response = client.get("/slots", headers={"Authorization": "Bearer t"})
    assert response.status_code == 503
    assert response.get_json()["error"] == "store_unavailable"
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.get_json()["checks"] == {"redis": False, "supervisord": False}


def test_the_api_refuses_to_start_without_tokens(tmp_path):
    from controlplane.core.config import ConfigError

    with pytest.raises(ConfigError, match="WHIN_API_TOKENS"):
        create_app(Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_QUEUE_KEY": QUEUE_KEY}))


def test_enroll_with_an_engine_that_is_not_installed_is_a_clear_503(gateway, monkeypatch):
    from controlplane.core import engine_names

    # As on a host where neonize's wheel is missing: the engine's package cannot be found.
    monkeypatch.setitem(engine_names.REQUIRES, "whatsmeow", "neonize_not_installed_here")
    settings = Settings.from_env({**gateway.env, "WHIN_ENGINE": "whatsmeow"})
    client = create_app(settings).test_client()
    (slot_id,) = gateway.provision(1)
    response = client.get(f"/enroll/{slot_id}", headers={"Authorization": f"Bearer {gateway.admin_token}"})
    assert response.status_code == 503
    assert response.get_json()["error"] == "engine_unavailable"
    assert gateway.detail(slot_id)["pairing"] is False  # nothing was started


def test_rq_dashboard_is_served_to_the_admin_token_only_and_shows_no_content(gateway, new_line):
    import base64

    basic = "Basic " + base64.b64encode(f"ops:{gateway.admin_token}".encode()).decode()
    page = gateway.api("GET", "/rq/", token=None, headers={"Authorization": basic})
    assert page.status_code == 200 and "<html" in page.text.lower()
    queues = gateway.api("GET", "/rq/0/data/queues.json")  # the bearer token works too
    assert "deliveries" in [q["name"] for q in queues.json()["queues"]]
    user_basic = "Basic " + base64.b64encode(f"ops:{gateway.user_token}".encode()).decode()
    assert_json_error(gateway.api("GET", "/rq/", token=None, headers={"Authorization": user_basic}), 403)
    assert_json_error(gateway.api("GET", "/rq/0/data/queues.json", token=gateway.user_token), 403)
