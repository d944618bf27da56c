"""GET /ui: the admin page for agency staff and ops (plain HTML and JavaScript, no build step).

The page and its two files are public (they hold no data); every call the page makes to the API
carries the bearer token the user typed, kept in the tab's sessionStorage. The Content-Security-
Policy allows only this origin's own script, style and API, plus data: images for the QR code, so
an injected script could neither run nor send the token elsewhere.
"""

from pathlib import Path

from flask import Blueprint, send_from_directory

from controlplane.api import public

PAGE_DIR = Path(__file__).resolve().parent / "admin_page"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

bp = Blueprint("ui", __name__)


def _file(name: str, max_age: int):
    response = send_from_directory(PAGE_DIR, name, max_age=max_age)
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.get("/ui")
@public
def page():
    return _file("index.html", max_age=0)


@bp.get("/ui/app.js")
@public
def script():
    return _file("app.js", max_age=300)


@bp.get("/ui/app.css")
@public
def style():
    return _file("app.css", max_age=300)
