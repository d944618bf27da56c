"""The control plane's Flask application factory."""


from apiflask import APIFlask

from controlplane import logs
from controlplane.api import auth, dashboard, enrollment, errors, health, lines, messages, metrics, openapi, slots, ui
from controlplane.config import ConfigError, Settings
from controlplane.events import EventPublisher
from controlplane.lifecycle import Lifecycle
from controlplane.outbound import Outbound
from controlplane.store import SlotStore
from controlplane.supervisor import Supervisor


def create_app(settings: Settings | None = None) -> APIFlask:
    settings = settings or Settings.from_env()
    if not settings.api_tokens:
        # No default secret: an API without tokens would be open to anyone who reaches the port.
        raise ConfigError("WHIN_API_TOKENS is empty; set at least one bearer token (make run generates one).")
    logs.configure()
    app = APIFlask(__name__, **openapi.apiflask_options())
    app.config["WHIN_SETTINGS"] = settings
    app.json.sort_keys = False
    lifecycle = Lifecycle(settings, SlotStore.from_url(settings.redis_url), Supervisor.from_settings(settings),
                          EventPublisher(settings))
    app.extensions["whin.lifecycle"] = lifecycle
    app.extensions["whin.outbound"] = Outbound(settings, lifecycle)
    errors.register(app)
    openapi.register(app)
    auth.register(app)
    for blueprint in (health.bp, slots.bp, enrollment.bp, lines.bp, messages.bp, metrics.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(ui.bp)
    dashboard.register(app, settings)
    return app
