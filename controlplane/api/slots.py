"""Slots: listing, provisioning, and the slot <-> line maps of the manual."""

from flask import Blueprint, jsonify, request

from controlplane.api import admin_only, lifecycle
from controlplane.errors import Refused
from controlplane.states import SlotStatus

bp = Blueprint("slots", __name__)


@bp.get("/slots")
def list_slots():
    return jsonify([{s.id: s.status.value} for s in lifecycle().store.all()])


@bp.get("/slots/<status>")
def list_slots_by_status(status: str):
    try:
        wanted = SlotStatus(status)
    except ValueError:
        raise Refused("invalid_status", "The status is one of: available, active, sleeping.") from None
    return jsonify([{s.id: s.status.value} for s in lifecycle().store.all() if s.status is wanted])


@bp.post("/slots")
@admin_only
def provision():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise Refused("invalid_json", 'Send a JSON object such as {"count": 2}.')
    return jsonify(created=lifecycle().provision(body.get("count")))


@bp.get("/slot/<slot>")
def slot_detail(slot: str):
    s = lifecycle().slot(slot)
    return jsonify(id=s.id, status=s.status.value, line=s.line, pairing=s.pairing,
                   connected=s.connected, resetting=s.teardown)


@bp.get("/slots2lines")
def slots_to_lines():
    return jsonify([{s.id: s.line} for s in lifecycle().store.all()])


@bp.get("/lines2slots")
def lines_to_slots():
    return jsonify([{line: slot} for line, slot in sorted(lifecycle().store.lines().items())])
