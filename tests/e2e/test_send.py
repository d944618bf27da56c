"""POST /send end to end: the API, the slot worker, the simulated network, the recipient's inbox."""

import base64
import contextlib
import hashlib
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.assertions import assert_json_error
from tests.e2e.samples import image
from tests.gateway import wait_for
from tests.httpserver import QuietHandler, serving

TO = "34622000001"
JPEG = image("JPEG")  # a real one: a linked device refuses to send an image that does not decode


@pytest.fixture(scope="module")
def media_server():
    """Serves media for 'media.url': a small image, one too large, one too slow, one missing."""

    class Handler(QuietHandler):
        def do_GET(self):
            if self.path == "/photo.jpg":
                self.answer(200, JPEG, "image/jpeg")
            elif self.path == "/big.bin":
                self.answer(200, os.urandom(1024 * 1024 + 1), "application/octet-stream")
            elif self.path == "/slow.jpg":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    for _ in range(20):  # a byte a second: more than WHIN_MEDIA_TIMEOUT (3 s) in all
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(1)
            else:
                self.answer(404)

    with serving(Handler) as url:
        yield url


@pytest.fixture(scope="module")
def sender(gateway):
    """An enrolled line that tests send from (rate limit: each test sends only a few)."""
    (slot_id,) = gateway.provision(1)
    line = "34655500001"
    gateway.enroll(slot_id, line)
    return slot_id, line


def test_send_text_by_line_reaches_the_recipients_inbox(gateway, sender):
    slot_id, line = sender
    response = gateway.api("POST", "/send", json={"line": line, "to": TO, "text": "Hola desde la agencia"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "timestamp"} and abs(body["timestamp"] - time.time()) < 30
    got = [m for m in gateway.inbox(TO) if m["id"] == body["id"]]
    assert got == [{"id": body["id"], "from": line, "to": TO, "text": "Hola desde la agencia",
                    "timestamp": body["timestamp"], "kind": "text", "status": "delivered"}]


def test_send_by_slot_works_the_same(gateway, sender):
    slot_id, line = sender
    response = gateway.api("POST", "/send", json={"slot": slot_id, "to": TO, "text": "por slot"})
    assert response.status_code == 200, response.text
    assert [m["from"] for m in gateway.inbox(TO) if m["id"] == response.json()["id"]] == [line]


def test_send_media_given_as_base64_data(gateway, sender):
    _, line = sender
    media = {"data": base64.b64encode(JPEG).decode(), "mimetype": "image/jpeg", "filename": "piso.jpg",
             "caption": "El salón"}
    response = gateway.api("POST", "/send", json={"line": line, "to": TO, "media": media})
    assert response.status_code == 200, response.text
    (got,) = [m for m in gateway.inbox(TO) if m["id"] == response.json()["id"]]
    digest = hashlib.sha256(JPEG).hexdigest()
    assert (got["kind"], got["media"]["ptt"], got["media"]["sha256"]) == ("image", False, digest)
    assert {name: got["media"][name] for name in media} == media


def test_send_media_fetched_from_a_url(gateway, sender, media_server):
    _, line = sender
    response = gateway.api("POST", "/send", json={"line": line, "to": TO,
                                                  "media": {"url": f"{media_server}/photo.jpg", "caption": "Cocina"}})
    assert response.status_code == 200, response.text
    (got,) = [m for m in gateway.inbox(TO) if m["id"] == response.json()["id"]]
    assert base64.b64decode(got["media"]["data"]) == JPEG
    assert (got["media"]["mimetype"], got["media"]["caption"]) == ("image/jpeg", "Cocina")


@pytest.mark.parametrize(("path", "code"), [("/missing.jpg", "media_unreachable"), ("/big.bin", "media_too_large"),
                                            ("/slow.jpg", "media_unreachable")])
def test_media_urls_that_cannot_be_fetched_are_422_within_bounds(gateway, sender, media_server, path, code):
    _, line = sender
    started = time.monotonic()
    response = gateway.api("POST", "/send", json={"line": line, "to": TO, "media": {"url": media_server + path}})
    assert_json_error(response, 422, code)
    assert time.monotonic() - started < 8  # WHIN_MEDIA_TIMEOUT is 3 s


def test_a_media_url_nobody_listens_on_is_422(gateway, sender):
    _, line = sender
    response = gateway.api("POST", "/send", json={"line": line, "to": TO, "media": {"url": "http://127.0.0.1:9/x"}})
    assert_json_error(response, 422, "media_unreachable")


@pytest.fixture
def strict_gateway(make_gateway):
    """A gateway whose WHIN_MEDIA_ALLOW names only 127.0.0.2, which plays a host on the internet."""
    return make_gateway(WHIN_MEDIA_ALLOW="127.0.0.2/32")


def _serve(address: str, answer) -> tuple[ThreadingHTTPServer, str]:
    """A loopback HTTP server in a thread; ``answer(path)`` gives (status, headers, body)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, headers, body = answer(self.path)
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((address, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{address}:{server.server_address[1]}"


@pytest.fixture(scope="module")
def inside_and_outside():
    """(inside URL, its requests, outside URL): a loopback-only server, and an "outside" one on 127.0.0.2."""
    inside_requests = []

    def inside_answer(path):
        inside_requests.append(path)
        return 200, {"Content-Type": "image/jpeg"}, JPEG

    inside_server, inside = _serve("127.0.0.1", inside_answer)
    outside_server, outside = _serve("127.0.0.2", lambda path: (
        (302, {"Location": f"{inside}/secret.jpg"}, b"") if path == "/to-loopback"  # the 302 to loopback
        else (200, {"Content-Type": "image/jpeg"}, JPEG)))
    yield inside, inside_requests, outside
    for server in (inside_server, outside_server):
        server.shutdown()
        server.server_close()


def test_media_urls_into_the_gateways_network_get_one_answer_and_nothing_is_sent(strict_gateway, inside_and_outside,
                                                                                 new_line):
    """Issue 10, item 1 (SSRF): a loopback file, a redirect to it, closed ports, a name for loopback."""
    inside, inside_requests, outside = inside_and_outside
    port = inside.rsplit(":", 1)[1]
    line, to = new_line(), new_line()
    strict_gateway.enrolled_slot(line)
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        closed = s.getsockname()[1]
    urls = [f"{inside}/secret.jpg", f"{outside}/to-loopback", f"http://localhost:{port}/secret.jpg",
            f"http://[::ffff:127.0.0.1]:{port}/secret.jpg", "http://127.0.0.1:9/x", f"http://127.0.0.2:{closed}/x",
            "http://169.254.169.254/latest/meta-data/"]
    answers = [strict_gateway.api("POST", "/send", json={"line": line, "to": to, "media": {"url": url}})
               for url in urls]
    for answer in answers:
        assert_json_error(answer, 422, "media_unreachable")
    assert len({answer.text for answer in answers}) == 1  # open, closed, refused: all alike
    assert inside_requests == []
    assert strict_gateway.inbox(to) == []
    # The allowed "outside" host is fetched as before.
    response = strict_gateway.api("POST", "/send", json={"line": line, "to": to, "media": {"url": f"{outside}/p.jpg"}})
    assert response.status_code == 200, response.text
    assert [base64.b64decode(m["media"]["data"]) for m in strict_gateway.inbox(to)] == [JPEG]


def test_media_data_that_is_not_base64_is_422(gateway, sender):
    # Decoded once the slot is known to be able to send (the other refusals: tests/controlplane/api/test_messages.py).
    _, line = sender
    body = {"line": line, "to": TO, "media": {"data": "not base64!", "mimetype": "image/png"}}
    assert_json_error(gateway.api("POST", "/send", json=body), 422, "invalid_media")


def test_sleeping_and_unenrolled_slots_do_not_send(gateway, new_line):
    sleeper, idle = gateway.provision(2)
    line = new_line()
    gateway.enroll(sleeper, line)
    assert gateway.api("GET", f"/sleep/{line}").status_code == 200
    assert_json_error(gateway.api("POST", "/send", json={"line": line, "to": TO, "text": "x"}), 422, "line_sleeping")
    assert_json_error(gateway.api("POST", "/send", json={"slot": sleeper, "to": TO, "text": "x"}), 422,
                      "line_sleeping")
    assert_json_error(gateway.api("POST", "/send", json={"slot": idle, "to": TO, "text": "x"}), 422, "not_active")
    assert not [m for m in gateway.inbox(TO) if m["from"] == line]


def test_going_over_the_lines_rate_is_429_with_retry_after(gateway, new_line):
    line = new_line()
    gateway.enrolled_slot(line)
    answers = [gateway.api("POST", "/send", json={"line": line, "to": TO, "text": f"n{i}"}) for i in range(12)]
    statuses = [a.status_code for a in answers]
    assert statuses[:10] == [200] * 10  # the burst (WHIN_SEND_BURST)
    assert statuses[10] == 429
    assert_json_error(answers[10], 429, "rate_limited")
    assert int(answers[10].headers["Retry-After"]) >= 1
    assert len([m for m in gateway.inbox(TO) if m["from"] == line]) == statuses.count(200)


def test_a_slot_that_does_not_answer_is_504_and_the_message_is_not_sent_later(gateway, new_line):
    line = new_line()
    slot_id = gateway.enrolled_slot(line)
    pid = gateway.slot_pid(slot_id)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = gateway.api("POST", "/send", json={"line": line, "to": TO, "text": "too late"})
        assert_json_error(response, 504, "engine_timeout")
        assert 4 < time.monotonic() - started < 10  # WHIN_SEND_TIMEOUT is 5 s
    finally:
        os.kill(pid, signal.SIGCONT)
    # 2.5 s, not 2: gunicorn closes a keep-alive connection idle for 2 s, and a request sent on it at
    # that very moment is reset (CI saw it); past it, the client sees the close and connects anew.
    time.sleep(2.5)
    assert not [m for m in gateway.inbox(TO) if m.get("text") == "too late"]
    # The slot works again afterwards.
    assert gateway.api("POST", "/send", json={"line": line, "to": TO, "text": "on time"}).status_code == 200


def test_whatsapp_unreachable_is_a_clear_503_not_a_hang(gateway, new_line):
    line = new_line()
    slot_id = gateway.enrolled_slot(line)
    gateway.supervisorctl("stop", "simnet")
    try:
        wait_for(lambda: not gateway.detail(slot_id)["connected"], timeout=20, what="the slot to notice")
        started = time.monotonic()
        response = gateway.api("POST", "/send", json={"line": line, "to": TO, "text": "x"})
        assert_json_error(response, 503, "whatsapp_unreachable")
        assert time.monotonic() - started < 5
    finally:
        gateway.supervisorctl("start", "simnet")
    wait_for(lambda: gateway.detail(slot_id)["connected"], timeout=40, what="the slot to reconnect")
