"""The simulated WhatsApp network: one lock over pairing, linked devices, phones, groups and chats.

It stands for the outside world, so its state is its own: in memory, saved to a JSON file under its
own folder shortly after every change (linked devices and the events held for them survive a
restart, as WhatsApp's do), and media files under ``media/`` there. Each concept lives in its own
module (pairing, devices, phones, groups, messages and their content, inboxes, line actions, media);
this facade holds the one lock and its condition, runs every call under it, wakes the long polls
after a change and saves.
"""

import json
import os
import tempfile
import threading
import time
from pathlib import Path

from simnet.common import LINE, SimError
from simnet.devices import Devices
from simnet.groups import Groups
from simnet.line_actions import LineActions
from simnet.media import MediaServer
from simnet.messages import Messages
from simnet.pairing import QR_PREFIX, Pairing, QrSchedule
from simnet.phones import Phones

__all__ = ["LINE", "QR_PREFIX", "Network", "QrSchedule", "SimError"]


class Network:
    # Saving the whole state on every change is quadratic when thousands of messages wait for an
    # offline device, so changes are saved at most every SAVE_INTERVAL (and by flush() at exit).
    SAVE_INTERVAL = 0.2

    def __init__(self, state_dir: Path, schedule: QrSchedule | None = None):
        self.state_dir = Path(state_dir)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.devices = Devices(self._changed)
        self.phones = Phones(self.devices)
        self.groups = Groups(self.devices, self.phones)
        self.media = MediaServer(self.state_dir / "media")
        self.messages = Messages(self.devices, self.phones, self.groups, self.media)
        self.line_actions = LineActions(self.devices, self.phones, self.groups)
        self.pairing = Pairing(schedule or QrSchedule(), self._changed, self._link)
        self._dirty = threading.Event()
        self._load()
        threading.Thread(target=self._save_when_dirty, name="simnet-saver", daemon=True).start()

    @property
    def schedule(self) -> QrSchedule:
        return self.pairing.schedule

    def _read(self, call, *args):
        with self._changed:
            return call(*args)

    def _change(self, call, *args):
        """Run ``call`` under the lock; whatever it changed wakes the long polls and is saved."""
        with self._changed:
            try:
                return call(*args)
            finally:
                self._dirty.set()
                self._changed.notify_all()

    def _link(self, line: str) -> dict:  # under the lock, from Pairing
        self.phones.know(line)
        self._dirty.set()
        return self.devices.link(line)

    # --- pairing (the device that shows codes, the phone that scans or types) ---

    def begin_pairing(self, keys: dict) -> str:
        return self._read(self.pairing.begin, keys)

    def pairing_events(self, session_id: str, seen: int, timeout: float) -> list[dict]:
        return self._read(self.pairing.events, session_id, seen, timeout)

    def end_pairing(self, session_id: str) -> None:
        self._change(self.pairing.end, session_id)

    def request_pair_code(self, session_id: str, line: str) -> str:
        return self._read(self.pairing.request_code, session_id, line)

    def enter_pair_code(self, line: str, code: str) -> str:
        return self._change(self.pairing.enter_code, line, code)

    def scan(self, line: str, qr: str) -> str:
        return self._change(self.pairing.scan, line, qr)

    # --- a linked device ---

    def connect(self, device_id: str, secret: str, sources: list[str] | None = None) -> dict:
        return self._change(self.devices.connect, device_id, secret, sources)

    def device_events(self, device_id: str, secret: str, after: int, timeout: float,
                      connection: str | None = None) -> list[dict]:
        """Long-polls (releasing the lock while it waits); saved only when it acknowledged something."""
        with self._changed:
            device = self.devices.devices.get(device_id)
            acked = device.acked if device else None
            try:
                return self.devices.events(device_id, secret, after, timeout, connection)
            finally:
                if device is not None and device.acked != acked:
                    self._dirty.set()

    def device_sends(self, device_id: str, secret: str, data: dict, base_url: str = "") -> dict:
        return self._change(self.messages.device_sends, device_id, secret, data, base_url)

    def device_reads(self, device_id: str, secret: str, chat: str, ids: list[str], sender: str | None = None) -> dict:
        return self._change(self.line_actions.read, device_id, secret, chat, ids, sender)

    def device_presence(self, device_id: str, secret: str, to: str, state: str) -> dict:
        return self._change(self.line_actions.presence, device_id, secret, to, state)

    def device_exists(self, device_id: str, secret: str, phone: str) -> dict:
        return self._read(self.line_actions.exists, device_id, secret, phone)

    def logout(self, device_id: str, secret: str) -> None:
        def logout():
            self.devices.authenticate(device_id, secret)
            self.devices.remove(device_id, "logged_out")
        self._change(logout)

    def phone_for_lid(self, device_id: str, secret: str, lid: str) -> dict:
        def lookup():
            self.devices.authenticate(device_id, secret)
            return self.phones.phone_for_lid(lid)
        return self._read(lookup)

    # --- phones ---

    def send(self, data: dict, base_url: str = "") -> dict:
        """POST /messages: a phone writes to a line, to a contact, or in a group."""
        return self._change(self.messages.phone_sends, data, base_url)

    def phone_sends(self, sender: str, to: str, text: str) -> dict:
        return self.send({"from": sender, "to": to, "text": text})

    def join(self, phone: str) -> dict:
        return self._change(self.phones.join, phone)

    def phone(self, phone: str) -> dict:
        return self._read(self.phones.get, phone)

    def inbox(self, phone: str) -> list[dict]:
        return self._read(self.phones.inbox, phone)

    def read_by_line(self, phone: str) -> list[str]:
        return self._read(self.line_actions.read_ids, phone)

    def chat_state(self, chat: str) -> dict:
        """{line: state}: the presence each line last showed in its chat with that phone (or group JID)."""
        return self._read(self.line_actions.chat_state, chat)

    def exists(self, phone: str) -> bool:
        return self._read(lambda: phone in self.phones.known)

    def read(self, phone: str, line: str, ids: list[str], kind: str | None = None) -> dict:
        return self._change(self.phones.read, phone, line, ids, kind)

    def call(self, phone: str, line: str) -> dict:
        return self._change(self.phones.call, phone, line)

    def hangup(self, phone: str, line: str, call_id: str, reason: str | None = None) -> dict:
        return self._change(self.phones.hangup, phone, line, call_id, reason)

    def typing(self, phone: str, line: str, state: str) -> dict:
        return self._change(self.phones.typing, phone, line, state)

    def presence(self, phone: str, line: str, available: bool) -> dict:
        return self._change(self.phones.presence, phone, line, available)

    def undecryptable(self, phone: str, line: str) -> dict:
        return self._change(self.phones.undecryptable, phone, line)

    def unlink(self, line: str) -> int:
        return self._change(self.devices.unlink, line)

    def ban(self, line: str, seconds: float, code: str | None = None) -> dict:
        return self._change(self.devices.ban, line, seconds, code)

    def replace(self, line: str) -> dict:
        return self._change(self.devices.replace, line)

    def set_outdated(self, line: str, outdated: bool) -> dict:
        return self._change(self.devices.set_outdated, line, outdated)

    # --- groups ---

    def create_group(self, name: str, members: list[str], owner: str | None = None) -> dict:
        return self._change(self.groups.create, name, members, owner)

    def rename_group(self, group_id: str, name: str, by: str | None = None) -> dict:
        return self._change(self.groups.rename, group_id, name, by)

    def change_members(self, group_id: str, add: list[str] | None, remove: list[str] | None,
                       by: str | None = None) -> dict:
        return self._change(self.groups.change_members, group_id, add, remove, by)

    def group_inbox(self, group_id: str) -> list[dict]:
        """What lines posted in the group, as its members' phones show it."""
        return self._read(lambda: self.phones.inboxes.of_group(self.groups.get(group_id)[0]))

    def group_chat_state(self, group_id: str) -> dict:
        return self._read(lambda: self.line_actions.chat_state(f"{self.groups.get(group_id)[0]}@g.us"))

    # --- persistence (the network's own folder, never the gateway's Redis) ---

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    def _save_when_dirty(self) -> None:
        while True:
            self._dirty.wait()
            time.sleep(self.SAVE_INTERVAL)
            self.flush()

    def flush(self) -> None:
        with self._lock:
            self._dirty.clear()
            state = {**self.devices.saved(), **self.phones.saved(), **self.groups.saved(),
                     **self.line_actions.saved()}
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".state-")
            with os.fdopen(fd, "w") as f:
                json.dump(state, f)
            os.replace(tmp, self._state_file)

    def _load(self) -> None:
        if not self._state_file.exists():
            return
        state = json.loads(self._state_file.read_text())
        self.devices.load(state)
        self.phones.load(state)
        self.groups.load(state)
        self.line_actions.load(state)
