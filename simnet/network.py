"""The simulated WhatsApp network: pairing sessions, linked devices, phones and their inboxes.

It stands for the outside world, so its state is its own: in memory, saved to a JSON file under its
own folder after every change (linked devices must survive a restart, as WhatsApp's do). Pairing
sessions are not saved: like WhatsApp's QR refs they die with the connection that asked for them.

Over ~250 lines (~320) for now: one lock guards the whole network's state, and pairing, devices and
inboxes change together under it. Issue 12's inbound kinds (media, groups, receipts) will need it
split by concept (pairing, devices, phones), each behind the same lock.
"""

import json
import os
import re
import secrets
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from simnet import payloads

LINE = re.compile(r"[1-9][0-9]{6,14}")
QR_PREFIX = "https://wa.me/settings/linked_devices#"


class SimError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass
class QrSchedule:
    """Like WhatsApp: the first code lives longer, then shorter ones, a handful in all."""

    first: float = 60.0
    following: float = 20.0
    count: int = 6

    def window(self, elapsed: float) -> tuple[int, float]:
        """(index of the code showing now, seconds until it expires); index >= count: all used up."""
        if elapsed < self.first:
            return 0, self.first - elapsed
        index = 1 + int((elapsed - self.first) // self.following)
        remaining = self.first + index * self.following - elapsed
        if remaining <= 0:  # float division can land exactly on a boundary: that code is already over
            index, remaining = index + 1, remaining + self.following
        return index, remaining


@dataclass
class PairingSession:
    id: str
    keys: dict
    started: float
    refs: list[str]
    device: dict | None = None
    polling: int = 0  # long polls open now: the device's "connection"
    last_seen: float = 0.0
    pair_code: tuple[str, str] | None = None  # (line, code) while a phone may link by typing the code


# A pairing device that has not polled for this long has gone away; its codes die with it.
PAIRING_LIVENESS_SECONDS = 2.0


@dataclass
class Device:
    id: str
    secret: str
    line: str
    events: list[dict] = field(default_factory=list)
    next_seq: int = 1
    acked: int = 0


class Network:
    def __init__(self, state_dir: Path, schedule: QrSchedule | None = None):
        self.state_dir = Path(state_dir)
        self.schedule = schedule or QrSchedule()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._sessions: dict[str, PairingSession] = {}
        self.devices: dict[str, Device] = {}
        self.unlinked: dict[str, str] = {}  # device id -> reason, so a returning device learns why
        self.inboxes: dict[str, list[dict]] = {}
        self._dirty = threading.Event()
        self._load()
        threading.Thread(target=self._save_when_dirty, name="simnet-saver", daemon=True).start()

    # --- pairing ---

    def begin_pairing(self, keys: dict) -> str:
        now = time.monotonic()
        session = PairingSession(id=uuid.uuid4().hex, keys=keys, started=now, last_seen=now,
                                 refs=[secrets.token_urlsafe(18) for _ in range(self.schedule.count)])
        with self._lock:
            self._sessions[session.id] = session
        return session.id

    def pairing_events(self, session_id: str, seen: int, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._changed:
            session = self._sessions.get(session_id)
            if session is None:
                raise SimError(404, "unknown_session", "No such pairing session.")
            session.polling += 1
            try:
                return self._next_pairing_events(session, seen, deadline)
            finally:
                session.polling -= 1
                session.last_seen = time.monotonic()

    def _next_pairing_events(self, session: PairingSession, seen: int, deadline: float) -> list[dict]:
        """Called with the lock held; waits (releasing it) until there is something to tell."""
        while True:
            if session.device is not None:
                self._sessions.pop(session.id, None)
                return [{"type": "paired", "device": session.device}]
            index, remaining = self.schedule.window(time.monotonic() - session.started)
            if index >= self.schedule.count:
                self._sessions.pop(session.id, None)
                return [{"type": "timeout"}]
            if index > seen:
                return [{"type": "qr", "index": index, "ref": session.refs[index], "expires_in": round(remaining, 3)}]
            wait = min(remaining, deadline - time.monotonic())
            if wait <= 0:
                return []
            self._changed.wait(wait)

    def end_pairing(self, session_id: str) -> None:
        """The device closed its connection: its codes are no longer valid."""
        with self._changed:
            self._sessions.pop(session_id, None)

    def request_pair_code(self, session_id: str, line: str) -> str:
        """The device asks for a code that the phone with this number can type instead of scanning."""
        if not LINE.fullmatch(line or ""):
            raise SimError(422, "invalid_line", "The phone number is international, digits only, no '+'.")
        letters = "ABCDEFGHJKLMNPQRSTVWXYZ"
        code = "".join(secrets.choice(letters) for _ in range(4)) + "-" + "".join(
            secrets.choice(letters) for _ in range(4))
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or not self._alive(session):
                raise SimError(404, "unknown_session", "No such pairing session.")
            session.pair_code = (line, code)
        return code

    def enter_pair_code(self, line: str, code: str) -> str:
        """The phone with number ``line`` types ``code``: the device that asked for it pairs."""
        with self._changed:
            session = next((s for s in self._sessions.values() if s.pair_code == (line, code)), None)
            if session is None or session.device is not None or not self._alive(session):
                raise SimError(404, "unknown_code", "This code belongs to no device that is pairing with this phone.")
            return self._pair(session, line)

    def _alive(self, session: PairingSession) -> bool:
        return session.polling > 0 or time.monotonic() - session.last_seen < PAIRING_LIVENESS_SECONDS

    def scan(self, line: str, qr: str) -> str:
        """A phone with number ``line`` scans ``qr``: the showing session pairs with it."""
        if not LINE.fullmatch(line or ""):
            raise SimError(422, "invalid_line", "The phone number is international, digits only, no '+'.")
        ref = (qr or "").removeprefix(QR_PREFIX).split(",")[0]
        with self._changed:
            session = next((s for s in self._sessions.values() if ref in s.refs), None)
            if session is None or session.device is not None or not self._alive(session):
                raise SimError(404, "unknown_qr", "This code belongs to no device that is pairing now.")
            index, _ = self.schedule.window(time.monotonic() - session.started)
            if session.refs.index(ref) != index:
                raise SimError(422, "qr_expired", "This code has expired; scan the one on screen now.")
            return self._pair(session, line)

    def _pair(self, session: PairingSession, line: str) -> str:
        """Called with the lock held: link a new device for ``line`` to the pairing session."""
        device = Device(id=uuid.uuid4().hex, secret=secrets.token_urlsafe(24), line=line)
        self.devices[device.id] = device
        session.device = {"device_id": device.id, "secret": device.secret, "line": line}
        self._save()
        self._changed.notify_all()
        return device.id

    # --- a linked device ---

    def _device(self, device_id: str, secret: str) -> Device:
        device = self.devices.get(device_id)
        if device is None or not secrets.compare_digest(device.secret, secret or ""):
            reason = self.unlinked.get(device_id, "logged_out")
            raise SimError(401, "logged_out", reason)
        return device

    def connect(self, device_id: str, secret: str) -> int:
        with self._lock:
            return self._device(device_id, secret).acked

    def device_events(self, device_id: str, secret: str, after: int, timeout: float) -> list[dict]:
        """Events after ``after``; asking for them acknowledges (and forgets) everything up to it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            device = self._device(device_id, secret)
            if after > device.acked:
                device.events = [e for e in device.events if e["seq"] > after]
                device.acked = after
                self._save()
            while True:
                if device_id not in self.devices:
                    return [{"type": "logged_out", "seq": after, "reason": self.unlinked.get(device_id)}]
                pending = [e for e in device.events if e["seq"] > after]
                wait = deadline - time.monotonic()
                if pending or wait <= 0:
                    return pending
                self._changed.wait(wait)

    def logout(self, device_id: str, secret: str) -> None:
        with self._changed:
            self._device(device_id, secret)
            self._remove(device_id, "logged_out")

    def _remove(self, device_id: str, reason: str) -> None:
        self.devices.pop(device_id, None)
        self.unlinked[device_id] = reason
        self._save()
        self._changed.notify_all()

    # --- phones ---

    def phone_sends(self, sender: str, to: str, text: str) -> dict:
        for name, number in (("from", sender), ("to", to)):
            if not LINE.fullmatch(number or ""):
                raise SimError(422, "invalid_number", f"'{name}' is an international number, digits only.")
        if not isinstance(text, str) or not text:
            raise SimError(422, "invalid_text", "'text' is a non-empty string.")
        message_id = "3EB0" + secrets.token_hex(8).upper()
        with self._changed:
            linked = [d for d in self.devices.values() if d.line == to]
            for device in linked:
                payload = payloads.text_message(message_id, sender=sender, line=to, text=text)
                device.events.append({"type": "message", "seq": device.next_seq, "payload": payload})
                device.next_seq += 1
            self._save()
            self._changed.notify_all()
        return {"id": message_id, "devices": len(linked)}

    def device_sends(self, device_id: str, secret: str, to: str, text: str | None, media: dict | None) -> dict:
        """A linked device sends a message: it lands in the recipient phone's inbox (and its devices)."""
        if not LINE.fullmatch(to or ""):
            raise SimError(422, "invalid_number", "'to' is an international number, digits only.")
        if not text and not media:
            raise SimError(422, "invalid_text", "Send 'text' or 'media'.")
        message_id = "3EB0" + secrets.token_hex(10).upper()
        timestamp = int(time.time())
        with self._changed:
            device = self._device(device_id, secret)
            entry = {"id": message_id, "from": device.line, "to": to, "timestamp": timestamp}
            entry.update({"text": text} if text else {"media": media})
            self.inboxes.setdefault(to, []).append(entry)
            for other in (d for d in self.devices.values() if d.line == to):
                payload = (payloads.text_message(message_id, sender=device.line, line=to, text=text) if text
                           else payloads.media_message(message_id, sender=device.line, line=to, media=media))
                other.events.append({"type": "message", "seq": other.next_seq, "payload": payload})
                other.next_seq += 1
            self._save()
            self._changed.notify_all()
        return {"id": message_id, "timestamp": timestamp}

    def unlink(self, line: str) -> int:
        """The phone logs its linked devices out (WhatsApp -> Linked devices -> Log out)."""
        with self._changed:
            linked = [d.id for d in self.devices.values() if d.line == line]
            for device_id in linked:
                self._remove(device_id, "logged_out")
            return len(linked)

    def inbox(self, number: str) -> list[dict]:
        with self._lock:
            return list(self.inboxes.get(number, []))

    # --- persistence (the network's own folder, never the gateway's Redis) ---

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    # Saving the whole state on every change is quadratic when thousands of messages wait for an
    # offline device, so changes are saved at most every SAVE_INTERVAL (and by flush() at exit).
    SAVE_INTERVAL = 0.2

    def _save(self) -> None:
        self._dirty.set()

    def _save_when_dirty(self) -> None:
        while True:
            self._dirty.wait()
            time.sleep(self.SAVE_INTERVAL)
            self.flush()

    def flush(self) -> None:
        with self._lock:
            self._dirty.clear()
            self._write_state()

    def _write_state(self) -> None:
        state = {
            "devices": {d.id: {"secret": d.secret, "line": d.line, "events": d.events,
                               "next_seq": d.next_seq, "acked": d.acked} for d in self.devices.values()},
            "unlinked": self.unlinked,
            "inboxes": self.inboxes,
        }
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".state-")
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self._state_file)

    def _load(self) -> None:
        if not self._state_file.exists():
            return
        state = json.loads(self._state_file.read_text())
        self.devices = {i: Device(id=i, **d) for i, d in state.get("devices", {}).items()}
        self.unlinked = state.get("unlinked", {})
        self.inboxes = state.get("inboxes", {})
