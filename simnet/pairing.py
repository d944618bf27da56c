"""Pairing sessions: the QR codes a new device shows, their rotation, scans and typed pair codes.

Not saved: like WhatsApp's QR refs they die with the connection that asked for them. Every method
runs with the network's lock held (``changed`` is its condition); the waiting ones release it.
"""

import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from simnet.common import LINE, SimError

QR_PREFIX = "https://wa.me/settings/linked_devices#"
# A pairing device that has not polled for this long has gone away; its codes die with it.
PAIRING_LIVENESS_SECONDS = 2.0


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


def _valid_line(line) -> str:
    if not isinstance(line, str) or not LINE.fullmatch(line):
        raise SimError(422, "invalid_line", "The phone number is international, digits only, no '+'.")
    return line


class Pairing:
    def __init__(self, schedule: QrSchedule, changed: threading.Condition, link: Callable[[str], dict]):
        self.schedule = schedule
        self._changed = changed
        self._link = link  # line -> the new device as handed over (device_id, secret, line)
        self._sessions: dict[str, PairingSession] = {}

    def begin(self, keys: dict) -> str:
        now = time.monotonic()
        session = PairingSession(id=uuid.uuid4().hex, keys=keys, started=now, last_seen=now,
                                 refs=[secrets.token_urlsafe(18) for _ in range(self.schedule.count)])
        self._sessions[session.id] = session
        return session.id

    def events(self, session_id: str, seen: int, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        session = self._sessions.get(session_id)
        if session is None:
            raise SimError(404, "unknown_session", "No such pairing session.")
        session.polling += 1
        try:
            return self._next_events(session, seen, deadline)
        finally:
            session.polling -= 1
            session.last_seen = time.monotonic()

    def _next_events(self, session: PairingSession, seen: int, deadline: float) -> list[dict]:
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

    def end(self, session_id: str) -> None:
        """The device closed its connection: its codes are no longer valid."""
        self._sessions.pop(session_id, None)

    def request_code(self, session_id: str, line: str) -> str:
        """The device asks for a code that the phone with this number can type instead of scanning."""
        _valid_line(line)
        letters = "ABCDEFGHJKLMNPQRSTVWXYZ"
        code = "".join(secrets.choice(letters) for _ in range(4)) + "-" + "".join(
            secrets.choice(letters) for _ in range(4))
        session = self._sessions.get(session_id)
        if session is None or not self._alive(session):
            raise SimError(404, "unknown_session", "No such pairing session.")
        session.pair_code = (line, code)
        return code

    def enter_code(self, line: str, code: str) -> str:
        """The phone with number ``line`` types ``code``: the device that asked for it pairs."""
        session = next((s for s in self._sessions.values() if s.pair_code == (line, code)), None)
        if session is None or session.device is not None or not self._alive(session):
            raise SimError(404, "unknown_code", "This code belongs to no device that is pairing with this phone.")
        return self._pair(session, line)

    def scan(self, line: str, qr: str) -> str:
        """A phone with number ``line`` scans ``qr``: the showing session pairs with it."""
        _valid_line(line)
        ref = (qr if isinstance(qr, str) else "").removeprefix(QR_PREFIX).split(",")[0]
        session = next((s for s in self._sessions.values() if ref in s.refs), None)
        if session is None or session.device is not None or not self._alive(session):
            raise SimError(404, "unknown_qr", "This code belongs to no device that is pairing now.")
        index, _ = self.schedule.window(time.monotonic() - session.started)
        if session.refs.index(ref) != index:
            raise SimError(422, "qr_expired", "This code has expired; scan the one on screen now.")
        return self._pair(session, line)

    def _alive(self, session: PairingSession) -> bool:
        return session.polling > 0 or time.monotonic() - session.last_seen < PAIRING_LIVENESS_SECONDS

    def _pair(self, session: PairingSession, line: str) -> str:
        session.device = self._link(line)
        self._changed.notify_all()
        return session.device["device_id"]
