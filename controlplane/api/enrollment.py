"""Enrollment: /enroll/<slot> starts pairing and answers with the QR as a base64 PNG."""

from flask import Blueprint, jsonify

from controlplane import qr
from controlplane.api import lifecycle

bp = Blueprint("enrollment", __name__)


@bp.route("/enroll/<slot>", methods=["GET", "POST"])
def enroll(slot: str):
    code = lifecycle().enroll(lifecycle().slot(slot))
    return jsonify(qr=qr.png_base64(code.text), expires_in=code.expires_in)


@bp.route("/paircode/<slot>/<line>", methods=["GET", "POST"])
def pair_code(slot: str, line: str):
    """Link by typing a code on the phone (WhatsApp > Linked devices > Link with phone number)."""
    code = lifecycle().pair_code(lifecycle().slot(slot), line)
    return jsonify(code=code.text, expires_in=code.expires_in)
