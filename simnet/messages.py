"""Messages: a phone writes (text, media, a reaction, an edit, a revocation) to a line, to a contact
from a line's own phone, or in a group; and a line's linked device sends through the network.

Who sees what, as WhatsApp: the recipient line's devices get the message (chat and sender = the
phone); the sending line's own devices get it too with IsFromMe (chat = the contact); in a group
every member line's devices get it with chat = the group and sender = the poster's LID. Media is
encrypted once and uploaded to simnet's media server; every copy carries the same reference.
Every method runs with the network's lock held.
"""

import time
from collections.abc import Callable

from simnet import notices, payloads
from simnet.common import SimError, message_id, number
from simnet.devices import Devices
from simnet.groups import Groups
from simnet.media import MediaServer, decoded, kind_of
from simnet.payloads import Where
from simnet.phones import Phones

CONTENTS = ("text", "media", "reaction", "edit", "revoke")


def inbox_kind(media: dict | None) -> str:
    if media is None:
        return "text"
    kind = kind_of(str(media.get("mimetype", "")))
    return "voice" if kind == "audio" and media.get("ptt") else kind


class Messages:
    def __init__(self, devices: Devices, phones: Phones, groups: Groups, media: MediaServer):
        self.devices, self.phones, self.groups, self.media = devices, phones, groups, media

    def phone_sends(self, data: dict, base_url: str) -> dict:
        sender = number(data.get("from"), "from")
        given = [c for c in CONTENTS if data.get(c) is not None]
        if len(given) != 1 or (given == ["text"] and not (isinstance(data["text"], str) and data["text"])):
            raise SimError(422, "invalid_text", "Send one of 'text' (a non-empty string), " +
                           ", ".join(f"'{c}'" for c in CONTENTS[1:]) + ".")
        kind, sent = given[0], message_id()
        if data.get("group") is not None:
            gid, members = self.groups.members(data["group"], sender)
            chat, to = payloads.group(gid), None
            receivers = [(m, Where(chat=chat, sender=payloads.lid(sender), is_group=True)) for m in members
                         if m != sender]
            own = Where(chat=chat, sender=payloads.lid(sender), from_me=True, is_group=True)
        else:
            gid, to = None, number(data.get("to"), "to")
            chat = payloads.pn(to)
            receivers = [(to, Where(chat=payloads.pn(sender), sender=payloads.pn(sender)))]
            own = Where(chat=chat, sender=payloads.pn(sender), from_me=True)
        self.phones.know(sender)
        if to:
            self.phones.know(to)
        build, shown = self._content(kind, data[kind], sent, sender, to, gid, chat, base_url)
        reached = sum(self.devices.deliver(line, "Message", build(where)) for line, where in receivers)
        if self.devices.of_line(sender):  # the line's own phone wrote: its linked devices see it too
            self.devices.deliver(sender, "Message", build(own))
            if to:
                self._to_inbox(sent, sender, to, shown)
        if kind in ("text", "media"):
            self.phones.record(sent, sender, to=to, group=gid)
        return {"id": sent, "devices": reached}

    def _content(self, kind, value, sent, sender, to, gid, chat, base_url) -> tuple[Callable[[Where], dict], dict]:
        """(where -> the payload, the inbox entry's fields) of one message's content."""
        if kind == "text":
            return (lambda where: payloads.text(sent, where, value)), {"text": value}
        if kind == "media":
            return self._media(sent, value, base_url)
        if not isinstance(value, dict):
            raise SimError(422, f"invalid_{kind}", f"'{kind}' is an object with 'message_id'.")
        target_id = value.get("message_id")
        target = self.phones.target(target_id, sender, to, gid, own=kind != "reaction")
        author = payloads.lid(target["from"]) if gid else payloads.pn(target["from"])
        key = payloads.key(chat, target_id, from_me=target["from"] == sender, participant=author if gid else None)
        if kind == "reaction":
            emoji = value.get("emoji")
            if not isinstance(emoji, str):
                raise SimError(422, "invalid_reaction", "'reaction.emoji' is a string ('' removes it).")
            return (lambda where: payloads.reaction(sent, where, key, emoji)), {
                "reaction": {"message_id": target_id, "emoji": emoji}}
        if kind == "edit":
            body = value.get("text")
            if not isinstance(body, str) or not body:
                raise SimError(422, "invalid_edit", "'edit.text' is the new text, not empty.")
            return (lambda where: payloads.edit(sent, where, key, body)), {
                "edit": {"message_id": target_id, "text": body}}
        return (lambda where: payloads.revoke(sent, where, key)), {"revoke": {"message_id": target_id}}

    def _media(self, sent: str, media, base_url: str) -> tuple[Callable[[Where], dict], dict]:
        plain, mimetype = decoded(media)
        kind = kind_of(mimetype)
        upload, direct_path = self.media.upload(plain, kind)

        def build(where: Where) -> dict:
            return payloads.media(sent, where, kind, upload, base_url + direct_path, direct_path, mimetype,
                                  filename=media.get("filename"), caption=media.get("caption"),
                                  ptt=bool(media.get("ptt")))

        return build, {"media": media}

    def _to_inbox(self, sent: str, sender: str, to: str, shown: dict) -> dict:
        kind = inbox_kind(shown["media"]) if "media" in shown else next(iter(shown))
        entry = {"id": sent, "from": sender, "to": to, "timestamp": int(time.time()), **shown, "kind": kind,
                 "status": "delivered"}
        self.phones.deliver_to_inbox(to, entry)
        return entry

    def device_sends(self, device_id: str, secret, data: dict, base_url: str) -> dict:
        """A linked device sends: the phone's inbox gets it (and its devices, if it is a line), and the
        sending line's devices get a Receipt DELIVERED at once."""
        device = self.devices.authenticate(device_id, secret)
        to = number(data.get("to"), "to")
        text, media = data.get("text"), data.get("media")
        if not text and not media:
            raise SimError(422, "invalid_text", "Send 'text' or 'media'.")
        sent = message_id()
        if text:
            build, shown = (lambda where: payloads.text(sent, where, text)), {"text": text}
        else:
            build, shown = self._media(sent, media, base_url)
        self.phones.know(to)
        entry = self._to_inbox(sent, device.line, to, shown)
        self.phones.record(sent, device.line, to=to)
        line = payloads.pn(device.line)
        self.devices.deliver(to, "Message", build(Where(chat=line, sender=line)))
        self.devices.deliver(device.line, "Receipt", notices.receipt(to, [sent], "delivered"))
        return {"id": sent, "timestamp": entry["timestamp"]}
