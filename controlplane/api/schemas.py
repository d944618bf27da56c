"""The shapes of the API's bodies, as the OpenAPI document (api/openapi.py) publishes them.

They are JSON Schema (OpenAPI 3.1) rather than marshmallow classes because several of the manual's
shapes have no marshmallow equivalent: lists of one-pair objects keyed by a slot id or a line, and
"either line or slot". The views keep validating input themselves (ids.py, outbound.py), with the
contract's error codes; the schemathesis test (tests/controlplane/api/test_openapi.py) checks that
what they answer matches these shapes.
"""

from controlplane.core.ids import LINE_PATTERN, SLOT_ID_PATTERN
from controlplane.core.states import SlotStatus
from controlplane.lifecycle import MAX_SLOTS_PER_REQUEST
from controlplane.messaging.asks import (
    GROUP_PATTERN,
    MAX_CAPTION,
    MAX_CONTACT_NAME,
    MAX_EMOJI,
    MAX_FILENAME,
    MAX_MESSAGE_ID,
    MAX_PLACE_TEXT,
    MAX_READ_IDS,
    MAX_TEXT,
    MAX_VCARD,
    PHONE_JID_PATTERN,
    PRESENCE_STATES,
)

SLOT_ID = {"type": "string", "pattern": f"^{SLOT_ID_PATTERN}$", "example": "AB12CD34",
           "description": "8 letters or digits; answers always use upper case."}
LINE = {"type": "string", "pattern": f"^{LINE_PATTERN}$", "example": "34666123456",
        "description": "International number without '+'."}
# What the gateway answers: ids are upper-cased, so answers are narrower than what SLOT_ID accepts.
ANSWER_SLOT = {"type": "string", "pattern": "^[A-Z0-9]{8}$", "example": "AB12CD34"}
STATUS = {"type": "string", "enum": [s.value for s in SlotStatus], "example": "active"}
TO = {"type": "string", "pattern": f"^({LINE_PATTERN}|{PHONE_JID_PATTERN}|{GROUP_PATTERN})$",
      "example": "34611122233",
      "description": "A phone number (international, without '+'), or the webhook's `chat` for it "
                     "(`34611122233@s.whatsapp.net`, with or without its `:device`), or a group id (`120363…@g.us`) "
                     "the line is in."}
MESSAGE_ID = {"type": "string", "minLength": 1, "maxLength": MAX_MESSAGE_ID, "example": "3EB0A1B2C3D4E5F6A7B8C9D0",
              "description": "WhatsApp's message id, as the webhook (`message_id`) or /send (`id`) gave it."}


def _one_pair(key: dict, value: dict) -> dict:
    return {"type": "object", "minProperties": 1, "maxProperties": 1,
            "propertyNames": {"pattern": key["pattern"]}, "additionalProperties": value}


def _action(required: list[str], properties: dict, example: dict) -> dict:
    """A chat action's body: the line (or its slot) that acts, and what it acts on."""
    return {"type": "object", "required": required, "description": "Exactly one of line or slot says which line acts.",
            "allOf": [{"oneOf": [{"required": ["line"]}, {"required": ["slot"]}]}],
            "properties": {"line": LINE, "slot": SLOT_ID, **properties}, "example": example}


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
        "items": _one_pair(ANSWER_SLOT, STATUS),
        "example": [{"AB12CD34": "active"}, {"K9P2M4Q7": "available"}],
    },
    "SlotsToLines": {
        "type": "array", "description": "Every slot with its line, or null when it has none.",
        "items": _one_pair(ANSWER_SLOT, {"type": ["string", "null"], "pattern": LINE["pattern"]}),
        "example": [{"AB12CD34": "34666123456"}, {"K9P2M4Q7": None}],
    },
    "LinesToSlots": {
        "type": "array", "description": "Every enrolled line with its slot.",
        "items": _one_pair(LINE, {"type": "string", "pattern": ANSWER_SLOT["pattern"]}),
        "example": [{"34666123456": "AB12CD34"}],
    },
    "SlotDetail": {
        "type": "object",
        "required": ["id", "status", "line", "pairing", "connected", "resetting", "pair_error", "host"],
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
            "host": {"type": ["string", "null"], "example": "wa-host-1",
                     "description": "The slot host it is placed on (`GET /hosts`); null until first started."},
        },
    },
    "Host": {
        "type": "object", "required": ["name", "alive", "capacity", "running", "draining", "slots"],
        "properties": {
            "name": {"type": "string", "example": "wa-host-1"},
            "alive": {"type": "boolean", "description": "Its agent beat within `WHIN_HOST_DEAD_AFTER` seconds."},
            "capacity": {"type": "integer", "description": "`WHIN_HOST_CAPACITY`: the most slots it runs."},
            "running": {"type": "integer", "description": "Slots placed there whose worker should run."},
            "draining": {"type": "boolean", "description": "Being drained: nothing new is placed there."},
            "slots": {"type": "array", "items": SLOT_ID, "description": "Every slot placed there."},
        },
    },
    "Hosts": {"type": "array", "items": {"$ref": "#/components/schemas/Host"}},
    "SlotDetails": {
        "type": "array", "description": "Every slot as `GET /slot/{slot}` shows it, sorted by id.",
        "items": {"$ref": "#/components/schemas/SlotDetail"},
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
        "description": "Exactly one of line or slot says who sends; exactly one content field (text, media, location, "
                       "contact, reaction) says what. `reply_to` quotes a message of the chat (not with a reaction).",
        "required": ["to"],
        "allOf": [
            {"oneOf": [{"required": ["line"]}, {"required": ["slot"]}]},
            # null counts as absent for the content fields (not for line and slot)
            {"oneOf": [{"required": [name], "properties": {name: {"type": kind}}} for name, kind in (
                ("text", "string"), ("media", "object"), ("location", "object"), ("contact", "object"),
                ("reaction", "object"))]},
        ],
        "properties": {
            "line": LINE,
            "slot": SLOT_ID,
            "to": TO,
            "text": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_TEXT},
            "media": {"oneOf": [{"$ref": "#/components/schemas/Media"}, {"type": "null"}]},
            "location": {"oneOf": [{"$ref": "#/components/schemas/Location"}, {"type": "null"}]},
            "contact": {"oneOf": [{"$ref": "#/components/schemas/Contact"}, {"type": "null"}]},
            "reaction": {"oneOf": [{"$ref": "#/components/schemas/Reaction"}, {"type": "null"}]},
            "reply_to": {**MESSAGE_ID, "type": ["string", "null"],
                         "description": "Quote this message of the chat (its `message_id` from the webhook)."},
            "quoted": {"type": ["object", "null"],
                       "description": "The quoted message's payload `Message` object, as the webhook delivered it, so "
                                      "the phone shows its text (the gateway keeps no copy). Only with `reply_to`."},
        },
        "example": {"line": "34666123456", "to": "34611122233", "text": "Hola"},
    },
    # Plain properties, no oneOf/allOf/not: client generators (openapi-python-client and others) keep
    # every field of a flat object, and mangle combinators into models that lose some. The either/or
    # is said in the descriptions and enforced by the server (requests._check_media: 422 invalid_media).
    "Media": {
        "type": "object",
        "description": "Exactly one of `url` (fetched by the gateway, bounded in time and size) or base64 `data`; "
                       "`mimetype` is required with `data` (with `url` it defaults to the answer's Content-Type) and "
                       "says the kind: image (JPEG, PNG, WebP), video (MP4, 3GPP), audio (MP3, M4A/AAC, OGG, AMR), "
                       "anything else a document. Anything else is a 422 `invalid_media`; a type WhatsApp does not "
                       "show as its kind is `unsupported_media_type`.",
        "properties": {
            "url": {"type": "string", "format": "uri", "pattern": "^[hH][tT][tT][pP][sS]?://",
                    "example": "https://example.com/piso.jpg",
                    "description": "An http or https URL the gateway downloads. Not with `data`."},
            "data": {"type": "string", "contentEncoding": "base64",
                     "description": "The file itself, base64. Not with `url`; needs `mimetype`."},
            "mimetype": {"type": ["string", "null"], "example": "image/jpeg",
                         "description": "Says image, video, audio or document. Required with `data`."},
            "filename": {"type": ["string", "null"], "maxLength": MAX_FILENAME, "example": "piso.jpg",
                         "description": "The name a document shows on the phone."},
            "caption": {"type": ["string", "null"], "maxLength": MAX_CAPTION,
                        "description": "The text shown under an image, video or document."},
            "ptt": {"type": ["boolean", "null"],
                    "description": "Send audio as a voice note (push to talk). OGG/Opus goes as it is; MP3, M4A/AAC, "
                                   "WAV and other audio are converted with ffmpeg, and without ffmpeg are a 422 "
                                   "`voice_note_needs_ffmpeg`."},
        },
        "example": {"url": "https://example.com/piso.jpg", "caption": "El salón"},
    },
    "Location": {
        "type": "object", "required": ["latitude", "longitude"],
        "description": "A location pin; anything malformed is a 422 `invalid_location`.",
        "properties": {
            "latitude": {"type": "number", "minimum": -90, "maximum": 90, "example": 40.4168},
            "longitude": {"type": "number", "minimum": -180, "maximum": 180, "example": -3.7038},
            "name": {"type": ["string", "null"], "maxLength": MAX_PLACE_TEXT, "example": "Piso en Sol"},
            "address": {"type": ["string", "null"], "maxLength": MAX_PLACE_TEXT, "example": "Puerta del Sol 1, Madrid"},
        },
    },
    "Contact": {
        "type": "object",
        "description": "A contact card: `name` and `number` (the gateway writes the vCard 3.0), or a whole `vcard` "
                       "(with a TEL line; its FN is the name unless `name` is given). A card without a number is a 422 "
                       "`invalid_contact`.",
        "properties": {
            "name": {"type": ["string", "null"], "maxLength": MAX_CONTACT_NAME, "example": "Ana (agente)"},
            "number": {"type": ["string", "null"], "example": "34611122233",
                       "description": "International number; '+', spaces and dashes are ignored."},
            "vcard": {"type": ["string", "null"], "maxLength": MAX_VCARD,
                      "description": "A vCard (BEGIN:VCARD … END:VCARD). Not with `number`."},
        },
        "example": {"name": "Ana (agente)", "number": "34611122233"},
    },
    "Reaction": {
        "type": "object", "required": ["message_id", "emoji"],
        "description": "A reaction on a message of that chat; a malformed one is a 422 `invalid_reaction`, one on a "
                       "message the gateway has not seen in that chat `unknown_message`.",
        "properties": {
            "message_id": MESSAGE_ID,
            "emoji": {"type": "string", "maxLength": MAX_EMOJI, "example": "👍",
                      "description": "One emoji; \"\" removes the line's reaction."},
        },
    },
    "ReadRequest": _action(["chat", "message_ids"], {
        "chat": {**TO, "description": "The chat the messages arrived in: the webhook's `chat` as it is, or the "
                                      "phone number, or a group id."},
        "message_ids": {"type": "array", "minItems": 1, "maxItems": MAX_READ_IDS, "items": MESSAGE_ID},
    }, {"line": "34666123456", "chat": "34611122233", "message_ids": ["3EB0A1B2C3D4E5F6A7B8C9D0"]}),
    "PresenceRequest": _action(["to", "state"], {
        "to": TO,
        "state": {"type": "string", "enum": list(PRESENCE_STATES),
                  "description": "`composing` (typing…), `recording` (recording audio…) or `paused`."},
    }, {"line": "34666123456", "to": "34611122233", "state": "composing"}),
    "RevokeRequest": _action(["to", "message_id"], {"to": TO, "message_id": MESSAGE_ID},
                             {"line": "34666123456", "to": "34611122233", "message_id": "3EB0A1B2C3D4E5F6A7B8C9D0"}),
    "EditRequest": _action(["to", "message_id", "text"], {
        "to": TO, "message_id": MESSAGE_ID, "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}},
        {"line": "34666123456", "to": "34611122233", "message_id": "3EB0A1B2C3D4E5F6A7B8C9D0", "text": "3 hab."}),
    "Existence": {
        "type": "object", "required": ["number", "exists", "jid"],
        "properties": {
            "number": LINE,
            "exists": {"type": "boolean", "description": "The number is on WhatsApp."},
            "jid": {"type": ["string", "null"], "example": "34611122233@s.whatsapp.net",
                    "description": "The id WhatsApp knows the number by; null when it is not on WhatsApp."},
        },
    },
    "MediaRequest": {
        "type": "object",
        "description": "Exactly one of line or slot says which line received the message; `message` is the "
                       "webhook payload's `Message` object, exactly as delivered.",
        "required": ["message"],
        "allOf": [{"oneOf": [{"required": ["line"]}, {"required": ["slot"]}]}],
        "properties": {
            "line": LINE,
            "slot": SLOT_ID,
            "message": {"type": "object", "description": "The payload's `Message`: an `imageMessage`, "
                        "`videoMessage`, `audioMessage`, `documentMessage` or `stickerMessage` (also inside "
                        "`ephemeralMessage`, `viewOnceMessage…` or `documentWithCaptionMessage`)."},
        },
        "example": {"line": "34666123456", "message": {"imageMessage": {
            "URL": "https://mmg.whatsapp.net/…", "directPath": "/v/t62.7118-24/…", "mimetype": "image/jpeg",
            "mediaKey": "…", "fileSHA256": "…", "fileEncSHA256": "…", "fileLength": "52311"}}},
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


# --- the webhook: what the gateway POSTs to WHIN_WEBHOOK_URL (controlplane/events.py builds it) ---

SLOT_STATUS_EVENTS = ["enrolled", "logged_out", "killed", "evicted", "sleeping", "active", "offline"]
_CHAT = {"type": "string", "example": "34611122233@s.whatsapp.net",
         "description": "The chat's WhatsApp id: a contact's (`<number>@s.whatsapp.net`) or a group's (`…@g.us`)."}
_MESSAGE_ID = {"type": "string", "description": "WhatsApp's message id.", "example": "3EB0A1B2C3D4E5F6A7B8C9D0"}
_FROM = {"type": ["string", "null"], "example": "34611122233",
         "description": "The sender's phone number: from the event, its `…Alt` twin or the line's LID store. Null "
                        "only when WhatsApp names the sender by a `@lid` id alone and the number cannot be known."}
_FROM_LID = {"type": "string", "example": "201234567890123@lid",
             "description": "The sender's `@lid` id, when WhatsApp gave one (alongside `from`, never instead of a "
                            "number that is known)."}


def _source(names: str) -> dict:
    return {"event": {"type": "string", "enum": names.split(),
                      "description": "The whatsmeow event behind it (the payload's type)."}}


def _whatsmeow_payload(events: str) -> dict:
    return {"type": "object", "description": f"whatsmeow's {events} event as the network delivered it, as JSON "
                                             "(protobuf field names), never altered by the gateway."}


def _event(kind: str, description: str, payload: dict, adds: dict, required: list[str]) -> dict:
    """One event type's envelope: the fields every event has, and what this type adds (``adds``), in
    the order events.py writes them; ``required`` is what the receiver can count on among ``adds``."""
    return {
        "type": "object", "description": description,
        "required": ["type", "line", "slot", "seq", *required, "received_at", "payload"],
        "properties": {
            "type": {"type": "string", "const": kind},
            "line": {**LINE, "description": "The line the event happened on."},
            "slot": {**ANSWER_SLOT, "description": "The slot that holds the line."},
            "seq": {"type": "integer", "minimum": 1,
                    "description": "Counts the line's events, 1, 2, 3, …: order by it, and a gap is a missing event."},
            **adds,
            "received_at": {"type": "number", "example": 1764170000.123,
                            "description": "Unix time, in seconds, at which the gateway received the event."},
            "payload": payload,
        },
    }


EVENTS = {  # type: (component name, envelope schema), in the contract's order
    "message": ("MessageEvent", _event(
        "message", "Any message in any chat of the line, also those its own phone sends, and edits, deletions, "
                   "reactions and polls.",
        {**_whatsmeow_payload("`Message`"),
         "properties": {"Info": {"type": "object"}, "Message": {"type": "object"}}},
        {**_source("Message"), "message_id": _MESSAGE_ID, "chat": _CHAT, "from": _FROM,
         "from_me": {"type": "boolean", "description": "Sent by the line's own phone (then `from` is the line)."},
         "from_lid": _FROM_LID},
        ["event", "message_id", "chat", "from", "from_me"])),
    "receipt": ("ReceiptEvent", _event(
        "receipt", "A message the line sent was delivered, read or played.", _whatsmeow_payload("`Receipt`"),
        {**_source("Receipt"), "status": {"type": "string", "enum": ["delivered", "read", "played"]},
         "message_ids": {"type": "array", "items": _MESSAGE_ID}, "chat": _CHAT,
         "from": {**_FROM, "description": "Who delivered, read or played it (in a group, one member)."}},
        ["event", "status", "message_ids", "chat", "from"])),
    "call": ("CallEvent", _event(
        "call", "A call to the line rang, or ended.", _whatsmeow_payload("`CallOffer` or `CallTerminate`"),
        {**_source("CallOffer CallTerminate"), "from": _FROM,
         "call_id": {"type": "string", "description": "WhatsApp's id of the call."}, "from_lid": _FROM_LID},
        ["event", "from", "call_id"])),
    "presence": ("PresenceEvent", _event(
        "presence", "A contact is typing or recording, or came online. Off unless `WHIN_EVENTS` names it.",
        _whatsmeow_payload("`ChatPresence` or `Presence`"),
        {**_source("ChatPresence Presence"), "from": _FROM, "chat": _CHAT, "from_lid": _FROM_LID},
        ["event", "from", "chat"])),
    "group": ("GroupEvent", _event(
        "group", "The line joined a group, or a group's name, members or settings changed.",
        _whatsmeow_payload("`JoinedGroup` or `GroupInfo`"), {**_source("JoinedGroup GroupInfo"), "chat": _CHAT},
        ["event", "chat"])),
    "message.undecryptable": ("UndecryptableMessageEvent", _event(
        "message.undecryptable", "A message arrived that could not be decrypted.",
        _whatsmeow_payload("`UndecryptableMessage`"),
        {**_source("UndecryptableMessage"), "message_id": _MESSAGE_ID, "chat": _CHAT, "from": _FROM,
         "from_lid": _FROM_LID},
        ["event", "message_id", "chat", "from"])),
    "slot.status": ("SlotStatusEvent", _event(
        "slot.status", "The line's slot changed: `enrolled` (a phone linked), `logged_out` (the phone unlinked it), "
                       "`killed` (/kill), `evicted` (the line linked on another slot), `sleeping`, `active` (resumed, "
                       "or back online: reason `back_online`), `offline` (WhatsApp refuses the line's connection; "
                       "the reason says why and what to do).",
        {"type": "object", "required": ["status", "reason"], "properties": {
            "status": {"type": "string", "enum": SLOT_STATUS_EVENTS},
            "reason": {"type": ["string", "null"], "example": "paired on slot K9P2M4Q7",
                       "description": "Why, when there is more to say: whatsmeow's logout reason, the slot that "
                                      "took an evicted line, or for `offline`: `temporary_ban` (WhatsApp banned "
                                      "the number for `expires_in` seconds, `ban_code` says why; the slot "
                                      "reconnects by itself once it expires), `stream_replaced` (another client "
                                      "took this session; the slot does not fight it: find the other client, then "
                                      "sleep and resume the line), `client_outdated` (WhatsApp refuses this "
                                      "version of whatsmeow: upgrade the gateway)."},
            "expires_in": {"type": "integer", "description": "`temporary_ban`: seconds until the ban ends."},
            "ban_code": {"type": "string", "example": "sent_too_many_same_message",
                         "description": "`temporary_ban`: WhatsApp's reason (whatsmeow's TempBanReason)."},
            "was": {"type": "string", "description": "`back_online`: the reason it had been offline."}}},
        {"status": {"type": "string", "enum": SLOT_STATUS_EVENTS}}, ["status"])),
}
COMPONENTS.update({name: schema for name, schema in EVENTS.values()})


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(name: str, description: str) -> dict:
    """A response object for @bp.doc(responses=...): JSON of one of the COMPONENTS."""
    return {"description": description, "content": {"application/json": {"schema": ref(name)}}}


OK_TEXT = {"description": "Done.", "content": {"text/plain": {"schema": {"type": "string", "const": "OK"}}}}
