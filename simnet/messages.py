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
            gid, members = self.groups.member_or_not_in_group(target, line)
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
            build = self._on_target(kind, data[kind], sent, sender, to, gid, chat, shown, device)
        else:
            def author(quoted_sender: str | None):
                who = self._quoted_author(data.get("reply_to"), quoted_sender, sender, to, gid, device)
                return None if who is None else payloads.lid(who) if gid else payloads.pn(who)

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

    def _quoted_author(self, reply_to, quoted_sender, sender: str, to: str | None, gid: str | None,
                       device: bool) -> str | None:
        """Who a reply names as the quoted message's author (None: contextInfo.participant left out).
        A linked device names it as whatsmeow does: ``quoted_sender``, else the chat's contact, none in
        a group; one that contradicts simnet's record of a message of this chat is refused as
        ``unknown_message`` (that quote names no message there). A phone's client knows who wrote it."""
        given = number(quoted_sender, "quoted_sender") if quoted_sender else None
        if not device:
            return given or self.phones.author(reply_to) or to
        named = given or (None if gid else to)
        quoted = self.phones.in_chat(reply_to, sender, to, gid)
        if quoted is not None and named is not None and named != quoted["from"]:
            raise SimError(422, "unknown_message", "'quoted_sender' is not who wrote the quoted message of this "
                           "chat: that quote names no message.")
        return named

    def _on_target(self, kind: str, value, sent: str, sender: str, to: str | None, gid: str | None, chat,
                   shown: bool, device: bool) -> Callable[[Where], dict]:
        """A reaction (to any message of the chat), an edit or a revocation (of the sender's own):
        applied onto the inbox entry it names; where -> its payload."""
        if not isinstance(value, dict):
            raise SimError(422, f"invalid_{kind}", f"'{kind}' is an object with 'message_id'.")
        target_id = value.get("message_id")
        target = self.phones.target(target_id, sender, to, gid, own=kind != "reaction")
        if kind == "reaction":
            _check_key(value, target, sender, gid, required=device)
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


def _check_key(reaction: dict, target: dict, sender: str, gid: str | None, required: bool) -> None:
    """The key a reaction names (``from_me``, ``sender``: whatsmeow's BuildMessageKey inputs) against
    simnet's record of its message: ``from_me`` is whether ``sender`` wrote it, ``sender`` (when given)
    its author, needed in a group for another's message. A mismatch is ``unknown_message``: on WhatsApp
    that key names no message of the chat, and the reaction lands nowhere. A linked device must name
    them; a phone's client may leave them to simnet."""
    from_me, author = reaction.get("from_me"), reaction.get("sender")
    if from_me is None and author is None and not required:
        return
    if not isinstance(from_me, bool):
        raise SimError(422, "invalid_reaction", "'reaction.from_me' is true or false: whether the line wrote the "
                       "message.")
    author = None if author is None else number(author, "reaction.sender")
    if (from_me != (target["from"] == sender) or (author is not None and author != target["from"])
            or (gid and not from_me and author is None)):
        raise SimError(422, "unknown_message", "The reaction's key (from_me, sender) names no message of this chat.")
