"""Message events as the network hands them to a linked device.

Laid out like whatsmeow's MessageEv turned to JSON (json_format.MessageToDict with the proto field
names): Info with its MessageSource, ID, Timestamp in Unix milliseconds (int64, so a string), and the
WhatsApp Message itself.
"""

import time


def jid(number: str) -> dict:
    return {"User": number, "Server": "s.whatsapp.net"}


def text_message(message_id: str, sender: str, line: str, text: str) -> dict:
    return {
        "Info": {
            "MessageSource": {"Chat": jid(sender), "Sender": jid(sender), "IsFromMe": False, "IsGroup": False},
            "ID": message_id,
            "Type": "text",
            "Timestamp": str(int(time.time() * 1000)),
        },
        "Message": {"conversation": text},
    }
