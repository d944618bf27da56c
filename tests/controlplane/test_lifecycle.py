"""controlplane.lifecycle against a real Redis, with a stand-in for supervisord (the process boundary).

The stand-in plays the slot worker's part where an action waits on one: it shows a QR, reconnects,
or finishes a teardown when its program is started, as the real worker would report in Redis.
"""

import time

import pytest
import redis

from controlplane.core.config import Settings
from controlplane.core.errors import EngineTimeout, Refused, ServiceUnavailable
from controlplane.core.ids import InvalidIdentifier
from controlplane.core.states import SlotPhase, SlotStatus
from controlplane.core.store import SlotStore
from controlplane.lifecycle import Lifecycle, wait_until
from controlplane.messaging.events import EventPublisher
from controlplane.supervisor import ProgramMissing
from tests.gateway import QUEUE_KEY
from tests.helpers import queued_envelopes

LINE = "34666123456"


class StandInSupervisor:
    """What Lifecycle asks of supervisord, recorded; ``on_start`` plays the worker that starts."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.known: set[str] = set()
        self.on_start = None  # slot_id -> None, run as the program starts
        self.unavailable = False

    def add_programs(self, slot_ids):
        self.calls.append(("add", tuple(slot_ids)))
        if self.unavailable:
            raise ServiceUnavailable("supervisor_unavailable", "supervisord does not answer.")
        self.known.update(slot_ids)

    def start(self, slot_id):
        if slot_id not in self.known:
            raise ProgramMissing(slot_id)
        self.calls.append(("start", slot_id))
        if self.on_start:
            self.on_start(slot_id)

    def stop(self, slot_id, wait=True):
        self.calls.append(("stop", slot_id))


@pytest.fixture
def redis_client(redis_server):
    """This module's own database: 0, which the suite's per-test numbering (1 to 63) never hands out, so
    these forty tests do not use up the server's 64 databases. Flushed before and after each test."""
    client = redis.Redis(unix_socket_path=str(redis_server), db=0, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def redis_url_of(client) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"unix://{kwargs['path']}?db={kwargs['db']}"


@pytest.fixture
def settings(redis_client, tmp_path):
    return Settings.from_env({
        "WHIN_DATA_DIR": str(tmp_path), "WHIN_REDIS_URL": redis_url_of(redis_client), "WHIN_ENGINE": "sim",
        "WHIN_QUEUE_KEY": QUEUE_KEY, "WHIN_ENROLL_TIMEOUT": "0.3", "WHIN_CONNECT_TIMEOUT": "0.3",
        "WHIN_KILL_TIMEOUT": "0.3",
    })


@pytest.fixture
def supervisor():
    return StandInSupervisor()


@pytest.fixture
def lifecycle(settings, redis_client, supervisor):
    kwargs = redis_client.connection_pool.connection_kwargs
    connection = redis.Redis(unix_socket_path=kwargs["path"], db=kwargs["db"])  # bytes, as rq wants
    yield Lifecycle(settings, SlotStore(redis_client), supervisor, EventPublisher(settings, connection))
    connection.close()


def statuses_queued(lifecycle) -> list[tuple[str, str]]:
    return [(e["slot"], e["status"]) for e in queued_envelopes(lifecycle.publisher.connection, QUEUE_KEY)]


def make(lifecycle, phase: SlotPhase) -> str:
    """A provisioned slot in ``phase``, as the store's own steps leave one."""
    store = lifecycle.store
    (slot_id,) = store.create_slots(1)
    if phase is SlotPhase.AVAILABLE:
        return slot_id
    store.begin_pairing(slot_id, time.time() + 60)
    if phase is SlotPhase.PAIRING:
        return slot_id
    if phase is SlotPhase.RESETTING:
        store.release(slot_id, "cancelled", (SlotPhase.PAIRING,))
        return slot_id
    store.pair_success(slot_id, LINE if phase is SlotPhase.ACTIVE else "34666000999")
    if phase is SlotPhase.SLEEPING:
        store.move(slot_id, SlotStatus.ACTIVE, SlotStatus.SLEEPING)
    return slot_id


# --- wait_until ---

def test_wait_until_returns_the_first_truthy_answer():
    answers = iter([None, 0, "found", "later"])
    assert wait_until(lambda: next(answers), timeout=60, interval=0) == "found"
    assert next(answers) == "later"  # it stopped looking at the first answer


def test_wait_until_gives_up_at_its_deadline_after_a_last_look():
    looks = []
    started = time.monotonic()
    assert wait_until(lambda: looks.append(time.monotonic()), timeout=0.2, interval=0.05) is None
    assert time.monotonic() - started >= 0.2
    assert len(looks) >= 2 and looks[-1] - started >= 0.2  # the last look was at (or after) the deadline


def test_wait_until_looks_once_even_with_no_time_left_and_lets_a_refusal_through():
    looks = []
    assert wait_until(lambda: looks.append(1), timeout=0) is None
    assert looks == [1]

    def refuses():
        raise Refused("logged_out", "gone")

    with pytest.raises(Refused):
        wait_until(refuses, timeout=60)


# --- wiring, provisioning, lookups ---

def test_from_settings_wires_the_gateways_own_redis(settings, redis_client):
    lc = Lifecycle.from_settings(settings)
    (slot_id,) = lc.store.create_slots(1)
    assert SlotStore(redis_client).get(slot_id).status is SlotStatus.AVAILABLE
    assert lc.supervisor.socket_path == settings.supervisor_socket
    lc.store.redis.close()
    lc.publisher.connection.close()


def test_provision_creates_slots_and_adds_their_programs(lifecycle, supervisor):
    created = lifecycle.provision(3)
    assert len(created) == 3 and supervisor.calls == [("add", tuple(created))]
    assert {s.id for s in lifecycle.store.all()} == set(created)


@pytest.mark.parametrize("count", [0, 101, True, "2", 1.0, None])
def test_provision_refuses_a_count_that_is_not_1_to_100(lifecycle, supervisor, count):
    with pytest.raises(Refused) as refused:
        lifecycle.provision(count)
    assert refused.value.code == "invalid_count"
    assert lifecycle.store.all() == [] and supervisor.calls == []


def test_provision_keeps_its_slots_when_supervisord_is_down(lifecycle, supervisor):
    supervisor.unavailable = True
    created = lifecycle.provision(2)
    assert {s.id for s in lifecycle.store.all()} == set(created)  # the reconciler adds the programs later


def test_lookups_refuse_unknown_and_malformed_input(lifecycle):
    for call, code in ((lambda: lifecycle.slot("NOPE0000"), "unknown_slot"),
                       (lambda: lifecycle.slot("short"), "invalid_slot"),
                       (lambda: lifecycle.slot_of_line("34999000111"), "unknown_line"),
                       (lambda: lifecycle.slot_of_line("+34999000111"), "invalid_line")):
        with pytest.raises(Refused) as refused:
            call()
        assert refused.value.code == code and refused.value.status == 422


def test_a_malformed_identifier_is_a_refusal_of_the_one_family():
    assert issubclass(InvalidIdentifier, Refused) and issubclass(InvalidIdentifier, ValueError)


def test_kill_of_an_unknown_line_is_refused_before_anything_is_asked(lifecycle, supervisor):
    with pytest.raises(Refused) as refused:
        lifecycle.kill(lifecycle.slot_of_line("34999000111"))
    assert refused.value.code == "unknown_line"
    assert supervisor.calls == [] and statuses_queued(lifecycle) == []


# --- the store's refusal, mapped to each action's code ---

ACTIONS = {
    "enroll": lambda lc, slot: lc.enroll(slot),
    "sleep": lambda lc, slot: lc.sleep(slot),
    "resume": lambda lc, slot: lc.resume(slot),
    "kill": lambda lc, slot: lc.kill(slot),
    "cancel": lambda lc, slot: lc.cancel_pairing(slot),
}


@pytest.mark.parametrize(("action", "phase", "code"), [
    ("enroll", SlotPhase.ACTIVE, "slot_not_available"),
    ("enroll", SlotPhase.SLEEPING, "slot_not_available"),
    ("enroll", SlotPhase.RESETTING, "slot_not_available"),
    ("sleep", SlotPhase.AVAILABLE, "not_active"),
    ("sleep", SlotPhase.PAIRING, "not_active"),
    ("sleep", SlotPhase.SLEEPING, "not_active"),
    ("resume", SlotPhase.AVAILABLE, "not_sleeping"),
    ("resume", SlotPhase.ACTIVE, "not_sleeping"),
    ("kill", SlotPhase.AVAILABLE, "not_enrolled"),
    ("kill", SlotPhase.RESETTING, "not_enrolled"),
    ("cancel", SlotPhase.AVAILABLE, "not_pairing"),
    ("cancel", SlotPhase.ACTIVE, "not_pairing"),
])
def test_an_action_in_the_wrong_phase_is_refused_with_its_code_and_changes_nothing(
        lifecycle, supervisor, action, phase, code):
    slot_id = make(lifecycle, phase)
    before = lifecycle.store.get(slot_id)
    with pytest.raises(Refused) as refused:
        ACTIONS[action](lifecycle, before)
    assert refused.value.code == code and refused.value.detail.startswith(f"Slot {slot_id} is ")
    assert lifecycle.store.get(slot_id) == before
    assert supervisor.calls == [] and statuses_queued(lifecycle) == []


def test_a_slot_being_reset_says_so_to_enroll(lifecycle):
    slot_id = make(lifecycle, SlotPhase.RESETTING)
    with pytest.raises(Refused) as refused:
        lifecycle.enroll(lifecycle.slot(slot_id))
    assert refused.value.detail == f"Slot {slot_id} is being reset; try again in a moment."


def test_the_store_step_decides_not_the_slot_the_caller_read(lifecycle, supervisor):
    """A caller's read can be stale: another process slept the slot since. The step refuses."""
    slot_id = make(lifecycle, SlotPhase.ACTIVE)
    read_while_active = lifecycle.slot(slot_id)
    lifecycle.store.move(slot_id, SlotStatus.ACTIVE, SlotStatus.SLEEPING)
    with pytest.raises(Refused) as refused:
        lifecycle.sleep(read_while_active)
    assert (refused.value.code, refused.value.detail) == (
        "not_active", f"Slot {slot_id} is sleeping; only an active line can sleep.")
    assert supervisor.calls == []


# --- enroll, sleep, resume, kill ---

def test_enroll_starts_the_worker_once_and_answers_the_qr_it_shows(lifecycle, supervisor):
    (slot_id,) = lifecycle.provision(1)
    supervisor.on_start = lambda s: lifecycle.store.set_qr(s, "qr-text", time.time() + 20)
    code = lifecycle.enroll(lifecycle.slot(slot_id))
    assert code.text == "qr-text" and 0 < code.expires_in <= 20
    again = lifecycle.enroll(lifecycle.slot(slot_id))  # joins the pairing under way
    assert again.text == "qr-text"
    assert [c for c in supervisor.calls if c[0] == "start"] == [("start", slot_id)]
    assert lifecycle.store.get(slot_id).phase is SlotPhase.PAIRING


def test_enroll_starts_a_program_supervisord_had_not_loaded(lifecycle, supervisor):
    (slot_id,) = lifecycle.store.create_slots(1)  # in Redis, not yet in supervisord
    supervisor.on_start = lambda s: lifecycle.store.set_qr(s, "qr-text", time.time() + 20)
    assert lifecycle.enroll(lifecycle.slot(slot_id)).text == "qr-text"
    assert supervisor.calls == [("add", (slot_id,)), ("start", slot_id)]


def test_enroll_times_out_when_no_qr_is_shown(lifecycle):
    (slot_id,) = lifecycle.provision(1)
    with pytest.raises(EngineTimeout):
        lifecycle.enroll(lifecycle.slot(slot_id))
    assert lifecycle.store.get(slot_id).phase is SlotPhase.PAIRING  # the worker's own deadline ends it


def test_waiting_for_a_qr_ends_when_the_pairing_ends(lifecycle, supervisor):
    (slot_id,) = lifecycle.provision(1)
    supervisor.on_start = lambda s: lifecycle.store.end_pairing(s, "codes_exhausted")
    with pytest.raises(Refused) as refused:
        lifecycle.enroll(lifecycle.slot(slot_id))
    assert refused.value.code == "pairing_ended" and "codes_exhausted" in refused.value.detail


def test_current_qr_never_starts_a_pairing(lifecycle, supervisor):
    (slot_id,) = lifecycle.provision(1)
    with pytest.raises(Refused) as refused:
        lifecycle.current_qr(lifecycle.slot(slot_id))
    assert refused.value.code == "not_pairing" and lifecycle.store.get(slot_id).phase is SlotPhase.AVAILABLE
    with pytest.raises(Refused) as refused:
        lifecycle.current_qr(lifecycle.slot(make(lifecycle, SlotPhase.ACTIVE)))
    assert refused.value.code == "slot_not_available"


def test_sleep_then_resume_waits_for_the_connection(lifecycle, supervisor):
    slot_id = make(lifecycle, SlotPhase.ACTIVE)
    supervisor.known.add(slot_id)
    lifecycle.sleep(lifecycle.slot(slot_id))
    assert lifecycle.store.get(slot_id).status is SlotStatus.SLEEPING and ("stop", slot_id) in supervisor.calls
    supervisor.on_start = lambda s: lifecycle.store.set_connected(s, True)
    lifecycle.resume(lifecycle.slot(slot_id))
    assert lifecycle.store.get(slot_id).status is SlotStatus.ACTIVE
    assert statuses_queued(lifecycle) == [(slot_id, "sleeping"), (slot_id, "active")]


def test_resume_that_does_not_reconnect_in_time_is_a_timeout_and_stays_active(lifecycle, supervisor):
    slot_id = make(lifecycle, SlotPhase.SLEEPING)
    supervisor.known.add(slot_id)
    with pytest.raises(EngineTimeout):
        lifecycle.resume(lifecycle.slot(slot_id))
    assert lifecycle.store.get(slot_id).status is SlotStatus.ACTIVE


def test_resume_of_a_line_the_phone_unlinked_meanwhile_is_logged_out(lifecycle, supervisor):
    slot_id = make(lifecycle, SlotPhase.SLEEPING)
    supervisor.known.add(slot_id)
    supervisor.on_start = lambda s: lifecycle.store.release(s, "logged_out", (SlotPhase.ACTIVE,))
    with pytest.raises(Refused) as refused:
        lifecycle.resume(lifecycle.slot(slot_id))
    assert refused.value.code == "logged_out"


def test_kill_waits_for_the_workers_wipe(lifecycle, supervisor):
    slot_id = make(lifecycle, SlotPhase.ACTIVE)
    supervisor.known.add(slot_id)
    supervisor.on_start = lambda s: lifecycle.store.finish_teardown(s)
    lifecycle.kill(lifecycle.slot_of_line(LINE))
    slot = lifecycle.store.get(slot_id)
    assert (slot.phase, slot.line, lifecycle.store.lines()) == (SlotPhase.AVAILABLE, None, {})
    assert ("stop", slot_id) not in supervisor.calls
    assert statuses_queued(lifecycle) == [(slot_id, "killed")]


def test_kill_wipes_the_files_itself_when_the_worker_does_not(lifecycle, supervisor, settings):
    slot_id = make(lifecycle, SlotPhase.SLEEPING)
    supervisor.known.add(slot_id)
    slot_dir = settings.slot_dir(slot_id)
    slot_dir.mkdir(parents=True)
    (slot_dir / "session.json").write_text("{}")
    lifecycle.kill(lifecycle.slot(slot_id))  # the stand-in worker never finishes its teardown
    assert not slot_dir.exists()
    assert supervisor.calls == [("start", slot_id), ("stop", slot_id)]  # started to log out, stopped when late
    assert lifecycle.store.get(slot_id).phase is SlotPhase.AVAILABLE


def api_lifecycle(settings, redis_client, supervisor, **env):
    """The lifecycle of a WHIN_ROLE=api machine: slots run on hosts, never here."""
    api_settings = Settings.from_env({"WHIN_DATA_DIR": str(settings.data_dir), "WHIN_REDIS_URL": settings.redis_url,
                                      "WHIN_ENGINE": "sim", "WHIN_QUEUE_KEY": QUEUE_KEY, "WHIN_ROLE": "api",
                                      "WHIN_HOST_NAME": "api", "WHIN_KILL_TIMEOUT": "0.3", **env})
    kwargs = redis_client.connection_pool.connection_kwargs
    return Lifecycle(api_settings, SlotStore(redis_client), supervisor,
                     EventPublisher(api_settings, redis.Redis(unix_socket_path=kwargs["path"], db=kwargs["db"])))


def test_a_kill_on_the_api_whose_host_keeps_the_files_leaves_the_wipe_to_that_host(lifecycle, supervisor, settings,
                                                                                   redis_client):
    slot_id = make(lifecycle, SlotPhase.SLEEPING)
    api = api_lifecycle(settings, redis_client, supervisor)  # sessions on the hosts' disks: pinned
    api.hosts.beat("h1", 10)
    assert api.store.place(slot_id, "h1", None)
    with pytest.raises(EngineTimeout, match="host h1 has not logged it out yet"):
        api.kill(api.slot(slot_id))  # h1's worker does not finish in time
    slot = api.store.get(slot_id)
    assert slot.teardown and slot.line is None  # released; h1's worker wipes its files when it runs
    assert supervisor.calls == []  # nothing asked of the api machine's own supervisord


def test_an_enrollment_no_host_can_take_ends_its_pairing(lifecycle, supervisor, settings, redis_client):
    (slot_id,) = lifecycle.store.create_slots(1)
    api = api_lifecycle(settings, redis_client, supervisor)  # and no host has beaten
    with pytest.raises(ServiceUnavailable) as refused:
        api.enroll(api.slot(slot_id))
    assert refused.value.code == "no_host"
    slot = api.store.get(slot_id)
    assert not slot.pairing and slot.pair_error == "no_host"


def test_cancel_ends_a_pairing_and_tells_nothing(lifecycle, supervisor):
    slot_id = make(lifecycle, SlotPhase.PAIRING)
    supervisor.known.add(slot_id)
    supervisor.on_start = lambda s: lifecycle.store.finish_teardown(s)
    lifecycle.cancel_pairing(lifecycle.slot(slot_id))
    assert lifecycle.store.get(slot_id).phase is SlotPhase.AVAILABLE
    assert statuses_queued(lifecycle) == []
