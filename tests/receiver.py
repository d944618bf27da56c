"""inmovilla's side for tests: a real HTTP server that records deliveries and verifies their signatures.

Its behaviour can be changed while it runs: answer with an error status, hold requests open (to kill
a worker mid-POST), or go down and come back on the same port.
"""

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

DROPPED = 599  # recorded for a request whose sender hung up before we answered


def _hung_up(connection: socket.socket) -> bool:
    readable, _, _ = select.select([connection], [], [], 0)
    return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""


@dataclass
class Delivery:
    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    status: int
    received: float = field(default_factory=time.time)

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class Receiver:
    def __init__(self, secret: str):
        self.verifier = Webhook(secret)
        self.attempts: list[Delivery] = []  # every request, whatever we answered
        self.lock = threading.Lock()
        self.fail_with: int | None = None
        self.fail_count = 0  # answer fail_with to this many requests (0 with fail_with set: all)
        self.retry_after: str | None = None
        self.hold = threading.Event()  # set: requests wait until released
        self.held = threading.Semaphore(0)
        self.server: ThreadingHTTPServer | None = None
        self.port: int | None = None

    # --- running ---

    def start(self, port: int = 0) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver behind a proxy

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver._answer_for(self.headers, body, self.connection)
                self.send_response(status)
                if status >= 400 and receiver.retry_after:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Go down: the port refuses connections until start(self.port) again."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    def _answer_for(self, headers, body: bytes, connection: socket.socket) -> int:
        held = self.hold.is_set()
        if held:
            self.held.release()
            while self.hold.is_set():
                time.sleep(0.01)
        with self.lock:
            status = 200
            if held and _hung_up(connection):
                status = DROPPED  # the sender gave up (timeout, or killed) while we held it: not delivered
            elif self.fail_with is not None:
                status = self.fail_with
                if self.fail_count:
                    self.fail_count -= 1
                    if self.fail_count == 0:
                        self.fail_with = None
            # The official package checks the signature, the id and the timestamp's freshness.
            self.verifier.verify(body, {k.lower(): v for k, v in headers.items()})
            self.attempts.append(Delivery(headers["webhook-id"], headers["webhook-timestamp"],
                                          headers["webhook-signature"], body, status))
        return status

    # --- what arrived ---

    def delivered(self, **match) -> list[dict]:
        """Events answered 2xx whose envelope has every key=value given."""
        with self.lock:
            events = [d.event for d in self.attempts if d.status < 300]
        return [e for e in events if all(e.get(k) == v for k, v in match.items())]

    def attempts_for(self, webhook_id: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.attempts if d.webhook_id == webhook_id]
