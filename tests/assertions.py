"""Assertions shared by the API tests."""


def assert_json_error(response, status: int, code: str | None = None):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["detail"] and "Traceback" not in body["detail"]
    if code:
        assert body["error"] == code, body
    return body
