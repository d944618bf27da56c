"""Sleep, resume and kill, by line (/sleep/<line>) or by slot (/sleepid/<slot>)."""

from apiflask import APIBlueprint

from controlplane.api import lifecycle, ok_text
from controlplane.api.schemas import OK_TEXT

bp = APIBlueprint("lines", __name__, tag="Lines")

# action: (summary, the 422 codes it may answer)
_ACTIONS = {
    "sleep": ("Put a line to sleep: its worker stops, credentials kept; nothing is sent or received",
              "`not_active`"),
    "resume": ("Wake a sleeping line: its worker reconnects", "`not_sleeping`, `logged_out`"),
    "kill": ("Unlink a line: logged out, credentials wiped, the slot `available` again", "`not_enrolled`"),
}


def _documented(view, action: str, target: str):
    summary, codes = _ACTIONS[action]
    view.__doc__ = f"{summary} (by {target})"
    unknown = "`invalid_line`, `unknown_line`" if target == "line" else "`invalid_slot`, `unknown_slot`"
    responses = {200: OK_TEXT, 422: f"Malformed or unknown {target} ({unknown}), or the wrong state ({codes})."}
    if action == "resume":  # sleep stops and kill wipes without waiting on the engine
        responses[504] = "The slot did not answer in time (`engine_timeout`)."
    return bp.doc(operation_id=f"{action}{target.title()}", responses=responses)(view)  # e.g. killLine


def _view(action: str, target: str):
    """The view of ``/<action>/<line>`` (target "line") or ``/<action>id/<slot>`` (target "slot")."""
    def view(**args: str):
        lc = lifecycle()
        slot = lc.slot_of_line(args["line"]) if target == "line" else lc.slot(args["slot"])
        getattr(lc, action)(slot)
        return ok_text()

    view.__name__ = f"{action}_by_{target}"
    return _documented(view, action, target)


for _action in _ACTIONS:
    bp.add_url_rule(f"/{_action}/<line>", view_func=_view(_action, "line"), methods=["GET", "POST"])
    bp.add_url_rule(f"/{_action}id/<slot>", view_func=_view(_action, "slot"), methods=["GET", "POST"])
