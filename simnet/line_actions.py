"""What a line's linked device does in a chat besides writing: it marks messages as read (blue
ticks), shows itself typing or recording, and asks whether a number is on WhatsApp.

The phones see it: ``read_by_line`` (phone -> ids of its messages a line read), ``chat_states``
(chat -> {line: composing | recording | paused}). A phone that is itself a line gets the matching
Receipt READ or ChatPresence on its devices. Every method runs with the network's lock held.
"""

from simnet import notices
from simnet.common import GROUP_SERVER, PN_SERVER, SimError, number
from simnet.devices import Devices
from simnet.groups import Groups
from simnet.messages import is_group
from simnet.phones import Phones

STATES = ("composing", "recording", "paused")


class LineActions:
    def __init__(self, devices: Devices, phones: Phones, groups: Groups):
        self.devices, self.phones, self.groups = devices, phones, groups
        self.read_by_line: dict[str, list[str]] = {}
        self.chat_states: dict[str, dict[str, str]] = {}

    def read(self, device_id: str, secret, chat, ids, sender) -> dict:
        """``{"chat", "ids", "sender"?}``: the line read those messages (in a group: ``sender``'s)."""
        line = self.devices.authenticate(device_id, secret).line
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            raise SimError(422, "invalid_ids", "'ids' is a non-empty list of message ids.")
        gid = None
        if is_group(chat):
            gid, _ = self.groups.member_or_not_in_group(chat, line)
            if sender is None:
                raise SimError(422, "invalid_sender", "In a group, 'sender' names the messages' author.")
            author = number(sender, "sender")
        else:
            author = number(chat, "chat") if sender is None else number(sender, "sender")
        seen = self.read_by_line.setdefault(author, [])
        seen.extend(i for i in dict.fromkeys(ids) if i not in seen)
        devices = self.devices.deliver(author, "Receipt", notices.receipt(line, ids, "read", gid))
        return {"ids": ids, "devices": devices}

    def presence(self, device_id: str, secret, to, state) -> dict:
        """``{"to", "state"}``: the line shows itself typing, recording or pausing in that chat."""
        line = self.devices.authenticate(device_id, secret).line
        if state not in STATES:
            raise SimError(422, "invalid_state", "'state' is composing, recording or paused.")
        if is_group(to):
            gid, members = self.groups.member_or_not_in_group(to, line)
            self.chat_states.setdefault(f"{gid}@{GROUP_SERVER}", {})[line] = state
            payload = notices.chat_presence(line, state, gid)
            return {"devices": sum(self.devices.deliver(m, "ChatPresence", payload) for m in members if m != line)}
        to = number(to, "to")
        self.chat_states.setdefault(to, {})[line] = state
        return {"devices": self.devices.deliver(to, "ChatPresence", notices.chat_presence(line, state))}

    def exists(self, device_id: str, secret, phone) -> dict:
        """Whether a number is on WhatsApp: one simnet knows (it joined, wrote, was written to, linked)."""
        self.devices.authenticate(device_id, secret)
        phone = number(phone, "number")
        known = phone in self.phones.known
        return {"number": phone, "exists": known, "jid": f"{phone}@{PN_SERVER}" if known else None}

    def chat_state(self, chat: str) -> dict:
        return dict(self.chat_states.get(chat, {}))

    def read_ids(self, phone: str) -> list[str]:
        return list(self.read_by_line.get(phone, []))

    def saved(self) -> dict:
        return {"read_by_line": self.read_by_line, "chat_states": self.chat_states}

    def load(self, state: dict) -> None:
        self.read_by_line = state.get("read_by_line", {})
        self.chat_states = state.get("chat_states", {})
