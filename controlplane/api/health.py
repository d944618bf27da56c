"""Liveness and readiness, public so that load balancers and supervisors can ask."""

from flask import Blueprint, jsonify

from controlplane.api import lifecycle, public
from controlplane.errors import ServiceUnavailable

bp = Blueprint("health", __name__)


@bp.get("/health")
@public
def health():
    return jsonify(status="ok")


@bp.get("/ready")
@public
def ready():
    lc = lifecycle()
    checks = {}
    try:
        checks["redis"] = bool(lc.store.redis.ping())
    except Exception:  # noqa: BLE001 - any failure means "not ready", and is reported as such
        checks["redis"] = False
    try:
        lc.supervisor.slot_states()
        checks["supervisord"] = True
    except ServiceUnavailable:
        checks["supervisord"] = False
    ready_now = all(checks.values())
    return jsonify(status="ready" if ready_now else "unavailable", checks=checks), 200 if ready_now else 503
