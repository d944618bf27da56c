"""What the phones show of the lines' messages: one inbox per phone (a line's messages to it) and
one per group (what lines posted there), as the phone's screen would show them.

An entry: ``{"id", "from", "to", "timestamp", "status": "delivered" | "read" | "played", "kind", …}``
with its content (``text``; ``media`` ``{"data", "mimetype", "filename"?, "caption"?, "ptt", "seconds"?,
"sha256"}``; ``location``; ``contact``), ``reply_to`` (and ``quoted_text``) on a reply, and ``group`` in a
group's inbox. A reaction, an edit or a revocation is applied onto the entry it names, as the phone
shows it: ``reactions`` ``{reactor: emoji}``, ``edited``, ``revoked`` (the content is gone). A reaction
on a message that is no entry (one the phone wrote itself) is an entry of its own, kind
``reaction``, ``reaction`` ``{"message_id", "emoji"}``: the phone shows it under its own message.

Every method runs with the network's lock held.
"""

import time

CONTENT_FIELDS = ("text", "media", "location", "contact", "quoted_text")


class Inboxes:
    def __init__(self):
        self.phones: dict[str, list[dict]] = {}
        self.groups: dict[str, list[dict]] = {}  # group id (bare) -> entries

    def _of(self, phone: str | None, group: str | None) -> list[dict]:
        return self.groups.setdefault(group, []) if group else self.phones.setdefault(phone, [])

    def add(self, message_id: str, sender: str, to: str | None, group: str | None, kind: str, shown: dict) -> dict:
        """A new message of ``sender`` in the phone ``to``'s inbox, or in the group's."""
        entry = {"id": message_id, "from": sender, "to": f"{group}@g.us" if group else to,
                 "timestamp": int(time.time()), **shown, "kind": kind, "status": "delivered"}
        if group:
            entry["group"] = f"{group}@g.us"
        self._of(to, group).append(entry)
        return entry

    def _find(self, target: str, places: list[list[dict]]) -> dict | None:
        return next((e for entries in places for e in entries if e["id"] == target and e["kind"] != "reaction"),
                    None)

    def _places(self, sender: str, to: str | None, group: str | None) -> list[list[dict]]:
        """The inboxes of a chat: the group's, or both sides of a chat between two numbers."""
        if group:
            return [self.groups.get(group, [])]
        return [self.phones.get(to, []), self.phones.get(sender, [])]

    def react(self, reaction_id: str, sender: str, to: str | None, group: str | None, target: str, emoji: str,
              standalone: bool) -> None:
        entry = self._find(target, self._places(sender, to, group))
        if entry is not None:
            reactions = dict(entry.get("reactions") or {})
            reactions.pop(sender, None)
            if emoji:
                reactions[sender] = emoji
            if reactions:
                entry["reactions"] = reactions
            else:
                entry.pop("reactions", None)
            return
        if not standalone:
            return
        entries = self._of(to, group)
        shown = next((e for e in entries if e["kind"] == "reaction" and e["from"] == sender
                      and e["reaction"]["message_id"] == target), None)
        if shown is not None and not emoji:  # taken back: the phone no longer shows it
            entries.remove(shown)
        elif shown is not None:
            shown["reaction"]["emoji"] = emoji
        elif emoji:
            self.add(reaction_id, sender, to, group, "reaction", {"reaction": {"message_id": target, "emoji": emoji}})

    def edit(self, sender: str, to: str | None, group: str | None, target: str, text: str) -> None:
        entry = self._find(target, self._places(sender, to, group))
        if entry is None or entry["from"] != sender or entry.get("revoked"):
            return
        if "text" in entry:
            entry["text"] = text
        elif "media" in entry:
            entry["media"]["caption"] = text
        entry["edited"] = True

    def revoke(self, sender: str, to: str | None, group: str | None, target: str) -> None:
        entry = self._find(target, self._places(sender, to, group))
        if entry is None or entry["from"] != sender:
            return
        for name in CONTENT_FIELDS:
            entry.pop(name, None)
        entry["revoked"] = True

    def from_line(self, phone: str, line: str) -> dict[str, dict]:
        """The phone's entries from ``line``, by id (for its read receipts)."""
        return {e["id"]: e for e in self.phones.get(phone, []) if e.get("from") == line}

    def of_phone(self, phone: str) -> list[dict]:
        return [_copy(e) for e in self.phones.get(phone, [])]

    def of_group(self, group: str) -> list[dict]:
        return [_copy(e) for e in self.groups.get(group, [])]

    def saved(self) -> dict:
        return {"inboxes": self.phones, "group_inboxes": self.groups}

    def load(self, state: dict) -> None:
        self.phones = state.get("inboxes", {})
        self.groups = state.get("group_inboxes", {})


def _copy(entry: dict) -> dict:
    """A copy the caller may change without changing the inbox."""
    return {k: dict(v) if isinstance(v, dict) else v for k, v in entry.items()}
