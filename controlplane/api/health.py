"""Liveness and readiness, public so that load balancers and supervisors can ask."""

from apiflask import APIBlueprint
from flask import jsonify

from controlplane.api import lifecycle, public
from controlplane.api.schemas import json_response
from controlplane.core.errors import ServiceUnavailable

bp = APIBlueprint("health", __name__, tag="Health")


@bp.get("/health")
@public
@bp.doc(operation_id="getHealth", responses={200: json_response("Health", "The API process answers.")})
def health():
    """Liveness: the API answers"""
    return jsonify(status="ok")


@bp.get("/ready")
@public
@bp.doc(operation_id="getReadiness", responses={200: json_response("Ready", "Redis and supervisord are reachable."),
                   503: json_response("Ready", "Redis or supervisord is not reachable.")})
def ready():
    """Readiness: Redis and supervisord reachable"""
    lc = lifecycle()
    checks = {}
    try:
        checks["redis"] = bool(lc.store.redis.ping())
    except Exception:  # any failure means "not ready", and is reported as such
        checks["redis"] = False
    try:  # getState, not the program list: its cost does not grow with the slots
        checks["supervisord"] = lc.supervisor.state() == "RUNNING"
    except ServiceUnavailable:
        checks["supervisord"] = False
    ready_now = all(checks.values())
    return jsonify(status="ready" if ready_now else "unavailable", checks=checks), 200 if ready_now else 503
