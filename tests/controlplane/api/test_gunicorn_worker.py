"""What gunicorn answers itself, before Flask (a request it cannot parse), is JSON too: never HTML."""

import json
import socket

import pytest

from controlplane.api.gunicorn_worker import write_json_error


def _raw(gateway, request: bytes) -> tuple[str, dict, bytes]:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return status, headers, body


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"GARBAGE\r\n\r\n", 400, "bad_request"),
    (b"GET /slots HTTP/9.9\r\nHost: x\r\n\r\n", 400, "bad_request"),
    (b"GET /slots HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, "bad_request"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"POST /send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: snappy\r\n\r\n", 501,
     "unsupported_transfer_coding"),
])
def test_requests_gunicorn_cannot_parse_get_a_json_error(gateway, request_bytes, status, code):
    status_line, headers, body = _raw(gateway, request_bytes)
    assert status_line.split(" ")[1] == str(status)
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["error"] == code and answer["detail"]
    assert int(headers["content-length"]) == len(body)


def test_server_errors_say_internal_error():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        write_json_error(ours, 500, "Internal Server Error", "")
        ours.shutdown(socket.SHUT_WR)
        sent = theirs.makefile("rb").read()
    head, _, body = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error")
    assert json.loads(body) == {"error": "internal_error", "detail": "Internal Server Error"}


def test_a_worker_moves_what_it_built_at_start_out_of_the_collectors_sight():
    import gc

    from controlplane.api import gunicorn_conf

    gc.unfreeze()  # a slot runner that ran in this process earlier froze what it had built
    assert gc.get_freeze_count() == 0
    try:
        gunicorn_conf.post_worker_init(None)
        assert gc.get_freeze_count() > 10_000  # the imported modules' objects, at least
    finally:
        gc.unfreeze()
