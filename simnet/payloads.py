"""Message events as the network hands them to a linked device: neonize's own protobufs (MessageEv,
UndecryptableMessageEv), turned into JSON exactly as the real engine does (json_format.MessageToDict
with the proto field names), filled in as whatsmeow fills them (read from its message.go/send.go and
neonize's goneonize/utils/encoder.go): Info.Timestamp in Unix milliseconds, Raw = Message, an edit
as the protocolMessage MESSAGE_EDIT with IsEdit and Info.Edit "1", a revocation as REVOKE with "7".
Info.Type and Info.MediaType as whatsmeow's send.go getTypeFromMessage/getMediaTypeFromMessage set
the stanza's: "media" with image/video/audio/ptt/document, a contact "media" with "vcard", a
reaction "reaction", and "text" with no media type for a text, a location (whatsmeow names none for
it), an edit and a revocation.
"""

import time
from dataclasses import dataclass

from google.protobuf import json_format
from neonize.events import MessageEv, UndecryptableMessageEv
from neonize.proto.Neonize_pb2 import JID, AddressingMode, MessageSource, UndecryptableMessage
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ContextInfo, Message, ProtocolMessage
from neonize.utils.jid import build_jid

from simnet.common import GROUP_SERVER, LID_SERVER, lid_of

# MessageInfo.Edit, whatsmeow's types.EditAttribute
EDIT_MESSAGE, EDIT_SENDER_REVOKE = "1", "7"


def pn(number: str) -> JID:
    return build_jid(number)


def lid(number: str) -> JID:
    return build_jid(lid_of(number), LID_SERVER)


def group(group_id: str) -> JID:
    return build_jid(group_id, GROUP_SERVER)


def jid_text(jid: JID) -> str:
    return f"{jid.User}@{jid.Server}"


def as_json(event) -> dict:
    return json_format.MessageToDict(event, preserving_proto_field_name=True)


@dataclass(frozen=True)
class Where:
    """A message's MessageSource as the receiving device sees it."""

    chat: JID
    sender: JID
    from_me: bool = False
    is_group: bool = False

    def source(self) -> MessageSource:
        source = MessageSource(IsFromMe=self.from_me, IsGroup=self.is_group)
        source.Chat.CopyFrom(self.chat)
        source.Sender.CopyFrom(self.sender)
        if self.is_group:  # simnet's groups are LID-addressed: the sender is a @lid, and no SenderAlt
            source.AddressingMode = AddressingMode.LID
        return source


def message_event(message_id: str, where: Where, content: Message, kind: str = "text", media_type: str = "",
                  edit: str = "", is_edit: bool = False) -> dict:
    ev = MessageEv(IsEphemeral=False, IsViewOnce=False, IsViewOnceV2=False, IsEdit=is_edit)
    ev.Info.MessageSource.CopyFrom(where.source())
    ev.Info.ID = message_id
    ev.Info.Type = kind
    ev.Info.MediaType = media_type
    ev.Info.Edit = edit
    ev.Info.Timestamp = int(time.time() * 1000)  # whatsmeow's MessageInfo.Timestamp via neonize: Unix ms
    ev.Message.CopyFrom(content)
    ev.Raw.CopyFrom(content)  # neonize's Raw is whatsmeow's evt.Message after unwrapping: the same
    return as_json(ev)


def reply_context(stanza_id: str, participant: JID | None, quoted: Message | None) -> ContextInfo:
    """What a reply carries (whatsmeow's and neonize's build_reply_message): the quoted message's id,
    its author when known, and the quoted message itself when the sender had it."""
    context = ContextInfo(stanzaID=stanza_id)
    if participant is not None:
        context.participant = jid_text(participant)
    if quoted is not None:
        context.quotedMessage.CopyFrom(quoted)
    return context


def text(message_id: str, where: Where, body: str, context: ContextInfo | None = None) -> dict:
    """A text: ``conversation``, or ``extendedTextMessage`` when it quotes a message (a reply)."""
    if context is None:
        return message_event(message_id, where, Message(conversation=body))
    content = Message()
    content.extendedTextMessage.text = body
    content.extendedTextMessage.contextInfo.CopyFrom(context)
    return message_event(message_id, where, content)


def location(message_id: str, where: Where, latitude: float, longitude: float, name: str | None = None,
             address: str | None = None, context: ContextInfo | None = None) -> dict:
    content = Message()
    pin = content.locationMessage
    pin.degreesLatitude, pin.degreesLongitude = latitude, longitude
    if name:
        pin.name = name
    if address:
        pin.address = address
    if context is not None:
        pin.contextInfo.CopyFrom(context)
    return message_event(message_id, where, content)


def contact(message_id: str, where: Where, name: str, vcard: str, context: ContextInfo | None = None) -> dict:
    content = Message()
    card = content.contactMessage
    card.displayName, card.vcard = name, vcard
    if context is not None:
        card.contextInfo.CopyFrom(context)
    return message_event(message_id, where, content, kind="media", media_type="vcard")


MEDIA_FIELD = {"image": "imageMessage", "video": "videoMessage", "audio": "audioMessage",
               "document": "documentMessage"}


def media(message_id: str, where: Where, kind: str, upload, url: str, direct_path: str, mimetype: str,
          filename: str | None = None, caption: str | None = None, ptt: bool = False, seconds: int | None = None,
          thumbnail: bytes | None = None, context: ContextInfo | None = None) -> dict:
    """A photo, video, audio or document: the encrypted file's reference (``upload`` an Encrypted);
    ``seconds`` and a JPEG ``thumbnail`` as the sender measured and made them (audio, video)."""
    content = Message()
    fields = getattr(content, MEDIA_FIELD[kind])
    fields.URL = url
    fields.directPath = direct_path
    fields.mimetype = mimetype
    fields.mediaKey = upload.media_key
    fields.fileSHA256 = upload.file_sha256
    fields.fileEncSHA256 = upload.file_enc_sha256
    fields.fileLength = upload.file_length
    fields.mediaKeyTimestamp = int(time.time())
    if caption and kind != "audio":
        fields.caption = caption
    if kind == "audio":
        fields.PTT = bool(ptt)
    if kind in ("audio", "video"):
        fields.seconds = seconds or 0
    if kind == "video" and thumbnail:
        fields.JPEGThumbnail = thumbnail
    if context is not None:
        fields.contextInfo.CopyFrom(context)
    if kind == "document":
        fields.fileName = filename or "file"
        fields.title = filename or "file"
    media_type = "ptt" if kind == "audio" and ptt else kind
    return message_event(message_id, where, content, kind="media", media_type=media_type)


def key(chat: JID, target_id: str, from_me: bool, participant: JID | None = None) -> MessageKey:
    """A MessageKey as whatsmeow's BuildMessageKey writes it, from the sending phone's point of view."""
    message_key = MessageKey(remoteJID=jid_text(chat), fromMe=from_me, ID=target_id)
    if participant is not None and not from_me:
        message_key.participant = jid_text(participant)
    return message_key


def reaction(message_id: str, where: Where, target: MessageKey, emoji: str) -> dict:
    content = Message()
    content.reactionMessage.key.CopyFrom(target)
    content.reactionMessage.text = emoji
    content.reactionMessage.senderTimestampMS = int(time.time() * 1000)
    edit = EDIT_SENDER_REVOKE if emoji == "" else ""  # removing a reaction (whatsmeow's getEditAttribute)
    return message_event(message_id, where, content, kind="reaction", edit=edit)


def edit(message_id: str, where: Where, target: MessageKey, body: str) -> dict:
    content = Message()
    protocol = content.protocolMessage
    protocol.key.CopyFrom(target)
    protocol.type = ProtocolMessage.MESSAGE_EDIT
    protocol.editedMessage.conversation = body
    protocol.timestampMS = int(time.time() * 1000)
    return message_event(message_id, where, content, edit=EDIT_MESSAGE, is_edit=True)


def revoke(message_id: str, where: Where, target: MessageKey) -> dict:
    content = Message()
    content.protocolMessage.key.CopyFrom(target)
    content.protocolMessage.type = ProtocolMessage.REVOKE
    return message_event(message_id, where, content, edit=EDIT_SENDER_REVOKE)


def undecryptable(message_id: str, where: Where) -> dict:
    ev = UndecryptableMessageEv(IsUnavailable=False,
                                DecryptFailMode=UndecryptableMessage.DECRYPT_FAIL_SHOW)
    ev.Info.MessageSource.CopyFrom(where.source())
    ev.Info.ID = message_id
    ev.Info.Type = "text"
    ev.Info.Timestamp = int(time.time() * 1000)
    return as_json(ev)
