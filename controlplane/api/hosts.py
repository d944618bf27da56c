"""Slot hosts: where slots run (GET /hosts), and moving a host's slots away (POST /hosts/<name>/drain)."""

import time

from apiflask import APIBlueprint
from flask import jsonify

from controlplane.api import admin_only, lifecycle, ok_text
from controlplane.api.schemas import OK_TEXT, json_response
from controlplane.host_drain import drain
from controlplane.placement import Occupancy, host_listing

bp = APIBlueprint("hosts", __name__, tag="Hosts")


@bp.get("/hosts")
@bp.doc(operation_id="listHosts", responses={200: json_response("Hosts", "Every slot host, sorted by name.")})
def list_hosts():
    """List the slot hosts

    Each host's agent beats every pass; a host silent for `WHIN_HOST_DEAD_AFTER` seconds is not
    `alive`, and its slots move to live hosts (with `WHIN_SESSION_DB`). `running`: the slots placed
    there whose worker should run; `slots`: every slot placed there.
    """
    lc = lifecycle()
    now = time.time()
    return jsonify(host_listing(lc.hosts.all(), Occupancy.read(lc.store, now), now, lc.settings.host_dead_after))


@bp.post("/hosts/<name>/drain")
@admin_only
@bp.doc(operation_id="drainHost", responses={
    200: OK_TEXT,
    422: "No such host (`unknown_host`), or sessions that cannot move: no `WHIN_SESSION_DB` (`sessions_pinned`).",
    503: "No other live host has room (`no_host`).",
    504: "A moved slot did not serve again in time on its new host (`engine_timeout`); the drain stopped there.",
})
def drain_host(name: str):
    """Move a host's slots to other hosts

    One by one, each briefly offline; nothing new is placed on the host until its agent starts again.
    Answers once every slot of the host serves elsewhere.
    """
    drain(lifecycle(), name)
    return ok_text()
