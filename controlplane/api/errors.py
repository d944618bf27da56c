"""One JSON shape for every failure: {"error": "<machine code>", "detail": "<human sentence>"}."""

import logging
import math

import redis
from flask import jsonify
from werkzeug.exceptions import HTTPException

from controlplane.errors import GatewayError
from controlplane.ids import InvalidIdentifier

log = logging.getLogger(__name__)


def error_response(status: int, code: str, detail: str, headers: dict | None = None):
    response = jsonify(error=code, detail=detail)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register(app) -> None:
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
