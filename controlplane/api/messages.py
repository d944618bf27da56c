"""Messages: POST /send."""

from flask import Blueprint, current_app, jsonify, request

from controlplane.outbound import parse_send_request

bp = Blueprint("messages", __name__)


@bp.post("/send")
def send():
    outbound = current_app.extensions["whin.outbound"]
    return jsonify(outbound.send(parse_send_request(request.get_json(silent=True))))
