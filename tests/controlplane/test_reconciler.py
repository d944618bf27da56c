"""The reconciler's pure decisions: which slot workers should run, and the actions that get them there."""

import logging

import pytest
import redis

from controlplane.core.states import SlotStatus
from controlplane.core.store import Slot
from controlplane.reconciler import Action, ActionKind, Reconciler, plan, should_run

NOW = 1_700_000_000.0
ADD, START, STOP, END = ActionKind.ADD, ActionKind.START, ActionKind.STOP, ActionKind.END_PAIRING


def active():
    return Slot("ACTIVE01", SlotStatus.ACTIVE, line="34666000001", connected=True)


def sleeping():
    return Slot("SLEEP001", SlotStatus.SLEEPING, line="34666000002")


def available():
    return Slot("AVAIL001", SlotStatus.AVAILABLE)


def pairing(deadline=NOW + 60):
    return Slot("PAIR0001", SlotStatus.AVAILABLE, pairing=True, pair_deadline=deadline)


def expired_pairing():
    return pairing(deadline=NOW - 1)


def teardown():
    return Slot("TEAR0001", SlotStatus.AVAILABLE, teardown=True)


def kinds_for(slot: Slot, state: str | None) -> list[ActionKind]:
    """Plan one slot whose program is in ``state`` (None: supervisord has no such program)."""
    programs = {} if state is None else {slot.id: state}
    actions = plan([slot], programs, NOW)
    assert all(a.slot_id == slot.id for a in actions)
    return [a.kind for a in actions]


@pytest.mark.parametrize(
    ("slot", "expected"),
    [
        pytest.param(active(), True, id="active"),
        pytest.param(sleeping(), False, id="sleeping"),
        pytest.param(available(), False, id="available"),
        pytest.param(pairing(), True, id="pairing-future-deadline"),
        pytest.param(expired_pairing(), False, id="pairing-past-deadline"),
        pytest.param(pairing(deadline=NOW), False, id="pairing-deadline-is-now"),
        pytest.param(pairing(deadline=None), False, id="pairing-without-deadline"),
        pytest.param(Slot("STALE001", SlotStatus.AVAILABLE, pair_deadline=NOW + 60), False,
                     id="deadline-but-not-pairing"),
        pytest.param(teardown(), True, id="teardown"),
        pytest.param(Slot("TEAR0002", SlotStatus.SLEEPING, line="34666000003", teardown=True), True,
                     id="teardown-wins-over-sleeping"),
    ],
)
def test_should_run_only_while_active_pairing_in_time_or_tearing_down(slot, expected):
    assert should_run(slot, NOW) is expected


@pytest.mark.parametrize(
    ("slot", "state", "expected"),
    [
        # supervisord does not know the program yet: always add it; start it only if it should run.
        pytest.param(available(), None, [ADD], id="missing-available-add-only"),
        pytest.param(sleeping(), None, [ADD], id="missing-sleeping-add-only"),
        pytest.param(active(), None, [ADD, START], id="missing-active-add-and-start"),
        pytest.param(pairing(), None, [ADD, START], id="missing-pairing-add-and-start"),
        pytest.param(teardown(), None, [ADD, START], id="missing-teardown-add-and-start"),
        pytest.param(expired_pairing(), None, [ADD, END], id="missing-expired-pairing-add-and-end"),
        # active: a stopped worker is started, a live one left alone.
        pytest.param(active(), "STOPPED", [START], id="active-stopped-start"),
        pytest.param(active(), "EXITED", [START], id="active-exited-start"),
        pytest.param(active(), "FATAL", [START], id="active-fatal-start"),
        pytest.param(active(), "UNKNOWN", [START], id="active-unknown-start"),
        pytest.param(active(), "RUNNING", [], id="active-running-nothing"),
        pytest.param(active(), "STARTING", [], id="active-starting-nothing"),
        pytest.param(active(), "BACKOFF", [], id="active-backoff-nothing"),
        # sleeping: the worker must not run.
        pytest.param(sleeping(), "RUNNING", [STOP], id="sleeping-running-stop"),
        pytest.param(sleeping(), "STARTING", [STOP], id="sleeping-starting-stop"),
        pytest.param(sleeping(), "BACKOFF", [STOP], id="sleeping-backoff-stop"),
        pytest.param(sleeping(), "STOPPED", [], id="sleeping-stopped-nothing"),
        pytest.param(sleeping(), "EXITED", [], id="sleeping-exited-nothing"),
        pytest.param(sleeping(), "FATAL", [], id="sleeping-fatal-nothing"),
        # available and not pairing: nothing to run.
        pytest.param(available(), "RUNNING", [STOP], id="available-running-stop"),
        pytest.param(available(), "STOPPED", [], id="available-stopped-nothing"),
        # pairing before its deadline: the worker runs.
        pytest.param(pairing(), "STOPPED", [START], id="pairing-stopped-start"),
        pytest.param(pairing(), "EXITED", [START], id="pairing-exited-start"),
        pytest.param(pairing(), "RUNNING", [], id="pairing-running-nothing"),
        # pairing past its deadline: end the pairing once the worker is gone, never restart it.
        pytest.param(expired_pairing(), "STOPPED", [END], id="expired-pairing-stopped-end"),
        pytest.param(expired_pairing(), "EXITED", [END], id="expired-pairing-exited-end"),
        pytest.param(expired_pairing(), "FATAL", [END], id="expired-pairing-fatal-end"),
        pytest.param(expired_pairing(), "RUNNING", [STOP], id="expired-pairing-running-stop-not-end"),
        pytest.param(pairing(deadline=None), "STOPPED", [END], id="pairing-without-deadline-stopped-end"),
        # teardown: the worker must run to wipe the credentials.
        pytest.param(teardown(), "STOPPED", [START], id="teardown-stopped-start"),
        pytest.param(teardown(), "EXITED", [START], id="teardown-exited-start"),
        pytest.param(teardown(), "RUNNING", [], id="teardown-running-nothing"),
    ],
)
def test_plan_brings_one_slot_in_line(slot, state, expected):
    assert kinds_for(slot, state) == expected


@pytest.mark.parametrize(
    "slot",
    [
        pytest.param(active(), id="active"),
        pytest.param(sleeping(), id="sleeping"),
        pytest.param(available(), id="available"),
        pytest.param(pairing(), id="pairing"),
        pytest.param(teardown(), id="teardown"),
        pytest.param(expired_pairing(), id="expired-pairing"),
    ],
)
def test_plan_leaves_a_stopping_program_alone(slot):
    assert kinds_for(slot, "STOPPING") == []


def test_plan_handles_each_slot_independently():
    slots = [active(), sleeping(), available(), expired_pairing()]
    programs = {"ACTIVE01": "EXITED", "SLEEP001": "RUNNING", "AVAIL001": "STOPPED"}

    actions = plan(slots, programs, NOW)

    assert actions == [
        Action(START, "ACTIVE01"),
        Action(STOP, "SLEEP001"),
        Action(ADD, "PAIR0001"),
        Action(END, "PAIR0001"),
    ]


def test_plan_ignores_programs_of_slots_it_was_not_given():
    assert plan([], {"GONE0001": "RUNNING"}, NOW) == []


# --- the loop (issue 10, item 6): Redis away is ridden out, never a crash ---


class _EndOfTest(BaseException):
    """Ends run_forever from inside (it catches every Exception, on purpose)."""


class _FlakyRedisStore:
    """A store whose Redis stops answering while the loop waits for a nudge, for ``outage`` calls (passes
    and waits alike), then answers again; the loop ends after ``passes`` good passes."""

    def __init__(self, outage: int, passes: int):
        self.outage, self.passes, self.good_passes, self.waits = outage, passes, 0, 0

    def _redis(self):
        if self.waits and self.outage:  # down from the first wait on
            self.outage -= 1
            raise redis.ConnectionError("Error 2 connecting to redis.sock. No such file or directory.")

    def all(self):
        self._redis()
        self.good_passes += 1
        if self.good_passes > self.passes:
            raise _EndOfTest
        return []

    def wait_for_nudge(self, timeout):
        self.waits += 1
        self._redis()
        return False


class _NoPrograms:
    def slot_states(self):
        return {}


def test_the_loop_rides_out_redis_lost_while_it_waits_for_a_nudge_and_reconciles_again(caplog):
    caplog.set_level(logging.INFO, logger="controlplane.reconciler")
    store = _FlakyRedisStore(outage=3, passes=6)
    with pytest.raises(_EndOfTest):
        Reconciler(store, _NoPrograms(), interval=0.01).run_forever()
    assert store.good_passes == 7  # it went on reconciling once Redis was back
    said = [r.getMessage() for r in caplog.records if r.name == "controlplane.reconciler"]
    assert sum("Redis unreachable" in m for m in said) == 1  # once per outage, not once per attempt
    assert sum("Redis reachable again" in m for m in said) == 1
