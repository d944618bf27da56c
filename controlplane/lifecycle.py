"""What the manual's slot endpoints do, for the API and for whinctl alike (no Flask here).

Each action writes the desired state to Redis first and then asks supervisord to make it so. If
supervisord is slow or down, Redis still says what should be, and the reconciler converges.

State is checked once, by the store's atomic step: its refusal carries the phase it found the slot
in, and each action maps it to the contract's own code (``_REFUSALS``).
"""

import contextlib
import logging
import time
from dataclasses import dataclass

from controlplane.core import engine_names, ids, protocol, sessions, slotfiles
from controlplane.core.config import Role, Settings
from controlplane.core.errors import EngineTimeout, Refused, ServiceUnavailable
from controlplane.core.hosts import HostRegistry
from controlplane.core.states import SlotPhase, SlotStatus
from controlplane.core.store import Slot, SlotStore
from controlplane.messaging.events import EventPublisher
from controlplane.placement import Placement
from controlplane.supervisor import ProgramMissing, Supervisor

log = logging.getLogger(__name__)

MAX_SLOTS_PER_REQUEST = 100
_POLL = 0.02  # seconds between looks at Redis while waiting on a worker


def wait_until(predicate, timeout: float, interval: float = _POLL):
    """Look until ``predicate()`` answers something truthy, and return it; None once ``timeout``
    seconds have passed. It looks at least once, and once more at the deadline, so a slow machine
    never misses an answer that came in time. What the predicate raises ends the wait."""
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(interval, left))


@dataclass(frozen=True)
class QrCode:
    text: str
    expires_in: float


class Lifecycle:
    def __init__(self, settings: Settings, store: SlotStore, supervisor: Supervisor, publisher: EventPublisher):
        self.settings = settings
        self.store = store
        self.supervisor = supervisor  # this machine's: its slot programs only when WHIN_ROLE=all
        self.publisher = publisher
        self.hosts = HostRegistry(store.redis, settings.host_dead_after)
        self.placement = Placement(settings, store, self.hosts)
        # The host whose supervisord is this machine's: started and stopped directly, as ever; any
        # other host's agent is woken instead (never a remote supervisord).
        self.local_host = settings.host_name if settings.role is Role.ALL else None

    @classmethod
    def from_settings(cls, settings: Settings) -> "Lifecycle":
        """The gateway's own wiring, for the API and whinctl alike: its Redis, its supervisord, its queue."""
        return cls(settings, SlotStore.from_url(settings.redis_url), Supervisor.from_settings(settings),
                   EventPublisher(settings))

    # --- provisioning ---

    def provision(self, count) -> list[str]:
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SLOTS_PER_REQUEST:
            raise Refused("invalid_count",
                          f"'count' must be a whole number from 1 to {MAX_SLOTS_PER_REQUEST}.")
        created = self.store.create_slots(count)
        if self.local_host is None:
            return created  # placed on a host when first started: that host's agent adds its program
        try:
            self.supervisor.add_programs(created)
        except ServiceUnavailable as err:
            # The slots exist in Redis; the reconciler adds their programs once supervisord answers.
            log.warning("provisioned slots not yet added to supervisord: %s", err.detail)
        return created

    # --- lookups that turn input into a known slot ---

    def slot(self, slot_text: str) -> Slot:
        return self.store.require(ids.parse_slot_id(slot_text))

    def slot_of_line(self, line_text: str) -> Slot:
        line = ids.parse_line(line_text)
        slot_id = self.store.slot_for_line(line)
        if slot_id is None:
            raise Refused("unknown_line", f"The line {line} is not enrolled on any slot.")
        return self.store.require(slot_id)

    def serving_slot(self, line_text: str | None, slot_text: str | None, to_do: str) -> Slot:
        """The slot of a line (or a slot id) that must be linked and awake to ``to_do`` ("send", …)."""
        slot = self.slot_of_line(line_text) if line_text else self.slot(slot_text)
        if slot.status is SlotStatus.SLEEPING:
            raise Refused("line_sleeping", f"The line of slot {slot.id} is sleeping; resume it to {to_do}.")
        if slot.status is not SlotStatus.ACTIVE:
            raise Refused("not_active", f"Slot {slot.id} has no line enrolled.")
        return slot

    # --- enrollment ---

    def enroll(self, slot: Slot) -> QrCode:
        """Start pairing (or join the pairing under way) and return the QR the worker shows now."""
        if not engine_names.is_installed(self.settings.engine):
            raise ServiceUnavailable("engine_unavailable",
                                     f"The {self.settings.engine} engine is not installed in this gateway.")
        with _refusals(slot.id, "enroll"):
            started = self.store.begin_pairing(slot.id, time.time() + self.settings.pairing_timeout)
        if started:
            self.store.count("pairing_started")
            try:
                self._start_worker(slot.id)
            except ServiceUnavailable:  # no host has room: no worker will ever end this pairing
                self.store.end_pairing(slot.id, "no_host")
                raise
        return self._wait_for_qr(slot.id)

    def current_qr(self, slot: Slot) -> QrCode:
        """The QR a pairing slot shows now. Unlike enroll it never starts a pairing, so a page that
        refreshes the code cannot restart one that has just ended."""
        if slot.status is not SlotStatus.AVAILABLE:  # a read, not a step: no script to refuse it
            raise Refused("slot_not_available", f"Slot {slot.id} is {slot.status.value}; it is not pairing.")
        if slot.phase is not SlotPhase.PAIRING:
            raise Refused("not_pairing", f"Slot {slot.id} is not pairing; /enroll/{slot.id} starts it.")
        return self._wait_for_qr(slot.id)

    def _wait_for_qr(self, slot_id: str) -> QrCode:
        def shown() -> QrCode | None:
            slot = self.store.get(slot_id)
            if slot.status is SlotStatus.ACTIVE:
                raise Refused("slot_not_available", f"Slot {slot_id} has just linked a line.")
            if slot.phase is not SlotPhase.PAIRING:
                raise _pairing_ended(slot)
            now = time.time()
            if slot.qr and slot.qr_expires_at and slot.qr_expires_at > now:
                return QrCode(slot.qr, round(slot.qr_expires_at - now, 1))
            return None

        code = wait_until(shown, self.settings.enroll_timeout)
        if code is None:
            raise EngineTimeout(f"Slot {slot_id} showed no QR code within {self.settings.enroll_timeout:g} s.")
        return code

    def pair_code(self, slot: Slot, line_text: str) -> QrCode:
        """Like enroll, but the phone types a code instead of scanning: ask the pairing worker for one."""
        line = ids.parse_line(line_text)
        self.enroll(slot)  # starts pairing (or joins it) and waits until the engine is talking to WhatsApp
        answer, _ = protocol.ask(self.store, slot.id, protocol.PairCode(line=line),
                                 timeout=self.settings.enroll_timeout)
        if answer is None:
            raise EngineTimeout(f"Slot {slot.id} gave no pairing code within {self.settings.enroll_timeout:g} s.")
        if isinstance(answer, protocol.PairingCode):
            deadline = self.store.get(slot.id).pair_deadline or time.time()
            return QrCode(answer.code, round(max(0.0, deadline - time.time()), 1))
        if answer.error == protocol.NOT_SUPPORTED:
            raise Refused("not_supported", answer.detail)
        raise ServiceUnavailable("whatsapp_unreachable", f"Slot {slot.id}: {answer.detail}")

    # --- sleep and resume ---

    def sleep(self, slot: Slot) -> None:
        with _refusals(slot.id, "sleep"):
            # Told in the same step: Redis says sleeping now, whatever supervisord answers (the reconciler
            # converges), and no kill can slip its event in between.
            self.store.move(slot.id, SlotStatus.ACTIVE, SlotStatus.SLEEPING, outbox=self.publisher.outbox())
        self._stop_worker(slot.id)

    def resume(self, slot: Slot) -> None:
        with _refusals(slot.id, "resume"):
            # "active" from now on, even if slow to connect; told in the same step.
            self.store.move(slot.id, SlotStatus.SLEEPING, SlotStatus.ACTIVE, outbox=self.publisher.outbox())
        self._start_worker(slot.id)
        self._wait_until_connected(slot.id)

    def _wait_until_connected(self, slot_id: str) -> None:
        def connected() -> bool:
            slot = self.store.get(slot_id)
            if slot.status is SlotStatus.AVAILABLE:
                raise Refused("logged_out",
                              f"The phone unlinked the line of slot {slot_id} while it slept; enroll it again.")
            return slot.connected

        if not wait_until(connected, self.settings.connect_timeout):
            raise EngineTimeout(f"Slot {slot_id} did not reconnect within {self.settings.connect_timeout:g} s; "
                                "it stays active and keeps trying.")

    # --- kill ---

    def kill(self, slot: Slot) -> None:
        """Unlink, wipe credentials and keys, and make the slot available again (also ends a pairing)."""
        self._release(slot, "killed", (SlotPhase.ACTIVE, SlotPhase.SLEEPING, SlotPhase.PAIRING), "kill")

    def cancel_pairing(self, slot: Slot) -> None:
        """End a pairing under way. Unlike kill it never touches a linked line, even one that linked a
        moment ago: the check and the release are one Lua step."""
        self._release(slot, "cancelled", (SlotPhase.PAIRING,), "cancel")

    def _release(self, slot: Slot, reason: str, allowed: tuple[SlotPhase, ...], action: str) -> None:
        with _refusals(slot.id, action):
            # The release and its one terminal event (``killed``) are one step; a cancelled pairing had
            # no line, so nothing is told. The worker's later logout, and its echo, tell nothing more.
            self.store.release(slot.id, reason, allowed, outbox=self.publisher.outbox())
        # The worker logs out from the network and wipes its own files; start it if it sleeps.
        self._start_worker(slot.id)
        if not self._wait_for_teardown(slot.id):
            host = (self.store.get(slot.id) or slot).host
            if host not in (None, self.local_host) and not self.placement.movable:
                # Its session is a folder on that host's disk: only its worker there can wipe it.
                raise EngineTimeout(f"Slot {slot.id} is released, but host {host} has not logged it out yet; "
                                    "it does once its worker runs there (its session is on that host's disk).")
            log.warning("slot %s: worker did not finish its logout in time; wiping its files here", slot.id)
            self._stop_worker(slot.id)
            slotfiles.wipe(self.settings.slot_dir(slot.id))
            try:
                sessions.for_slot(self.settings, slot.id, self.settings.slot_dir(slot.id)).wipe()
            except sessions.SessionStoreUnavailable as err:  # the teardown stays flagged: the worker retries
                log.error("slot %s: its session record is not wiped yet (%s)", slot.id, err)
                return
            self.store.finish_teardown(slot.id)

    def _wait_for_teardown(self, slot_id: str) -> bool:
        return bool(wait_until(lambda: not self.store.get(slot_id).teardown, self.settings.kill_timeout))

    # --- supervisord, tolerant of a program it has not loaded yet ---

    def _start_worker(self, slot_id: str) -> None:
        """Place the slot (core/hosts.py: its host, or the live one with most room), then start its
        worker there: here through supervisord, elsewhere by waking that host's agent."""
        slot = self.store.require(slot_id)
        host = self.placement.place(slot)
        if host is None:
            raise ServiceUnavailable("no_host", "No live slot host has room for another slot; the slot "
                                     "starts once one has (add a host or raise WHIN_HOST_CAPACITY).")
        if host != self.local_host:
            self.hosts.nudge(host)
            return
        try:
            self.supervisor.start(slot_id)
        except ProgramMissing:
            self.supervisor.add_programs([slot_id])
            self.supervisor.start(slot_id)

    def _stop_worker(self, slot_id: str) -> None:
        slot = self.store.get(slot_id)
        if slot is not None and slot.host and slot.host != self.local_host:
            self.hosts.nudge(slot.host)  # its agent stops it: Redis says it should not run
            return
        with contextlib.suppress(ProgramMissing):  # supervisord has no such program: nothing of it runs
            self.supervisor.stop(slot_id)


def _pairing_ended(slot: Slot) -> Exception:
    if slot.pair_error == "network_unreachable":
        return ServiceUnavailable("whatsapp_unreachable",
                                  f"Slot {slot.id} cannot reach WhatsApp's servers; check the host's network.")
    return Refused("pairing_ended", f"Slot {slot.id} stopped pairing ({slot.pair_error or 'ended'}); "
                                    "call /enroll again.")


# Each action's contract code when the store's step finds the slot in another phase, and what the
# sentence adds after "Slot <ID> is <phase>".
_REFUSALS = {
    "enroll": ("slot_not_available", "only an available slot can enroll a line"),
    "sleep": ("not_active", "only an active line can sleep"),
    "resume": ("not_sleeping", "only a sleeping line can resume"),
    "kill": ("not_enrolled", "only an enrolled or pairing slot can be killed"),
    "cancel": ("not_pairing", "only a pairing can be cancelled"),
}


@contextlib.contextmanager
def _refusals(slot_id: str, action: str):
    """Turn the store's refusal of an action's step (states.SlotPhase in ``state``) into the action's code."""
    try:
        yield
    except Refused as refusal:
        if refusal.code not in ("wrong_state", "not_pairing") or refusal.state is None:
            raise  # unknown_slot: the contract's own code already
        code, rule = _REFUSALS[action]
        if refusal.state is SlotPhase.RESETTING and action == "enroll":
            raise Refused(code, f"Slot {slot_id} is being reset; try again in a moment.") from None
        raise Refused(code, f"Slot {slot_id} is {_NAMED.get(refusal.state, refusal.state)}; {rule}.") from None


_NAMED = {SlotPhase.PAIRING: "available (pairing)", SlotPhase.RESETTING: "available (being reset)"}
