"""Messages: POST /send of every kind, and the chat actions /read, /presence, /revoke, /edit, /exists.

Thin views: each hands its body to messaging/outbound.py, which parses, checks and asks the slot.
"""

from apiflask import APIBlueprint
from flask import current_app, jsonify, request

from controlplane.api import ok_text
from controlplane.api.openapi import request_body
from controlplane.api.schemas import OK_TEXT, json_response

bp = APIBlueprint("messages", __name__, tag="Messages")

_CANNOT = ("a line that cannot act (`unknown_line`, `unknown_slot`, `line_sleeping`, `not_active`), or one "
           "WhatsApp refuses (`not_in_group`, `send_failed`, `not_supported`)")
_TARGET = "`invalid_json`, `invalid_target`, `invalid_line`, `invalid_slot`"
_UNKNOWN = ("`unknown_message` (no such message in that chat of the line, as far as the gateway's message index "
            "remembers)")
_COMMON = {
    429: {**json_response("Error", "Over the line's rate (`rate_limited`); retry after Retry-After seconds."),
          "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}},
    503: "WhatsApp cannot be reached (`whatsapp_unreachable`).",
    504: "The slot did not take or confirm the request in time (`engine_timeout`); an untaken request is "
         "withdrawn, so a retry does not do it twice.",
}


def _outbound():
    return current_app.extensions["whin.outbound"]


@bp.post("/send")
@request_body("SendRequest")
@bp.doc(operation_id="sendMessage", responses={
    200: json_response("SendResult", "The engine accepted the message."),
    422: f"Bad request ({_TARGET}, `invalid_number`, `invalid_to`, `missing_content`, `invalid_content`, "
         "`invalid_text`, `invalid_media`, `media_unreachable`, `media_too_large`, `media_too_long`, `media_timeout`, "
         "`unsupported_media_type`, `voice_note_needs_ffmpeg`, `invalid_location`, `invalid_contact`, "
         "`invalid_reaction`, `invalid_reply`), "
         f"a reaction or reply to a message the line does not have ({_UNKNOWN}) or to a group message whose "
         f"author is known only by a @lid (`unknown_sender`), or {_CANNOT}.",
    **_COMMON,
})
def send():
    """Send a text, media, location, contact or reaction from a line"""
    return jsonify(_outbound().submit(request.get_json(silent=True)))


@bp.post("/read")
@request_body("ReadRequest")
@bp.doc(operation_id="markRead", responses={
    200: OK_TEXT,
    422: f"Bad request ({_TARGET}, `invalid_chat`, `invalid_message_ids`), {_UNKNOWN}, `not_received` (the line's "
         f"own message), `unknown_sender` (a group message whose author is known only by a @lid), "
         f"`too_many_authors` (the messages of over 5 authors of a group: split them into calls), or {_CANNOT}.",
    **_COMMON,
})
def read():
    """Mark received messages as read (blue ticks)"""
    _outbound().act("read", request.get_json(silent=True))
    return ok_text()


@bp.post("/presence")
@request_body("PresenceRequest")
@bp.doc(operation_id="sendPresence", responses={
    200: OK_TEXT,
    422: f"Bad request ({_TARGET}, `invalid_number`, `invalid_to`, `invalid_state`), or {_CANNOT}.",
    **_COMMON,
})
def presence():
    """Show the line typing or recording in a chat, or stop"""
    _outbound().act("presence", request.get_json(silent=True))
    return ok_text()


@bp.post("/revoke")
@request_body("RevokeRequest")
@bp.doc(operation_id="revokeMessage", responses={
    200: OK_TEXT,
    422: f"Bad request ({_TARGET}, `invalid_number`, `invalid_to`, `invalid_message_id`), {_UNKNOWN}, "
         f"`not_own_message` (not the line's own), `revoke_window_passed` (sent over 48 hours ago), or {_CANNOT}.",
    **_COMMON,
})
def revoke():
    """Delete a message the line sent, for everyone"""
    _outbound().act("revoke", request.get_json(silent=True))
    return ok_text()


@bp.post("/edit")
@request_body("EditRequest")
@bp.doc(operation_id="editMessage", responses={
    200: OK_TEXT,
    422: f"Bad request ({_TARGET}, `invalid_number`, `invalid_to`, `invalid_message_id`, `invalid_text`), "
         f"{_UNKNOWN}, `not_own_message`, `not_editable` (not a text), `edit_window_passed` (sent over 20 minutes "
         f"ago), or {_CANNOT}.",
    **_COMMON,
})
def edit():
    """Replace the text of a message the line sent"""
    _outbound().act("edit", request.get_json(silent=True))
    return ok_text()


@bp.route("/exists/<line>/<number>", methods=["GET"])
@bp.doc(operation_id="numberExists", responses={
    200: json_response("Existence", "Whether the number is on WhatsApp."),
    422: f"`invalid_line`, `invalid_number`, or {_CANNOT}.",
    **_COMMON,
})
def exists(line: str, number: str):
    """Whether a number is on WhatsApp, asked through a line"""
    return jsonify(_outbound().act("exists", line, number))
