"""GET /metrics in Prometheus' text format (bearer token, as every non-public route)."""

from apiflask import APIBlueprint
from flask import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from controlplane.api import lifecycle
from controlplane.api.prometheus import GatewayCollector

bp = APIBlueprint("metrics", __name__, tag="Operations")


@bp.get("/metrics")
@bp.doc(operation_id="getMetrics", responses={200: {"description": "Prometheus text exposition format.",
                         "content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics():
    """Metrics for Prometheus

    Slots by status, pairing outcomes, deliveries, delivery latency and queue depth, sends, per-slot
    reconnects and restarts. No message content and no phone numbers.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(lifecycle().store, lifecycle().settings.delivery_workers,
                                       lifecycle().settings.host_dead_after))
    # content_type, not mimetype: werkzeug appends a second charset to a mimetype that has one,
    # which Prometheus 3 refuses. The header must be exactly what prometheus-client says.
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
