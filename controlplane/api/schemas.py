"""The shapes of the API's bodies, as the OpenAPI document (api/openapi.py) publishes them.

They are JSON Schema (OpenAPI 3.1) rather than marshmallow classes because several of the manual's
shapes have no marshmallow equivalent: lists of one-pair objects keyed by a slot id or a line, and
"either line or slot". The views keep validating input themselves (ids.py, outbound.py), with the
contract's error codes; the schemathesis test (tests/controlplane/api/test_openapi.py) checks that
what they answer matches these shapes.
"""

from controlplane.ids import LINE_PATTERN, SLOT_ID_PATTERN
from controlplane.lifecycle import MAX_SLOTS_PER_REQUEST
from controlplane.outbound import MAX_CAPTION, MAX_TEXT
from controlplane.states import SlotStatus

SLOT_ID = {"type": "string", "pattern": f"^{SLOT_ID_PATTERN}$", "example": "AB12CD34",
           "description": "8 letters or digits; answers always use upper case."}
LINE = {"type": "string", "pattern": f"^{LINE_PATTERN}$", "example": "34666123456",
        "description": "International number without '+'."}
STATUS = {"type": "string", "enum": [s.value for s in SlotStatus], "example": "active"}


def _one_pair(key: dict, value: dict) -> dict:
    return {"type": "object", "minProperties": 1, "maxProperties": 1,
            "propertyNames": {"pattern": key["pattern"]}, "additionalProperties": value}


COMPONENTS = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "Stable machine code, e.g. unknown_slot.",
                      "example": "unknown_slot"},
            "detail": {"type": "string", "description": "A sentence for a human.",
                       "example": "There is no slot AB12CD34."},
        },
    },
    "SlotStatuses": {
        "type": "array", "description": "One {slot id: status} pair per slot, sorted by id.",
        "items": _one_pair({"pattern": "^[A-Z0-9]{8}$"}, STATUS),
        "example": [{"AB12CD34": "active"}, {"K9P2M4Q7": "available"}],
    },
    "SlotsToLines": {
        "type": "array", "description": "Every slot with its line, or null when it has none.",
        "items": _one_pair({"pattern": "^[A-Z0-9]{8}$"}, {"type": ["string", "null"], "pattern": LINE["pattern"]}),
        "example": [{"AB12CD34": "34666123456"}, {"K9P2M4Q7": None}],
    },
    "LinesToSlots": {
        "type": "array", "description": "Every enrolled line with its slot.",
        "items": _one_pair(LINE, {"type": "string", "pattern": "^[A-Z0-9]{8}$"}),
        "example": [{"34666123456": "AB12CD34"}],
    },
    "SlotDetail": {
        "type": "object",
        "required": ["id", "status", "line", "pairing", "connected", "resetting", "pair_error"],
        "properties": {
            "id": SLOT_ID,
            "status": STATUS,
            "line": {"type": ["string", "null"], "pattern": LINE["pattern"]},
            "pairing": {"type": "boolean", "description": "A QR code or pairing code is being shown."},
            "connected": {"type": "boolean", "description": "The worker is connected to WhatsApp."},
            "resetting": {"type": "boolean", "description": "Being logged out and wiped (kill, eviction, unlink)."},
            "pair_error": {"type": ["string", "null"], "example": "codes_exhausted",
                           "description": "Why the last pairing ended without a phone: `codes_exhausted`, "
                                          "`network_unreachable`, `deadline`, `pair_error`; null after a link."},
        },
    },
    "ProvisionRequest": {
        "type": "object", "required": ["count"],
        "properties": {"count": {"type": "integer", "minimum": 1, "maximum": MAX_SLOTS_PER_REQUEST}},
        "example": {"count": 2},
    },
    "Provisioned": {
        "type": "object", "required": ["created"],
        "properties": {"created": {"type": "array", "items": SLOT_ID}},
    },
    "QRCode": {
        "type": "object", "required": ["qr", "expires_in"],
        "properties": {
            "qr": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png",
                   "description": "A PNG of the QR code, base64; scan it with WhatsApp > Linked devices."},
            "expires_in": {"type": "number", "minimum": 0, "description": "Seconds until WhatsApp rotates it."},
        },
    },
    "PairCode": {
        "type": "object", "required": ["code", "expires_in"],
        "properties": {
            "code": {"type": "string", "example": "ABCD-EFGH",
                     "description": "Type it on the phone: WhatsApp > Linked devices > Link with phone number."},
            "expires_in": {"type": "number", "minimum": 0},
        },
    },
    "SendRequest": {
        "type": "object",
        "description": "Exactly one of line or slot says who sends; exactly one of text or media says what.",
        "required": ["to"],
        "allOf": [
            {"oneOf": [{"required": ["line"]}, {"required": ["slot"]}]},
            # null counts as absent for text and media (not for line and slot)
            {"oneOf": [{"required": ["text"], "properties": {"text": {"type": "string"}}},
                       {"required": ["media"], "properties": {"media": {"type": "object"}}}]},
        ],
        "properties": {
            "line": LINE,
            "slot": SLOT_ID,
            "to": LINE,
            "text": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_TEXT},
            "media": {"oneOf": [{"$ref": "#/components/schemas/Media"}, {"type": "null"}]},
        },
        "example": {"line": "34666123456", "to": "34611122233", "text": "Hola"},
    },
    "Media": {
        "type": "object",
        "description": "Either url (fetched by the gateway, bounded in time and size) or base64 data.",
        "oneOf": [
            {"required": ["url"], "not": {"required": ["data"]}},
            {"required": ["data", "mimetype"], "not": {"required": ["url"]},
             "properties": {"mimetype": {"type": "string", "minLength": 1}}},
        ],
        "properties": {
            "url": {"type": "string", "format": "uri", "pattern": "^[hH][tT][tT][pP][sS]?://",
                    "description": "http or https."},
            "data": {"type": "string", "contentEncoding": "base64"},
            "mimetype": {"type": ["string", "null"], "example": "image/jpeg", "description": "Needed with data."},
            "filename": {"type": ["string", "null"]},
            "caption": {"type": ["string", "null"], "maxLength": MAX_CAPTION},
        },
    },
    "SendResult": {
        "type": "object", "required": ["id", "timestamp"],
        "properties": {
            "id": {"type": "string", "description": "WhatsApp's message id."},
            "timestamp": {"type": "integer", "description": "Unix time at which the engine accepted it."},
        },
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "Ready": {
        "type": "object", "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ready", "unavailable"]},
            "checks": {"type": "object", "properties": {"redis": {"type": "boolean"},
                                                         "supervisord": {"type": "boolean"}}},
        },
    },
}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(name: str, description: str) -> dict:
    """A response object for @bp.doc(responses=...): JSON of one of the COMPONENTS."""
    return {"description": description, "content": {"application/json": {"schema": ref(name)}}}


OK_TEXT = {"description": "Done.", "content": {"text/plain": {"schema": {"type": "string", "const": "OK"}}}}
