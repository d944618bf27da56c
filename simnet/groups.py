"""Groups: LID-addressed like WhatsApp's new ones (members listed by LID, with their phone numbers).
Member lines' devices get JoinedGroup when they join and GroupInfo when the group changes.

Every method runs with the network's lock held.
"""

import secrets
import time

from simnet import notices
from simnet.common import GROUP, GROUP_SERVER, SimError, number
from simnet.devices import Devices
from simnet.phones import Phones


def group_id(value) -> str:
    """``120363…`` from ``120363…@g.us`` or itself; a 404 for anything else."""
    bare = value.removesuffix("@" + GROUP_SERVER) if isinstance(value, str) else ""
    if not GROUP.fullmatch(bare):
        raise SimError(404, "unknown_group", "No such group.")
    return bare


def _numbers(values, name: str) -> list[str]:
    if not isinstance(values, list):
        raise SimError(422, f"invalid_{name}", f"'{name}' is a list of phone numbers.")
    return list(dict.fromkeys(number(v, name) for v in values))


class Groups:
    def __init__(self, devices: Devices, phones: Phones):
        self.devices = devices
        self.phones = phones
        self.groups: dict[str, dict] = {}

    def get(self, gid) -> tuple[str, dict]:
        gid = group_id(gid)
        if gid not in self.groups:
            raise SimError(404, "unknown_group", "No such group.")
        return gid, self.groups[gid]

    def create(self, name, members, owner=None) -> dict:
        if not isinstance(name, str) or not name.strip():
            raise SimError(422, "invalid_name", "'name' is the group's name, not empty.")
        members = _numbers(members, "members")
        owner = members[0] if owner is None and members else number(owner, "owner")
        if not members:
            raise SimError(422, "invalid_members", "A group has at least one member.")
        if owner not in members:
            members.insert(0, owner)
        gid = "120363" + "".join(secrets.choice("0123456789") for _ in range(12))
        now = int(time.time())
        info = self.groups[gid] = {"name": name, "owner": owner, "members": members, "created": now,
                                   "name_set_at": now, "version": 1}
        for member in members:
            self.phones.know(member)
        payload = notices.joined_group(gid, info, by=owner, new=True)
        devices = sum(self.devices.deliver(m, "JoinedGroup", payload) for m in members)
        return {"id": f"{gid}@{GROUP_SERVER}", "devices": devices}

    def rename(self, gid, name, by=None) -> dict:
        gid, info = self.get(gid)
        if not isinstance(name, str) or not name.strip():
            raise SimError(422, "invalid_name", "'name' is the group's name, not empty.")
        by = self._member(info, by)
        info.update(name=name, name_set_at=int(time.time()))
        payload = notices.group_change(gid, by, name=name)
        return {"id": f"{gid}@{GROUP_SERVER}",
                "devices": sum(self.devices.deliver(m, "GroupInfo", payload) for m in info["members"])}

    def change_members(self, gid, add, remove, by=None) -> dict:
        gid, info = self.get(gid)
        add, remove = _numbers(add or [], "add"), _numbers(remove or [], "remove")
        by = self._member(info, by)
        if not add and not remove:
            raise SimError(422, "invalid_members", "Name members to 'add' or 'remove'.")
        if any(m in info["members"] for m in add):
            raise SimError(422, "already_member", "A number in 'add' is already a member.")
        if any(m not in info["members"] for m in remove):
            raise SimError(422, "not_a_member", "A number in 'remove' is not a member.")
        before = list(info["members"])
        info["members"] = [m for m in before if m not in remove] + add
        info["version"] = info.get("version", 1) + 1
        if info["owner"] in remove and info["members"]:  # WhatsApp hands the group to another member
            info["owner"] = info["members"][0]
        for member in add:
            self.phones.know(member)
        change = notices.group_change(gid, by, join=add, leave=remove)
        # The members before the change are told, those removed among them.
        devices = sum(self.devices.deliver(m, "GroupInfo", change) for m in before)
        joined = notices.joined_group(gid, info, by=by, new=False)
        devices += sum(self.devices.deliver(m, "JoinedGroup", joined) for m in add)
        return {"id": f"{gid}@{GROUP_SERVER}", "members": info["members"], "devices": devices}

    def _member(self, info: dict, by) -> str:
        by = info["owner"] if by is None else number(by, "by")
        if by not in info["members"]:
            raise SimError(422, "not_a_member", "Only a member changes the group.")
        return by

    def members(self, gid, poster: str) -> tuple[str, list[str]]:
        """(the group id, its members) for ``poster`` to write in; a 422 when it is not a member."""
        gid, info = self.get(gid)
        if poster not in info["members"]:
            raise SimError(422, "not_a_member", "Only a member posts in a group.")
        return gid, list(info["members"])

    def member_or_not_in_group(self, gid, line: str) -> tuple[str, list[str]]:
        """(the group id, its members) for a line's device acting in a group: 422 ``not_in_group`` when
        there is no such group or the line is not a member (the engines' refusal, as WhatsApp has it)."""
        try:
            return self.members(gid, line)
        except SimError:
            raise SimError(422, "not_in_group", "The line is not a member of this group, or there is no such "
                           "group.") from None

    def saved(self) -> dict:
        return {"groups": self.groups}

    def load(self, state: dict) -> None:
        self.groups = state.get("groups", {})
