"""Slots: listing, provisioning, and the slot <-> line maps of the manual."""

from apiflask import APIBlueprint
from flask import jsonify, request

from controlplane.api import admin_only, lifecycle
from controlplane.api.openapi import request_body
from controlplane.api.schemas import json_response
from controlplane.core.errors import Refused
from controlplane.core.states import SlotStatus

bp = APIBlueprint("slots", __name__, tag="Slots")


@bp.get("/slots")
@bp.doc(operation_id="listSlots", responses={200: json_response("SlotStatuses", "Every slot with its status.")})
def list_slots():
    """List every slot with its status"""
    return jsonify([{slot_id: fields["status"]} for slot_id, fields in lifecycle().store.fields(("status",))])


@bp.get("/slots/details")
@bp.doc(operation_id="listSlotDetails",
        responses={200: json_response("SlotDetails", "Every slot in detail, sorted by id.")})
def list_slot_details():
    """List every slot in detail

    What `GET /slot/<slot>` says, for every slot in one consistent snapshot: unlike the manual's
    listings, it tells a slot that is pairing (still `available`) from an idle one.
    """
    return jsonify([_detail(s) for s in lifecycle().store.all()])


@bp.get("/slots/<status>")
@bp.doc(operation_id="listSlotsByStatus", responses={200: json_response("SlotStatuses", "The slots with that status."),
                   422: "The status is not one of the three (`invalid_status`)."})
def list_slots_by_status(status: str):
    """List the slots with one status"""
    try:
        wanted = SlotStatus(status)
    except ValueError:
        raise Refused("invalid_status", "The status is one of: available, active, sleeping.") from None
    return jsonify([{slot_id: fields["status"]} for slot_id, fields in lifecycle().store.fields(("status",))
                    if fields["status"] == wanted.value])


@bp.post("/slots")
@admin_only
@request_body("ProvisionRequest")
@bp.doc(operation_id="provisionSlots", responses={200: json_response("Provisioned", "The new slots, each `available`."),
                   422: "Not a JSON object, or `count` is not a whole number from 1 to 100 (`invalid_json`, "
                        "`invalid_count`)."})
def provision():
    """Provision new slots (admin token)

    Each slot is its own supervisord program `slot-<ID>`, ready to enroll a line.
    """
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise Refused("invalid_json", 'Send a JSON object such as {"count": 2}.')
    return jsonify(created=lifecycle().provision(body.get("count")))


@bp.get("/slot/<slot>")
@bp.doc(operation_id="getSlot", responses={200: json_response("SlotDetail", "The slot."),
                   422: "Malformed or unknown slot id (`invalid_slot`, `unknown_slot`)."})
def slot_detail(slot: str):
    """Show one slot in detail"""
    return jsonify(_detail(lifecycle().slot(slot)))


def _detail(s) -> dict:
    """A slot as GET /slot/<slot> and GET /slots/details show it (a store.Slot)."""
    return {"id": s.id, "status": s.status.value, "line": s.line, "pairing": s.pairing,
            "connected": s.connected, "resetting": s.teardown, "pair_error": s.pair_error, "host": s.host}


@bp.get("/slots2lines")
@bp.doc(operation_id="mapSlotsToLines",
        responses={200: json_response("SlotsToLines", "Every slot with its line or null.")})
def slots_to_lines():
    """Map every slot to its line"""
    return jsonify([{slot_id: fields.get("line") or None}
                    for slot_id, fields in lifecycle().store.fields(("status", "line"))])


@bp.get("/lines2slots")
@bp.doc(operation_id="mapLinesToSlots",
        responses={200: json_response("LinesToSlots", "Every enrolled line with its slot.")})
def lines_to_slots():
    """Map every enrolled line to its slot"""
    return jsonify([{line: slot} for line, slot in sorted(lifecycle().store.lines().items())])
