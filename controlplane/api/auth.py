"""Bearer-token authentication for every route but the public ones, compared in constant time.

The tokens are the current WHIN_API_TOKENS (live_secrets): when they come from the env file or
secrets.env, an edit there takes effect within a couple of seconds, with no restart.
"""

import base64
import binascii
import hmac

from flask import current_app, request

from controlplane.api import dashboard
from controlplane.api.errors import error_response
from controlplane.core import live_secrets


def _presented_token() -> str | None:
    """The bearer token, or (for the browser-facing dashboard) the password of HTTP Basic."""
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if scheme.lower() == "basic" and credentials and request.blueprint == dashboard.BLUEPRINT:
        try:
            _, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password or None
    return None


def _matches(presented: str, tokens) -> bool:
    # Compare with every token, never stopping early, so timing says nothing about which matched.
    found = False
    for token in tokens:
        found |= hmac.compare_digest(presented.encode(), token.encode())
    return found


def register(app) -> None:
    tokens = live_secrets.api_tokens(app.config["WHIN_SETTINGS"])
    app.extensions["whin.api_tokens"] = tokens

    @app.before_request
    def authenticate():
        if request.routing_exception is not None:
            return None  # unknown route or wrong method: answered as a JSON 404/405
        view = current_app.view_functions.get(request.endpoint)
        if getattr(view, "whin_public", False):
            return None
        presented = _presented_token()
        in_dashboard = request.blueprint == dashboard.BLUEPRINT
        unauthorized = {"WWW-Authenticate": 'Basic realm="whinmovilla rq-dashboard"' if in_dashboard
                        else 'Bearer realm="whinmovilla"'}
        if presented is None:
            return error_response(401, "unauthorized", "Send 'Authorization: Bearer <token>'.", unauthorized)
        current = tokens.get()
        if not _matches(presented, current):
            return error_response(401, "unauthorized", "The bearer token is not valid.", unauthorized)
        admin_only = getattr(view, "whin_admin", False) or in_dashboard  # it can delete and requeue jobs
        if admin_only and not _matches(presented, current[:1]):
            return error_response(403, "forbidden", "This call needs the admin token.")
        return None
