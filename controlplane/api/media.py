"""Inbound media: POST /media, the decrypted bytes of a message the line received."""

import re
from urllib.parse import quote

from apiflask import APIBlueprint
from flask import Response, current_app, request, stream_with_context

from controlplane.api.openapi import request_body
from controlplane.api.schemas import json_response

bp = APIBlueprint("media", __name__, tag="Messages")

_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\]')


def content_disposition(filename: str) -> str:
    """attachment with the file's name: an ASCII fallback, and the exact name per RFC 6266 when it differs."""
    clean = _UNSAFE.sub("", filename).strip() or "media"
    fallback = clean.encode("ascii", "ignore").decode("ascii").strip() or "media"
    value = f'attachment; filename="{fallback}"'
    if fallback != clean:
        value += f"; filename*=UTF-8''{quote(clean, safe='')}"
    return value


@bp.post("/media")
@request_body("MediaRequest")
@bp.doc(operation_id="downloadMedia", responses={
    # Documented as octet-stream (client generators take it as a file); the real Content-Type is the media's.
    200: {"description": "The decrypted file, streamed as it is decrypted; `Content-Type` is the media's "
                         "mimetype, `Content-Disposition` is an attachment, with the file's name when it has one.",
          "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    410: json_response("Error", "WhatsApp no longer holds the file (`media_gone`)."),
    413: json_response("Error", "The file is over `WHIN_MEDIA_MAX_BYTES` (`media_too_large`)."),
    422: "Bad request (`invalid_json`, `invalid_target`, `invalid_line`, `invalid_slot`, `invalid_message`, "
         "`no_media`), a line that cannot download (`unknown_line`, `unknown_slot`, `line_sleeping`, `not_active`), "
         "or a file that fails its checks (`media_corrupt`).",
    503: "WhatsApp cannot be reached (`whatsapp_unreachable`).",
    504: "The slot did not answer in time (`engine_timeout`).",
})
def download():
    """Download the photo, voice note, video or document of a received message"""
    media = current_app.extensions["whin.inbound_media"].open(request.get_json(silent=True))
    headers = {
        "Cache-Control": "no-store",  # the bytes are the client's to keep, no proxy's
        # A stranger's file: a browser saves it, never renders it as a page of ours, whatever its type says.
        "Content-Disposition": content_disposition(media.filename or "media"),
        "X-Content-Type-Options": "nosniff",
    }
    if media.size is not None:
        headers["Content-Length"] = str(media.size)
    return Response(stream_with_context(media.body), mimetype=media.mimetype, headers=headers)
