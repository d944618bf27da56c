"""The phones: who is on WhatsApp (and their LIDs), what the gateway sent each one (its inbox), the
messages of every chat (for reactions, edits and read receipts), and what a phone does in its chat
with a line besides writing: reading, calling, typing, coming online.

Every method runs with the network's lock held.
"""

import secrets

from simnet import notices, payloads
from simnet.common import SimError, lid_of, message_id, number
from simnet.devices import Devices
from simnet.inbox import Inboxes


class Phones:
    def __init__(self, devices: Devices):
        self.devices = devices
        self.known: dict[str, str] = {}  # number -> LID user
        self.by_lid: dict[str, str] = {}  # LID user -> number: the network's LID store
        self.inboxes = Inboxes()
        self.messages: dict[str, dict] = {}  # id -> {"from", "to" | "group"}: every chat's messages
        self.calls: dict[str, tuple[str, str]] = {}  # call id -> (caller, line)

    def know(self, phone: str) -> str:
        """The phone is on WhatsApp (it joined, sent, scanned or was written to); its LID."""
        lid = self.known.get(phone)
        if lid is None:
            lid = self.known[phone] = lid_of(phone)
            self.by_lid[lid] = phone
        return lid

    def join(self, phone) -> dict:
        phone = number(phone, "number")
        return {"number": phone, "lid": self.know(phone)}

    def get(self, phone: str) -> dict:
        if phone not in self.known:
            raise SimError(404, "unknown_phone", "No phone with this number is on WhatsApp.")
        return {"number": phone, "lid": self.known[phone]}

    def phone_for_lid(self, lid: str) -> dict:
        if lid not in self.by_lid:
            raise SimError(404, "unknown_lid", "The LID store knows no phone behind this LID.")
        return {"phone": self.by_lid[lid]}

    # --- chats ---

    def record(self, message: str, sender: str, to: str | None = None, group: str | None = None) -> None:
        self.messages[message] = {"from": sender, "to": to} if group is None else {"from": sender, "group": group}

    def target(self, target_id, sender: str, to: str | None, group: str | None, own: bool) -> dict:
        """A message of the chat (``own``: one ``sender`` wrote) that a reaction, edit or revocation names."""
        found = self.in_chat(target_id, sender, to, group)
        if found is None or (own and found["from"] != sender):
            whose = "that this phone sent " if own else ""
            raise SimError(422, "unknown_message", f"'message_id' names no message {whose}in this chat.")
        return found

    def in_chat(self, message, sender: str, to: str | None, group: str | None) -> dict | None:
        """simnet's record of a message of the chat ``sender`` writes in (``to`` or ``group``), or None."""
        found = self.messages.get(message) if isinstance(message, str) else None
        if found is None:
            return None
        if group is not None:
            return found if found.get("group") == group else None
        return found if {found["from"], found.get("to")} == {sender, to} else None

    def author(self, message: str) -> str | None:
        found = self.messages.get(message) if isinstance(message, str) else None
        return found["from"] if found else None

    def inbox(self, phone: str) -> list[dict]:
        return self.inboxes.of_phone(phone)

    # --- what a phone does in its chat with a line ---

    def _chat(self, phone, line) -> tuple[str, str]:
        phone, line = number(phone, "number"), number(line, "line")
        self.know(phone)
        return phone, line

    def read(self, phone, line, ids, kind) -> dict:
        """The phone reads (or plays) messages the line sent it: a Receipt to the line's devices."""
        phone, line = self._chat(phone, line)
        kind = kind or "read"
        if kind not in ("read", "played"):
            raise SimError(422, "invalid_type", "'type' is read or played.")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise SimError(422, "invalid_ids", "'ids' is a non-empty list of message ids.")
        entries = self.inboxes.from_line(phone, line)
        unknown = [i for i in ids if i not in entries]
        if unknown:
            raise SimError(422, "unknown_message", f"The line sent this phone no message {unknown[0]}.")
        for i in ids:
            entries[i]["status"] = kind
        return {"ids": ids, "devices": self.devices.deliver(line, "Receipt", notices.receipt(phone, ids, kind))}

    def call(self, phone, line) -> dict:
        phone, line = self._chat(phone, line)
        call_id = secrets.token_hex(16).upper()
        self.calls[call_id] = (phone, line)
        return {"call_id": call_id,
                "devices": self.devices.deliver(line, "CallOffer", notices.call_offer(phone, call_id))}

    def hangup(self, phone, line, call_id, reason) -> dict:
        phone, line = self._chat(phone, line)
        if not isinstance(call_id, str) or self.calls.get(call_id) != (phone, line):
            raise SimError(404, "unknown_call", "This phone is in no such call with the line.")
        if reason is not None and not isinstance(reason, str):
            raise SimError(422, "invalid_reason", "'reason' is a string such as timeout.")
        del self.calls[call_id]
        payload = notices.call_terminate(phone, call_id, reason or "timeout")
        return {"call_id": call_id, "devices": self.devices.deliver(line, "CallTerminate", payload)}

    def typing(self, phone, line, state) -> dict:
        phone, line = self._chat(phone, line)
        if state not in ("composing", "paused", "recording"):
            raise SimError(422, "invalid_state", "'state' is composing, paused or recording.")
        return {"devices": self.devices.deliver(line, "ChatPresence", notices.chat_presence(phone, state))}

    def presence(self, phone, line, available) -> dict:
        phone, line = self._chat(phone, line)
        if not isinstance(available, bool):
            raise SimError(422, "invalid_available", "'available' is true or false.")
        return {"devices": self.devices.deliver(line, "Presence", notices.presence(phone, available))}

    def undecryptable(self, phone, line) -> dict:
        phone, line = self._chat(phone, line)
        sent = message_id()
        payload = payloads.undecryptable(sent, payloads.Where(chat=payloads.pn(phone), sender=payloads.pn(phone)))
        return {"id": sent, "devices": self.devices.deliver(line, "UndecryptableMessage", payload)}

    # --- persistence ---

    def saved(self) -> dict:
        return {"phones": sorted(self.known), **self.inboxes.saved(), "messages": self.messages}

    def load(self, state: dict) -> None:
        for phone in state.get("phones", []):
            self.know(phone)
        self.inboxes.load(state)
        self.messages = state.get("messages", {})
