"""Issue 10, items 3, 4 and 6 (API): the dashboard against cross-site requests and deletions, the body
limit, and JSON nested too deeply to parse. Against the running gateway, over real HTTP, but for the JSON
that the app itself refuses (on Flask's test client)."""

import base64
import http.client
import json
import os
import socket
import threading
from datetime import timedelta

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from controlplane.api.app import create_app, max_body_bytes
from controlplane.api.dashboard import is_cross_site, same_origin
from controlplane.core.config import Settings
from tests.assertions import assert_json_error
from tests.gateway import QUEUE_KEY, TEST_ENV

TEST_QUEUE = "whin-test-hardening"  # no worker listens on it: its jobs stay where the test puts them
EVIL = "https://evil.example"
REGISTRIES = ["queued", "failed", "deferred", "started", "finished", "canceled", "scheduled"]
MEDIA_MAX = int(TEST_ENV["WHIN_MEDIA_MAX_BYTES"])
LIMIT = max_body_bytes(MEDIA_MAX)


def _json_routes():
    """(method, path) of every operation that takes a JSON body, from the app's own OpenAPI document."""
    app = create_app(Settings.from_env({"WHIN_API_TOKENS": "x", "WHIN_DATA_DIR": "/nonexistent",
                                        "WHIN_QUEUE_KEY": QUEUE_KEY}))
    with app.test_request_context():
        paths = app.spec["paths"]
    return sorted((method.upper(), path) for path, operations in paths.items()
                  for method, operation in operations.items() if "requestBody" in operation)


JSON_ROUTES = _json_routes()


def _basic(gateway) -> dict:
    """What a browser sends to /rq once it has the admin token as the Basic password."""
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{gateway.admin_token}".encode()).decode()}


@pytest.fixture
def scheduled_jobs(gateway):
    """Three deliveries-to-be waiting in the scheduled registry of a queue of the test's own."""
    connection = redis.Redis.from_url(gateway.env["WHIN_REDIS_URL"])
    queue = Queue(TEST_QUEUE, connection=connection, serializer=JSONSerializer)
    jobs = [queue.enqueue_in(timedelta(days=1), "builtins.print", i) for i in range(3)]
    yield queue, jobs
    _forget(connection, queue, jobs)


@pytest.fixture
def failed_job(gateway):
    """A delivery that failed, in the failed registry of a queue of the test's own."""
    connection = redis.Redis.from_url(gateway.env["WHIN_REDIS_URL"])
    queue = Queue(TEST_QUEUE, connection=connection, serializer=JSONSerializer)
    job = queue.create_job("builtins.print", args=[1])
    job.save()
    queue.failed_job_registry.add(job, ttl=3600, exc_string="receiver down")
    yield queue, job
    _forget(connection, queue, [job])


def _forget(connection, queue, jobs) -> None:
    """Leave nothing of the test's queue, whatever became of its jobs (a dashboard may have deleted them)."""
    ids = [job.id for job in jobs]
    for registry in (queue.scheduled_job_registry, queue.failed_job_registry):
        connection.zrem(registry.key, *ids)
    connection.delete(queue.key, *(job.key for job in jobs))
    connection.srem(Queue.redis_queues_keys, queue.key)
    connection.close()


# --- 3. the dashboard: cross-site requests and deletions ---------------------------------------

@pytest.mark.parametrize("headers", [
    {"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"},
    {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
], ids=["evil-origin", "fetch-cross-site", "fetch-same-site", "null-origin", "both"])
def test_a_cross_site_post_to_the_dashboard_is_refused(gateway, scheduled_jobs, headers):
    queue, _ = scheduled_jobs
    for path in (f"/rq/queue/{TEST_QUEUE}/scheduled/empty", f"/rq/queue/{TEST_QUEUE}/compact",
                 f"/rq/requeue/{TEST_QUEUE}", f"/rq/job/{scheduled_jobs[1][0].id}/requeue",
                 f"/rq/job/{scheduled_jobs[1][0].id}/delete"):
        response = gateway.api("POST", path, token=None, headers={**_basic(gateway), **headers})
        assert_json_error(response, 403, "cross_site")
    assert queue.scheduled_job_registry.count == 3  # the finding: three retries gone for good


def test_another_port_of_the_same_host_is_another_origin(gateway):
    other_port = f"http://127.0.0.1:{gateway.port + 1}"
    response = gateway.api("POST", f"/rq/requeue/{TEST_QUEUE}", headers={"Origin": other_port})
    assert_json_error(response, 403, "cross_site")


def test_a_cross_site_requeue_all_by_get_is_refused_and_pages_still_open_from_links(gateway):
    assert_json_error(gateway.api("GET", f"/rq/requeue/{TEST_QUEUE}", token=None,
                                  headers={**_basic(gateway), "Sec-Fetch-Site": "cross-site"}), 403, "cross_site")
    # Following a link to the dashboard from another site is a cross-site GET of a page: it opens.
    page = gateway.api("GET", "/rq/", token=None, headers={**_basic(gateway), "Sec-Fetch-Site": "cross-site",
                                                           "Origin": EVIL})
    assert page.status_code == 200 and "<html" in page.text.lower()


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "same-origin"}, {"Origin": "{url}"}, {"Origin": "{url}", "Sec-Fetch-Site": "same-origin"}, {},
], ids=["fetch-same-origin", "own-origin", "both", "no-browser-headers"])
def test_a_same_origin_requeue_from_the_dashboard_is_served(gateway, failed_job, headers):
    """Requeueing a failed delivery loses nothing: the dashboard's own page (or curl) may do it."""
    queue, job = failed_job
    headers = {**_basic(gateway), **{name: value.format(url=gateway.url) for name, value in headers.items()}}
    response = gateway.api("POST", f"/rq/job/{job.id}/requeue", token=None, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "OK"}
    assert job.id in queue.get_job_ids() and job.id not in queue.failed_job_registry.get_job_ids()
    requeue_all = gateway.api("POST", f"/rq/requeue/{TEST_QUEUE}", token=None, headers=headers)
    assert requeue_all.json() == {"status": "OK", "count": 0}


def test_behind_the_tls_proxy_the_browsers_https_origin_is_its_own(gateway):
    """nginx forwards `Host: whin.example.com` and speaks http to the API; the page's origin is https."""
    path = f"/rq/requeue/{TEST_QUEUE}"
    response = gateway.api("POST", path, headers={"Host": "whin.example.com", "Origin": "https://whin.example.com"})
    assert response.status_code == 200, response.text
    assert_json_error(gateway.api("POST", path, headers={"Host": "whin.example.com",
                                                         "Origin": "https://whin.example.com.evil"}),
                      403, "cross_site")


@pytest.mark.parametrize("origin", ["{url}", None], ids=["own-origin", "curl"])
def test_the_dashboard_deletes_no_delivery_even_from_its_own_pages(gateway, scheduled_jobs, origin):
    queue, jobs = scheduled_jobs
    headers = {**_basic(gateway), **({"Origin": origin.format(url=gateway.url)} if origin else {})}
    for registry in REGISTRIES:
        response = gateway.api("POST", f"/rq/queue/{TEST_QUEUE}/{registry}/empty", token=None, headers=headers)
        assert_json_error(response, 403, "delete_disabled")
    for job in jobs:
        response = gateway.api("POST", f"/rq/job/{job.id}/delete", token=None, headers=headers)
        assert_json_error(response, 403, "delete_disabled")
    assert queue.scheduled_job_registry.count == 3
    assert all(queue.fetch_job(job.id) is not None for job in jobs)


def test_the_dashboard_shows_no_delete_buttons(gateway, scheduled_jobs):
    page = gateway.api("GET", f"/rq/0/view/jobs/{TEST_QUEUE}/scheduled/8/asc/1", token=None, headers=_basic(gateway))
    assert page.status_code == 200
    assert 'id="empty-btn"' not in page.text and 'data-role="delete-job-btn"' not in page.text
    job_page = gateway.api("GET", f"/rq/0/view/job/{scheduled_jobs[1][0].id}", token=None, headers=_basic(gateway))
    assert job_page.status_code == 200 and '<button id="delete-job-btn"' not in job_page.text


@pytest.mark.parametrize(("fetch_site", "origin", "host", "cross"), [
    (None, None, "127.0.0.1:8080", False),
    ("none", None, "127.0.0.1:8080", False),
    ("same-origin", "http://127.0.0.1:8080", "127.0.0.1:8080", False),
    ("SAME-ORIGIN", None, "127.0.0.1:8080", False),
    ("cross-site", None, "127.0.0.1:8080", True),
    ("same-site", "http://127.0.0.1:8080", "127.0.0.1:8080", True),
    ("something-new", None, "127.0.0.1:8080", True),
    (None, "http://127.0.0.1:8081", "127.0.0.1:8080", True),
    (None, "http://localhost:8080", "127.0.0.1:8080", True),
    (None, "https://whin.example.com", "whin.example.com", False),
    (None, "https://WHIN.example.com:443", "whin.example.com", False),
    (None, "http://whin.example.com", "whin.example.com:80", False),
    (None, "https://whin.example.com:8443", "whin.example.com", True),
    (None, "http://[::1]:8080", "[::1]:8080", False),
    (None, "null", "127.0.0.1:8080", True),
    (None, "", "127.0.0.1:8080", True),
    (None, "ftp://127.0.0.1:8080", "127.0.0.1:8080", True),
    (None, "http://127.0.0.1:99999", "127.0.0.1:8080", True),
])
def test_what_counts_as_cross_site(fetch_site, origin, host, cross):
    assert is_cross_site(fetch_site, origin, host) is cross


def test_an_origin_is_compared_by_host_and_port():
    assert same_origin("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert not same_origin("http://127.0.0.1:8080", "127.0.0.2:8080")


# --- 4. the body limit -------------------------------------------------------------------------

def _connect(gateway) -> socket.socket:
    # Generous: an answer that comes at all comes at once; only a server waiting for the body is slow.
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=30)


def _read_response(sock: socket.socket) -> tuple[int, dict, dict]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, dict(response.getheaders()), json.loads(response.read())


def _head(gateway, path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
            f"Authorization: Bearer {gateway.admin_token}\r\nContent-Type: application/json\r\n{extra}\r\n").encode()


def test_the_limit_fits_the_largest_media_as_base64_and_some_json():
    assert max_body_bytes(16 * 1024 * 1024) > 4 * 16 * 1024 * 1024 / 3 + 512 * 1024
    assert max_body_bytes(16 * 1024 * 1024) < 32 * 1024 * 1024  # nginx's client_max_body_size (deploy/)


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_a_body_declared_too_large_is_refused_before_it_is_read(gateway, method, path):
    """The issue's 1 GB /send: answered 413 while the client has sent a kilobyte of it."""
    with _connect(gateway) as sock:
        sock.sendall(_head(gateway, path, "Content-Length: 1000000000\r\n") + b'{"text": "' + b"x" * 1024)
        status, headers, body = _read_response(sock)
    assert status == 413
    assert headers["Content-Type"].startswith("application/json")
    assert body["error"] == "body_too_large" and str(LIMIT) in body["detail"]


def test_a_body_one_byte_over_the_limit_is_refused_and_one_at_it_is_read(gateway):
    for length, expected in ((LIMIT + 1, 413), (LIMIT, 422)):
        with _connect(gateway) as sock:
            sock.sendall(_head(gateway, "/send", f"Content-Length: {length}\r\n"))
            if expected != 413:
                sock.sendall(b" " * (length - 2) + b"[]")  # read, parsed: not an object
            status, _, body = _read_response(sock)
        assert (status, body["error"]) == (expected, "body_too_large" if expected == 413 else "invalid_json")


def test_a_chunked_body_is_stopped_where_it_crosses_the_limit(gateway):
    """No Content-Length to refuse it by: the read that crosses the limit ends it with a 413."""
    answered = threading.Event()
    sent = []

    def send_chunks(sock):
        chunk = b"x" * 65536
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        try:
            sock.sendall(b'10\r\n{"text": "xxxxxx\r\n')
            while not answered.is_set() and sum(sent) < 4 * LIMIT:
                sock.sendall(framed)
                sent.append(len(chunk))
            if not answered.is_set():
                sock.sendall(b"0\r\n\r\n")  # a server without a limit reads it all and answers now
        except OSError:
            pass  # the server closed the connection after its answer: what it may do

    with _connect(gateway) as sock:
        sock.sendall(_head(gateway, "/send", "Transfer-Encoding: chunked\r\n"))
        sender = threading.Thread(target=send_chunks, args=(sock,), daemon=True)
        sender.start()
        try:
            status, _, body = _read_response(sock)
        finally:
            answered.set()
        sender.join(30)
    assert (status, body["error"]) == (413, "body_too_large")


@pytest.mark.parametrize(("length", "status", "code"), [(LIMIT, 422, "invalid_json"),
                                                        (LIMIT + 1, 413, "body_too_large")],
                         ids=["at-the-limit", "one-byte-over"])
def test_a_chunked_body_is_read_up_to_the_limit_and_not_a_byte_further(gateway, length, status, code):
    """werkzeug alone would hand the view the first LIMIT bytes of the longer one as if complete."""
    body = b" " * (length - 2) + b"[]"  # read whole, it is JSON, but not an object: invalid_json
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    framed = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"
    with _connect(gateway) as sock:
        sock.sendall(_head(gateway, "/send", "Transfer-Encoding: chunked\r\n") + framed)
        answer, _, error = _read_response(sock)
    assert (answer, error["error"]) == (status, code)


def test_the_largest_media_a_send_may_carry_is_not_refused_for_size(gateway):
    """Base64 of WHIN_MEDIA_MAX_BYTES, with every '/' escaped as PHP's json_encode writes it."""
    data = base64.b64encode(os.urandom(MEDIA_MAX)).decode()
    body = json.dumps({"line": "34600999998", "to": "34611122233", "media": {
        "data": data, "mimetype": "application/octet-stream", "filename": "a.bin", "caption": "c" * 1024}})
    body = body.replace("/", "\\/")
    assert len(body) < LIMIT
    response = gateway.api("POST", "/send", data=body, headers={"Content-Type": "application/json"})
    assert_json_error(response, 422, "unknown_line")  # read and parsed: only the line is unknown


# --- 6. JSON nested too deeply -----------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
@pytest.mark.parametrize("nesting", ["[" * 200_000, '{"a":' * 200_000,
                                     '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}"],
                         ids=["arrays", "objects", "closed"])
def test_json_nested_too_deeply_is_422_invalid_json(app_client, method, path, nesting):
    response = app_client.api(method, path, data=nesting, headers={"Content-Type": "application/json"})
    body = assert_json_error(response, 422, "invalid_json")
    assert "nested" in body["detail"]


# --- 7. Bodies that once were a 500 ------------------------------------------------------------

LONE = "\ud800"  # valid JSON once escaped (json.dumps writes "\\ud800"), but no character: UTF-8 cannot encode it


def _sent(**fields) -> dict:
    return {"line": "34666000111", "to": "34611122233", **fields}


@pytest.mark.parametrize(("path", "given", "code"), [
    ("/send", _sent(location={"latitude": 10**400, "longitude": 1}), "invalid_location"),
    ("/send", _sent(media={"url": "http://[::1"}), "invalid_media"),
    ("/send", _sent(text=LONE), "invalid_json"),
    ("/send", _sent(media={"data": "AA==", "mimetype": "image/png", "caption": LONE}), "invalid_json"),
    ("/send", _sent(location={"latitude": 1, "longitude": 1, "name": LONE}), "invalid_json"),
    ("/send", _sent(contact={"name": LONE, "number": "34611122233"}), "invalid_json"),
    ("/send", _sent(text="a", reply_to="X", quoted={"conversation": LONE}), "invalid_json"),
    ("/send", _sent(text="a", **{LONE: 1}), "invalid_json"),
    ("/edit", _sent(message_id="X", text=[[LONE]]), "invalid_json"),
])
def test_bodies_that_were_a_500_are_a_422_with_their_code(app_client, caplog, path, given, code):
    response = app_client.api("POST", path, data=json.dumps(given), headers={"Content-Type": "application/json"})
    assert_json_error(response, 422, code)
    assert "Traceback" not in caplog.text and "internal_error" not in response.text


def test_the_json_routes_are_the_ones_known():
    assert {("POST", "/send"), ("POST", "/slots")} <= set(JSON_ROUTES)
