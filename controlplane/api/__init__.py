"""The REST API: one blueprint per resource, all views thin over controlplane.lifecycle."""

from flask import current_app

from controlplane.lifecycle import Lifecycle


def lifecycle() -> Lifecycle:
    return current_app.extensions["whin.lifecycle"]


def public(view):
    """Mark a view as reachable without a bearer token."""
    view.whin_public = True
    return view


def admin_only(view):
    """Mark a view as needing the admin token (the first of WHIN_API_TOKENS)."""
    view.whin_admin = True
    return view


def ok_text():
    """The manual's answer to an action that was done: 200, body OK, text/plain."""
    return "OK", 200, {"Content-Type": "text/plain; charset=utf-8"}
