"""POST /send's refusals that need no slot behind it, on the app in this process (tests/e2e/test_send.py
sends for real, and refuses there what is found out only once the slot is known: media data that is not
base64)."""

import pytest

from tests.assertions import assert_json_error

TO = "34622000001"


@pytest.mark.parametrize(("body", "code"), [
    ({"to": TO, "text": "x"}, "invalid_target"),
    ({"line": "34655500001", "slot": "AAAAAAAA", "to": TO, "text": "x"}, "invalid_target"),
    ({"line": "+34655500001", "to": TO, "text": "x"}, "invalid_line"),
    ({"line": 34655500001, "to": TO, "text": "x"}, "invalid_line"),
    ({"slot": "ABC", "to": TO, "text": "x"}, "invalid_slot"),
    ({"line": "34655500001", "to": "+34 622", "text": "x"}, "invalid_number"),
    ({"line": "34655500001", "text": "x"}, "invalid_number"),
    ({"line": "34655500001", "to": TO}, "missing_content"),
    ({"line": "34655500001", "to": TO, "text": ""}, "invalid_text"),
    ({"line": "34655500001", "to": TO, "text": 5}, "invalid_text"),
    ({"line": "34655500001", "to": TO, "text": "x" * 65537}, "invalid_text"),
    ({"line": "34655500001", "to": TO, "text": "x", "media": {"url": "http://a/b"}}, "invalid_content"),
    ({"line": "34655500001", "to": TO, "media": {}}, "invalid_media"),
    ({"line": "34655500001", "to": TO, "media": {"data": "aGk="}}, "invalid_media"),
    ({"line": "34655500001", "to": TO, "media": {"url": "file:///etc/passwd"}}, "invalid_media"),
    # null as the media itself (was a 500 for data: found reading the OpenAPI schema against the code)
    ({"line": "34655500001", "to": TO, "media": {"data": None, "mimetype": "image/png"}}, "invalid_media"),
    ({"line": "34655500001", "to": TO, "media": {"url": None}}, "invalid_media"),
    ({"line": "34655500001", "to": TO, "media": {"url": "http://a/b", "data": "aGk=", "mimetype": "image/png"}},
     "invalid_media"),
    ({"line": "34999999999", "to": TO, "text": "x"}, "unknown_line"),
    ({"slot": "ZZZZZZZ9", "to": TO, "text": "x"}, "unknown_slot"),
])
def test_bad_send_requests_are_422_with_their_codes(app_client, body, code):
    assert_json_error(app_client.api("POST", "/send", json=body), 422, code)


@pytest.mark.parametrize("raw", ['{"line": "3465', "line=1", "[]", ""])
def test_broken_json_is_a_422(app_client, raw):
    response = app_client.api("POST", "/send", data=raw, headers={"Content-Type": "application/json"})
    assert_json_error(response, 422, "invalid_json")
