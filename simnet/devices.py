"""Linked devices: their credentials, the events held for them, their connections and refusals.

Every method runs with the network's lock held (``changed`` is its condition). A device's events
are ``{"type": "event", "source": <whatsmeow event name>, "seq", "payload"}``, kept until the device
acknowledges them (at-least-once). A connection (``connect``) has an id; a poll naming a connection
that was ended (a ban, another client taking the session) gets one ``{"type": "offline", …}``.
"""

import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field

from neonize.proto.Neonize_pb2 import TemporaryBan

from simnet.common import SimError

BAN_CODES = {v.name: v.number for v in TemporaryBan.DESCRIPTOR.fields_by_name["Code"].enum_type.values}
DEFAULT_BAN_CODE = "SENT_TOO_MANY_SAME_MESSAGE"
KEEP_ENDED = 8  # ended connections remembered per device, for their last poll


@dataclass
class Device:
    id: str
    secret: str
    line: str
    events: list[dict] = field(default_factory=list)
    next_seq: int = 1
    acked: int = 0
    sources: list[str] | None = None  # the events it asked for at its last connect; None: all
    live: str | None = None  # the id of its current connection (not saved: connections die with simnet)
    ended: dict[str, dict] = field(default_factory=dict)  # connection id -> the notice that ended it

    def saved(self) -> dict:
        return {"secret": self.secret, "line": self.line, "events": self.events, "next_seq": self.next_seq,
                "acked": self.acked, "sources": self.sources}


def _upgraded(event: dict) -> dict:
    """Entries saved before events had a source were all messages."""
    if event.get("type") == "message":
        return {"type": "event", "source": "Message", "seq": event["seq"], "payload": event["payload"]}
    return event


class Devices:
    def __init__(self, changed: threading.Condition):
        self._changed = changed
        self.devices: dict[str, Device] = {}
        self.unlinked: dict[str, str] = {}  # device id -> reason, so a returning device learns why
        self.bans: dict[str, dict] = {}  # line -> {"until": unix time, "code": TempBanReason name}
        self.outdated: set[str] = set()  # lines whose connects are refused as client_outdated

    def link(self, line: str) -> dict:
        device = Device(id=uuid.uuid4().hex, secret=secrets.token_urlsafe(24), line=line)
        self.devices[device.id] = device
        return {"device_id": device.id, "secret": device.secret, "line": line}

    def of_line(self, line: str) -> list[Device]:
        return [d for d in self.devices.values() if d.line == line]

    def deliver(self, line: str, source: str, payload: dict) -> int:
        """Hold an event for every device linked to ``line`` that asked for its kind; how many."""
        held = 0
        for device in self.of_line(line):
            if device.sources is None or source in device.sources:
                device.events.append({"type": "event", "source": source, "seq": device.next_seq, "payload": payload})
                device.next_seq += 1
                held += 1
        return held

    def authenticate(self, device_id: str, secret) -> Device:
        device = self.devices.get(device_id)
        if device is None or not isinstance(secret, str) or not secrets.compare_digest(device.secret, secret):
            raise SimError(401, "logged_out", self.unlinked.get(device_id, "logged_out"))
        return device

    def connect(self, device_id: str, secret, sources) -> dict:
        device = self.authenticate(device_id, secret)
        self._refuse(device.line)
        if sources is not None:
            if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
                raise SimError(422, "invalid_sources", "'sources' is a list of whatsmeow event names.")
            device.sources = sorted(set(sources))
        if device.live:  # a second connection of the same device: WhatsApp ends the first one
            self._end(device, {"type": "offline", "reason": "stream_replaced"})
        device.live = uuid.uuid4().hex
        return {"acked": device.acked, "connection": device.live}

    def _refuse(self, line: str) -> None:
        ban = self.bans.get(line)
        if ban and ban["until"] > time.time():
            raise SimError(403, "temporary_ban", "This number is banned from WhatsApp for a while.",
                           expires_in=int(ban["until"] - time.time()) + 1, ban_code=ban["code"])
        if line in self.outdated:
            raise SimError(403, "client_outdated", "WhatsApp refuses this client version; update it.")

    def events(self, device_id: str, secret, after: int, timeout: float, connection: str | None) -> list[dict]:
        """Events after ``after``; asking for them acknowledges (and forgets) everything up to it."""
        deadline = time.monotonic() + timeout
        device = self.authenticate(device_id, secret)
        if after > device.acked:
            device.events = [e for e in device.events if e["seq"] > after]
            device.acked = after
        while True:
            if device_id not in self.devices:
                return [{"type": "logged_out", "seq": after, "reason": self.unlinked.get(device_id)}]
            if connection and connection in device.ended:
                return [device.ended.pop(connection)]
            if connection and connection != device.live:
                raise SimError(409, "not_connected", "This connection is not open (simnet restarted?): connect again.")
            pending = [e for e in device.events if e["seq"] > after]
            wait = deadline - time.monotonic()
            if pending or wait <= 0:
                return pending
            self._changed.wait(wait)

    def _end(self, device: Device, notice: dict) -> None:
        if device.live:
            device.ended[device.live] = notice
            while len(device.ended) > KEEP_ENDED:
                device.ended.pop(next(iter(device.ended)))
            device.live = None

    def ban(self, line: str, seconds, code) -> dict:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise SimError(422, "invalid_seconds", "'seconds' is a positive number.")
        code = DEFAULT_BAN_CODE if code is None else str(code).upper()
        if code not in BAN_CODES:
            raise SimError(422, "invalid_ban_code", f"'code' is one of {', '.join(BAN_CODES)}.")
        self.bans[line] = {"until": time.time() + seconds, "code": code}
        notice = {"type": "offline", "reason": "temporary_ban", "expires_in": int(seconds), "ban_code": code}
        return {"ended": self._end_line(line, notice), "code": code}

    def replace(self, line: str) -> dict:
        return {"ended": self._end_line(line, {"type": "offline", "reason": "stream_replaced"})}

    def set_outdated(self, line: str, outdated) -> dict:
        if not isinstance(outdated, bool):
            raise SimError(422, "invalid_outdated", "'outdated' is true or false.")
        ended = 0
        if outdated:
            self.outdated.add(line)
            ended = self._end_line(line, {"type": "offline", "reason": "client_outdated"})
        else:
            self.outdated.discard(line)
        return {"outdated": outdated, "ended": ended}

    def _end_line(self, line: str, notice: dict) -> int:
        live = [d for d in self.of_line(line) if d.live]
        for device in live:
            self._end(device, dict(notice))
        return len(live)

    def remove(self, device_id: str, reason: str) -> None:
        self.devices.pop(device_id, None)
        self.unlinked[device_id] = reason

    def unlink(self, line: str) -> int:
        """The phone logs its linked devices out (WhatsApp -> Linked devices -> Log out)."""
        linked = [d.id for d in self.of_line(line)]
        for device_id in linked:
            self.remove(device_id, "logged_out")
        return len(linked)

    # --- persistence ---

    def saved(self) -> dict:
        return {"devices": {d.id: d.saved() for d in self.devices.values()}, "unlinked": self.unlinked,
                "bans": self.bans, "outdated": sorted(self.outdated)}

    def load(self, state: dict) -> None:
        self.devices = {}
        for device_id, saved in state.get("devices", {}).items():
            device = Device(id=device_id, **saved)
            device.events = [_upgraded(e) for e in device.events]
            self.devices[device_id] = device
        self.unlinked = state.get("unlinked", {})
        self.bans = state.get("bans", {})
        self.outdated = set(state.get("outdated", []))
