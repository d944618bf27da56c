"""The control plane's Flask application factory."""

import math

from apiflask import APIFlask

from controlplane.api import (
    auth,
    dashboard,
    enrollment,
    errors,
    health,
    hosts,
    lines,
    media,
    messages,
    metrics,
    openapi,
    slots,
    ui,
)
from controlplane.core import logs
from controlplane.core.config import ConfigError, Settings
from controlplane.lifecycle import Lifecycle
from controlplane.messaging.inbound_media import InboundMedia
from controlplane.messaging.outbound import Outbound


def create_app(settings: Settings | None = None) -> APIFlask:
    settings = settings or Settings.from_env()
    if not settings.api_tokens:
        # No default secret: an API without tokens would be open to anyone who reaches the port.
        raise ConfigError("WHIN_API_TOKENS is empty; set at least one bearer token (make run generates one).")
    logs.configure()
    app = APIFlask(__name__, **openapi.apiflask_options())
    app.config["WHIN_SETTINGS"] = settings
    # Werkzeug answers 413 (errors.body_too_large) before reading a body whose Content-Length is
    # larger, and stops a chunked one at the read that crosses it.
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes(settings.media_max_bytes)
    app.request_class = errors.JsonRequest
    app.json.sort_keys = False
    lifecycle = Lifecycle.from_settings(settings)
    app.extensions["whin.lifecycle"] = lifecycle
    app.extensions["whin.outbound"] = Outbound(settings, lifecycle)
    app.extensions["whin.inbound_media"] = InboundMedia(settings, lifecycle)
    errors.register(app)
    openapi.register(app)
    auth.register(app)
    for blueprint in (health.bp, slots.bp, enrollment.bp, lines.bp, messages.bp, media.bp, metrics.bp, hosts.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(ui.bp)
    dashboard.register(app, settings)
    return app


JSON_HEADROOM = 1024 * 1024  # everything in a body but the media: fields, caption, a quoted message


def max_body_bytes(media_max_bytes: int) -> int:
    """The largest request body the API reads: a /send carrying the largest media allowed, as base64.

    Base64 is 4/3 of the bytes; a 32nd more for the `\\/` that some JSON encoders (PHP's, by default)
    write for each `/` (1 in 64 base64 characters of any compressed file); and the rest of the JSON.
    16 MiB of media: 23 MiB, under the proxy's client_max_body_size (deploy/nginx-whinmovilla.conf).
    """
    base64_length = 4 * math.ceil(media_max_bytes / 3)
    return base64_length + base64_length // 32 + JSON_HEADROOM
