"""Messages: POST /send."""

from apiflask import APIBlueprint
from flask import current_app, jsonify, request

from controlplane.api.openapi import request_body
from controlplane.api.schemas import json_response

bp = APIBlueprint("messages", __name__, tag="Messages")


@bp.post("/send")
@request_body("SendRequest")
@bp.doc(operation_id="sendMessage", responses={
    200: json_response("SendResult", "The engine accepted the message."),
    422: "Bad request (`invalid_json`, `invalid_target`, `invalid_line`, `invalid_slot`, `invalid_number`, "
         "`missing_content`, `invalid_content`, `invalid_text`, `invalid_media`, `media_unreachable`, "
         "`media_too_large`), or a line that cannot send (`unknown_line`, `unknown_slot`, `line_sleeping`, "
         "`not_active`).",
    429: {**json_response("Error", "Over the line's send rate (`rate_limited`); retry after Retry-After seconds."),
          "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}},
    503: "WhatsApp cannot be reached (`whatsapp_unreachable`).",
    504: "The slot did not take or confirm the message in time (`engine_timeout`); an untaken message is "
         "withdrawn, so a retry does not send it twice.",
})
def send():
    """Send a text or media message from a line"""
    outbound = current_app.extensions["whin.outbound"]
    return jsonify(outbound.submit(request.get_json(silent=True)))
