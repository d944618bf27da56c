"""Message events as the network hands them to a linked device.

Laid out like whatsmeow's MessageEv turned to JSON (json_format.MessageToDict with the proto field
names): Info with its MessageSource, ID, Timestamp in Unix milliseconds (int64, so a string), and the
WhatsApp Message itself.
"""

import time


def jid(number: str) -> dict:
    return {"User": number, "Server": "s.whatsapp.net"}


def _info(message_id: str, sender: str, kind: str) -> dict:
    return {
        "MessageSource": {"Chat": jid(sender), "Sender": jid(sender), "IsFromMe": False, "IsGroup": False},
        "ID": message_id,
        "Type": kind,
        "Timestamp": str(int(time.time() * 1000)),
    }


def text_message(message_id: str, sender: str, line: str, text: str) -> dict:
    return {"Info": _info(message_id, sender, "text"), "Message": {"conversation": text}}


def media_message(message_id: str, sender: str, line: str, media: dict) -> dict:
    body = {"mimetype": media.get("mimetype"), "caption": media.get("caption"), "fileName": media.get("filename"),
            "fileLength": str(len(media.get("data") or "") * 3 // 4)}
    kind = "imageMessage" if str(media.get("mimetype", "")).startswith("image/") else "documentMessage"
    return {"Info": _info(message_id, sender, "media"), "Message": {kind: body}}
