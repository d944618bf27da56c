"""One JSON shape for every failure: {"error": "<machine code>", "detail": "<human sentence>"}."""

import logging
import math
import re

import redis
from flask import Request, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import LimitedStream

from controlplane.core.errors import GatewayError, Refused
from controlplane.core.ids import InvalidIdentifier

log = logging.getLogger(__name__)


def error_response(status: int, code: str, detail: str, headers: dict | None = None):
    response = jsonify(error=code, detail=detail)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


class CappedStream(LimitedStream):
    """A body of no declared length (chunked), read up to MAX_CONTENT_LENGTH and not one byte past it.

    werkzeug's own stream for this (LimitedStream with is_max) ends readall() at the limit as if the
    body were complete, so a longer body arrives cut short (then a 422, or worse, accepted if the cut
    happens to be valid JSON). Here the read that finds more raises the 413 instead.
    """

    def __init__(self, source, limit: int) -> None:
        super().__init__(source, limit, is_max=True)
        self.source = source

    def readall(self) -> bytes:
        data = super().readall()
        if self.is_exhausted and self.source.read(1):
            raise RequestEntityTooLarge()
        return data


class JsonRequest(Request):
    """Flask's request, whose body fails as the API's JSON errors, whatever the body.

    - Over the body limit: 413 (errors.body_too_large), before a byte is read when Content-Length
      says so (werkzeug), and at the limit for a chunked body (CappedStream).
    - json.loads raises RecursionError, not ValueError, on a body nested deeper than Python's
      recursion limit (200,000 `[`), and get_json(silent=True) let it through as a 500. Every route
      reads its body through get_json (request.json too), so this is the one place that knows the
      cause: a 422 `invalid_json`.
    - JSON may escape a lone UTF-16 surrogate (``"\\ud800"``), which is no character: it cannot be
      encoded as UTF-8, so sealing it (sealed.py) or writing it anywhere failed as a 500. Refused
      here, once for every field of every route, as `invalid_json`.
    """

    @cached_property
    def stream(self):
        stream = super().stream  # werkzeug's checks: a shallow request, a Content-Length over the limit
        if self.content_length is None and isinstance(stream, LimitedStream):
            return CappedStream(self.environ["wsgi.input"], self.max_content_length)
        return stream

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True):
        try:
            body = super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:
            raise Refused("invalid_json", "The JSON body is nested too deeply to read.") from None
        if _has_surrogate(body):
            raise Refused("invalid_json", "The JSON body has a lone UTF-16 surrogate (\\ud800-\\udfff), which is "
                                          "not a character: send text as UTF-8, or escape each character whole.")
        return body


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(body) -> bool:
    """Whether any string of a parsed JSON body (a key or a value, at any depth) holds a lone surrogate."""
    pending = [body]
    while pending:  # not recursive: a body may nest as deep as json.loads reads
        value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def register(app) -> None:
    @app.errorhandler(RequestEntityTooLarge)
    def body_too_large(err: RequestEntityTooLarge):
        # Raised before the body is read when Content-Length says too much, or by the read that
        # crosses the limit (a chunked body): never more than MAX_CONTENT_LENGTH in memory.
        detail = (f"The request body is larger than {request.max_content_length} bytes, which fits the largest "
                  "media allowed (WHIN_MEDIA_MAX_BYTES, as base64) with room to spare.")
        return error_response(413, "body_too_large", detail)

    @app.errorhandler(GatewayError)
    def gateway_error(err: GatewayError):
        retry_after = getattr(err, "retry_after", None)
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else None
        return error_response(err.status, err.code, err.detail, headers)

    @app.errorhandler(InvalidIdentifier)
    def invalid_identifier(err: InvalidIdentifier):
        return error_response(422, err.code, err.detail)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        code = (err.name or "error").lower().replace(" ", "_")
        # Keep the exception's own headers (a 405's Allow, as RFC 9110 requires), not its HTML type.
        headers = {name: value for name, value in err.get_headers() if name.lower() != "content-type"}
        return error_response(err.code or 500, code, err.description or err.name, headers)

    @app.errorhandler(redis.RedisError)
    def store_error(err: redis.RedisError):
        log.error("redis unavailable: %s", type(err).__name__)
        return error_response(503, "store_unavailable", "The gateway's Redis cannot be reached; try again.")

    @app.errorhandler(Exception)
    def unexpected(err: Exception):
        # Logged by type and traceback only; never echo the request, which may carry message text.
        log.exception("unexpected error: %s", type(err).__name__)
        return error_response(500, "internal_error", "Something went wrong inside the gateway.")
