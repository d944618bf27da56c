"""Message events as the network hands them to a linked device: neonize's own MessageEv protobuf,
turned into JSON exactly as the real engine does (json_format.MessageToDict with the proto field
names), so a payload from the simulator has the form of one from WhatsApp.
"""

import time

from google.protobuf import json_format
from neonize.events import MessageEv
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message
from neonize.utils.jid import build_jid


def _event(message_id: str, sender: str, line: str, kind: str, message: Message) -> dict:
    ev = MessageEv()
    source = ev.Info.MessageSource
    source.Chat.CopyFrom(build_jid(sender))
    source.Sender.CopyFrom(build_jid(sender))
    source.IsFromMe = False
    source.IsGroup = False
    ev.Info.ID = message_id
    ev.Info.Type = kind
    ev.Info.Timestamp = int(time.time() * 1000)  # whatsmeow's MessageInfo.Timestamp: Unix milliseconds
    ev.Message.CopyFrom(message)
    return json_format.MessageToDict(ev, preserving_proto_field_name=True)


def text_message(message_id: str, sender: str, line: str, text: str) -> dict:
    return _event(message_id, sender, line, "text", Message(conversation=text))


def media_message(message_id: str, sender: str, line: str, media: dict) -> dict:
    message = Message()
    size = len(media.get("data") or "") * 3 // 4
    if str(media.get("mimetype", "")).startswith("image/"):
        message.imageMessage.mimetype = media.get("mimetype") or ""
        message.imageMessage.caption = media.get("caption") or ""
        message.imageMessage.fileLength = size
    else:
        message.documentMessage.mimetype = media.get("mimetype") or ""
        message.documentMessage.caption = media.get("caption") or ""
        message.documentMessage.fileName = media.get("filename") or ""
        message.documentMessage.fileLength = size
    return _event(message_id, sender, line, "media", message)
