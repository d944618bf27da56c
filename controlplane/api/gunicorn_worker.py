"""gunicorn's threaded worker, answering the requests it cannot parse in JSON like the rest of the API.

gunicorn answers a malformed request line, header or chunk itself, before Flask sees it, with an HTML
page (gunicorn.util.write_error). The contract says never an HTML error page, so in the API process
that one function is replaced: same status and reason, the body {"error": "<code>", "detail": "..."}.
Everything else about the worker is gunicorn's gthread worker.
"""

import json

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

__all__ = ["ThreadWorker", "write_json_error"]


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    # gunicorn sends 501 (with the reason "Bad Request") for a Transfer-Encoding it does not support.
    code = {500: "internal_error", 501: "unsupported_transfer_coding"}.get(status_int) \
        or reason.lower().replace(" ", "_")
    body = json.dumps({"error": code, "detail": mesg or reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


util.write_error = write_json_error  # the module function gunicorn's Worker.handle_error calls
