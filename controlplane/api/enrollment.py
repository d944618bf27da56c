"""Enrollment: /enroll/<slot> starts pairing and answers with the QR as a base64 PNG."""

from apiflask import APIBlueprint
from flask import jsonify

from controlplane.api import lifecycle, ok_text, qr
from controlplane.api.schemas import OK_TEXT, json_response
from controlplane.lifecycle import QrCode

bp = APIBlueprint("enrollment", __name__, tag="Enrollment")

_TIMEOUT = "The slot showed no code in time (`engine_timeout`)."
# What starting a pairing worker can meet, for /enroll and /paircode alike.
_STARTING_ERRORS = {
    503: "WhatsApp cannot be reached (`whatsapp_unreachable`), or the gateway cannot start the slot.",
    504: _TIMEOUT,
}


@bp.route("/enroll/<slot>", methods=["GET", "POST"])
@bp.doc(operation_id="enrollSlot", responses={
    200: json_response("QRCode", "The QR code the slot shows now."),
    422: "Malformed or unknown slot, a slot that is not `available` (`slot_not_available`), or a pairing "
         "that has just ended (`pairing_ended`).",
    **_STARTING_ERRORS,
})
def enroll(slot: str):
    """Link a phone by QR code

    On an `available` slot, starts pairing and answers with the first QR code; while pairing, answers
    with the current one (WhatsApp rotates them). Call it again to refresh.
    """
    return _qr_answer(lifecycle().enroll(lifecycle().slot(slot)))


@bp.get("/qr/<slot>")
@bp.doc(operation_id="getQrCode", responses={
    200: json_response("QRCode", "The QR code the slot shows now."),
    422: "Malformed or unknown slot, a slot that is not pairing (`not_pairing`), that has just linked "
         "(`slot_not_available`), or whose pairing has just ended (`pairing_ended`).",
    503: "WhatsApp cannot be reached (`whatsapp_unreachable`).",
    504: _TIMEOUT,
})
def current_qr(slot: str):
    """The current QR code of a pairing slot

    Like `/enroll` while pairing, but never starts a pairing: for pages and scripts that refresh the
    code as WhatsApp rotates it, and must not start a new pairing once the codes have run out.
    """
    return _qr_answer(lifecycle().current_qr(lifecycle().slot(slot)))


@bp.route("/cancel/<slot>", methods=["GET", "POST"])
@bp.doc(operation_id="cancelPairing", responses={
    200: OK_TEXT,
    422: "Malformed or unknown slot, or a slot that is not pairing (`not_pairing`), e.g. because the phone "
         "has just linked: a linked line is never touched (unlike `/killid`).",
})
def cancel(slot: str):
    """Cancel a pairing under way

    The codes stop and the slot is plain `available` again. Safe to call when a phone may be scanning:
    if it linked first, this is a 422 and the line stays.
    """
    lifecycle().cancel_pairing(lifecycle().slot(slot))
    return ok_text()


@bp.route("/paircode/<slot>/<line>", methods=["GET", "POST"])
@bp.doc(operation_id="pairByCode", responses={
    200: json_response("PairCode", "The code to type on the phone."),
    422: "Malformed or unknown slot or line, a slot that is not `available`, or an engine that cannot "
         "pair by code (`not_supported`).",
    **_STARTING_ERRORS,
})
def pair_code(slot: str, line: str):
    """Link a phone by pairing code

    For when the QR cannot be scanned: WhatsApp > Linked devices > Link with phone number.
    """
    code = lifecycle().pair_code(lifecycle().slot(slot), line)
    return jsonify(code=code.text, expires_in=code.expires_in)


def _qr_answer(code: QrCode):
    return jsonify(qr=qr.png_base64(code.text), expires_in=code.expires_in)
