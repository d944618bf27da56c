"""Messages: a phone writes to a line, to a contact from a line's own phone, or in a group; a line's
linked device sends to a phone or in a group it is in. Any content of content.py, a reply included.

Who sees what, as WhatsApp: the recipient line's devices get the message (chat and sender = the
writer); a line's own phone writing is seen by its linked devices too, with IsFromMe; in a group
every member line's devices get it with chat = the group and sender = the writer's LID. What a line
sends shows in the recipient phone's inbox (or the group's, inbox.py), a reaction, edit or
revocation applied onto the message it names; the sending device gets a Receipt DELIVERED from each
recipient. Media is encrypted once and uploaded to simnet's media server; every copy carries the
same reference. Every method runs with the network's lock held.
"""

import time
from collections.abc import Callable

from simnet import content, notices, payloads
from simnet.common import GROUP, GROUP_SERVER, SimError, message_id, number
from simnet.devices import Devices
from simnet.groups import Groups
from simnet.media import MediaServer
from simnet.payloads import Where
from simnet.phones import Phones

CONTENTS = content.CONTENTS


def is_group(value) -> bool:
    return isinstance(value, str) and bool(GROUP.fullmatch(value.removesuffix("@" + GROUP_SERVER)))


class Messages:
    def __init__(self, devices: Devices, phones: Phones, groups: Groups, media: MediaServer):
        self.devices, self.phones, self.groups, self.media = devices, phones, groups, media

    def phone_sends(self, data: dict, base_url: str) -> dict:
        """POST /messages: ``from`` writes ``to`` a number, or in a ``group``."""
        sender = number(data.get("from"), "from")
        if data.get("group") is not None:
            gid, members = self.groups.members(data["group"], sender)
            to = None
        else:
            gid, members, to = None, [], number(data.get("to"), "to")
        # Only a line's messages are shown in inboxes (its own phone writing): the gateway's world.
        sent, _, reached = self._post(sender, to, gid, members, data, base_url, device=False,
                                      shown=bool(self.devices.of_line(sender)))
        return {"id": sent, "devices": reached}

    def device_sends(self, device_id: str, secret, data: dict, base_url: str) -> dict:
        """A linked device sends ``to`` a number or a group JID it is a member of (else 422
        ``not_in_group``)."""
        device = self.devices.authenticate(device_id, secret)
        line, target = device.line, data.get("to")
        if is_group(target):
            try:
                gid, members = self.groups.members(target, line)
            except SimError:
                raise SimError(422, "not_in_group", "The line is not a member of this group, or there is no such "
                               "group.") from None
            to = None
        else:
            gid, members, to = None, [], number(target, "to")
        sent, timestamp, _ = self._post(line, to, gid, members, data, base_url, device=True, shown=True)
        for recipient in [m for m in members if m != line] if gid else [to]:
            self.devices.deliver(line, "Receipt", notices.receipt(recipient, [sent], "delivered", gid))
        return {"id": sent, "timestamp": timestamp}

    def _post(self, sender: str, to: str | None, gid: str | None, members: list[str], data: dict, base_url: str,
              device: bool, shown: bool) -> tuple[str, int, int]:
        """Check, deliver and show one message: (its id, its time, how many devices got it)."""
        kind, sent, now = content.field_of(data), message_id(), int(time.time())
        chat = payloads.group(gid) if gid else payloads.pn(to)
        if gid:
            receivers = [(m, Where(chat=chat, sender=payloads.lid(sender), is_group=True)) for m in members
                         if m != sender]
            own = Where(chat=chat, sender=payloads.lid(sender), from_me=True, is_group=True)
        else:
            receivers = [(to, Where(chat=payloads.pn(sender), sender=payloads.pn(sender)))]
            own = Where(chat=chat, sender=payloads.pn(sender), from_me=True)
        if kind in content.ON_TARGET:
            build = self._on_target(kind, data[kind], sent, sender, to, gid, chat, shown)
        else:
            def author(quoted_sender: str | None):
                who = (number(quoted_sender, "quoted_sender") if quoted_sender else
                       self.phones.author(data.get("reply_to")) or to or sender)
                return payloads.lid(who) if gid else payloads.pn(who)

            context, quoted = content.reply(data, author)
            made = content.new_message(kind, data[kind], sent, context, self.media, base_url, strict=device)
            build = made.build
            if shown:
                now = self.phones.inboxes.add(sent, sender, to, gid, made.kind, {**made.shown, **quoted})["timestamp"]
            self.phones.record(sent, sender, to=to, group=gid)
        self.phones.know(sender)
        if to:
            self.phones.know(to)
        reached = sum(self.devices.deliver(line, "Message", build(where)) for line, where in receivers)
        if not device and self.devices.of_line(sender):  # the line's own phone wrote: its linked devices see it
            self.devices.deliver(sender, "Message", build(own))
        return sent, now, reached

    def _on_target(self, kind: str, value, sent: str, sender: str, to: str | None, gid: str | None, chat,
                   shown: bool) -> Callable[[Where], dict]:
        """A reaction (to any message of the chat), an edit or a revocation (of the sender's own):
        applied onto the inbox entry it names; where -> its payload."""
        if not isinstance(value, dict):
            raise SimError(422, f"invalid_{kind}", f"'{kind}' is an object with 'message_id'.")
        target_id = value.get("message_id")
        target = self.phones.target(target_id, sender, to, gid, own=kind != "reaction")
        author = payloads.lid(target["from"]) if gid else payloads.pn(target["from"])
        key = payloads.key(chat, target_id, from_me=target["from"] == sender, participant=author if gid else None)
        inboxes = self.phones.inboxes
        if kind == "reaction":
            emoji = value.get("emoji")
            if not isinstance(emoji, str):
                raise SimError(422, "invalid_reaction", "'reaction.emoji' is a string ('' removes it).")
            inboxes.react(sent, sender, to, gid, target_id, emoji, standalone=shown)
            return lambda where: payloads.reaction(sent, where, key, emoji)
        if kind == "edit":
            body = value.get("text")
            if not isinstance(body, str) or not body:
                raise SimError(422, "invalid_edit", "'edit.text' is the new text, not empty.")
            inboxes.edit(sender, to, gid, target_id, body)
            return lambda where: payloads.edit(sent, where, key, body)
        inboxes.revoke(sender, to, gid, target_id)
        return lambda where: payloads.revoke(sent, where, key)
