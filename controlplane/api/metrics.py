"""GET /metrics in Prometheus' text format (bearer token, as every non-public route)."""

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from controlplane.api import lifecycle
from controlplane.metrics import GatewayCollector

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(lifecycle().store))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
