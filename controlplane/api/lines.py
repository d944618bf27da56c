"""Sleep, resume and kill, by line (/sleep/<line>) or by slot (/sleepid/<slot>)."""

from flask import Blueprint

from controlplane.api import lifecycle

bp = Blueprint("lines", __name__)

_ACTIONS = ("sleep", "resume", "kill")


def _ok():
    return "OK", 200, {"Content-Type": "text/plain; charset=utf-8"}


def _by_line(action: str):
    def view(line: str):
        lc = lifecycle()
        getattr(lc, action)(lc.slot_of_line(line))
        return _ok()

    view.__name__ = f"{action}_by_line"
    return view


def _by_slot(action: str):
    def view(slot: str):
        lc = lifecycle()
        getattr(lc, action)(lc.slot(slot))
        return _ok()

    view.__name__ = f"{action}_by_slot"
    return view


for _action in _ACTIONS:
    bp.add_url_rule(f"/{_action}/<line>", view_func=_by_line(_action), methods=["GET", "POST"])
    bp.add_url_rule(f"/{_action}id/<slot>", view_func=_by_slot(_action), methods=["GET", "POST"])
