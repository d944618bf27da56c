"""The reconciler's pure decisions: which slot workers should run, and the actions that get them there."""

import logging
import time

import pytest
import redis

from controlplane.core.config import ConfigError, Settings, default_start_concurrency
from controlplane.core.states import SlotStatus
from controlplane.core.store import Slot
from controlplane.reconciler import (
    Action,
    ActionKind,
    Reconciler,
    bound_starts,
    held_elsewhere,
    mine,
    plan,
    plan_foreign,
    should_run,
    starting,
)

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

    def wait_for_nudge(self, timeout, own=None):
        self.waits += 1
        self._redis()
        return False


class _NoPrograms:
    def slot_programs(self):
        return {}, {}


def test_the_loop_rides_out_redis_lost_while_it_waits_for_a_nudge_and_reconciles_again(caplog):
    caplog.set_level(logging.INFO, logger="controlplane.reconciler")
    store = _FlakyRedisStore(outage=3, passes=6)
    with pytest.raises(_EndOfTest):
        Reconciler(store, _NoPrograms(), interval=0.01).run_forever()
    assert store.good_passes == 7  # it went on reconciling once Redis was back
    said = [r.getMessage() for r in caplog.records if r.name == "controlplane.reconciler"]
    assert sum("Redis unreachable" in m for m in said) == 1  # once per outage, not once per attempt
    assert sum("Redis reachable again" in m for m in said) == 1


# --- the start budget (issue 14): at most WHIN_START_CONCURRENCY workers starting at once ---

SETTLE = 15.0


def slot(slot_id, status=SlotStatus.ACTIVE, **fields):
    return Slot(slot_id, status, line="34666" + slot_id[-6:].rjust(6, "0"), **fields)


def bounded(slots, programs, ages=None, concurrency=2, settle=SETTLE):
    """plan, then bound_starts, as a pass does: (kinds and slots done now, slots waiting)."""
    actions = plan(slots, programs, NOW)
    result = bound_starts(actions, slots, programs, ages or {}, concurrency, settle)
    return [(a.kind, a.slot_id) for a in result.actions], result.waiting


def test_after_a_restart_only_the_budget_starts_and_the_rest_wait_in_store_order():
    slots = [slot(f"ACT{i:05d}") for i in range(6)]
    programs = {s.id: "STOPPED" for s in slots}

    now, waiting = bounded(slots, programs, concurrency=2)

    assert now == [(START, "ACT00000"), (START, "ACT00001")]
    assert waiting == ["ACT00002", "ACT00003", "ACT00004", "ACT00005"]


@pytest.mark.parametrize(
    ("state", "connected", "age", "counts"),
    [
        pytest.param("STARTING", False, 0.0, True, id="starting-just-spawned"),
        pytest.param("RUNNING", False, 3.0, True, id="running-not-connected-yet"),
        pytest.param("BACKOFF", False, 1.0, True, id="backoff-just-respawned"),
        pytest.param("RUNNING", True, 3.0, False, id="connected-is-started"),
        pytest.param("RUNNING", False, SETTLE, False, id="never-connected-settled-after-settle-time"),
        pytest.param("RUNNING", False, SETTLE + 100, False, id="long-running-not-connected"),
        pytest.param("RUNNING", False, None, False, id="age-unknown-counts-as-settled"),
        pytest.param("STOPPED", False, None, False, id="stopped"),
        pytest.param("STOPPING", False, None, False, id="stopping"),
        pytest.param("EXITED", False, None, False, id="exited"),
    ],
)
def test_what_counts_as_starting(state, connected, age, counts):
    one = slot("ONE00001", connected=connected)
    ages = {} if age is None else {one.id: age}
    assert starting([one], {one.id: state}, ages, SETTLE) == ({one.id} if counts else set())


@pytest.mark.parametrize(
    ("already_starting", "expected_now"),
    [
        pytest.param(0, 2, id="none-starting-two-places"),
        pytest.param(1, 1, id="one-starting-one-place"),
        pytest.param(2, 0, id="budget-full-none"),
        pytest.param(3, 0, id="over-budget-none-never-negative"),
    ],
)
def test_workers_already_starting_take_places(already_starting, expected_now):
    busy = [slot(f"BUSY{i:04d}") for i in range(already_starting)]
    waiting = [slot(f"WAIT{i:04d}") for i in range(4)]
    programs = {s.id: "RUNNING" for s in busy} | {s.id: "STOPPED" for s in waiting}
    ages = {s.id: 1.0 for s in busy}

    now, still = bounded(busy + waiting, programs, ages, concurrency=2)

    assert now == [(START, s.id) for s in waiting[:expected_now]]
    assert still == [s.id for s in waiting[expected_now:]]


def test_connected_and_settled_workers_free_their_places():
    connected = slot("CONN0001", connected=True)
    stuck = slot("STUCK001")  # pairing, network down: never connects, stops counting after the settle time
    young = slot("YOUNG001")
    waiting = [slot(f"WAIT{i:04d}") for i in range(3)]
    programs = {connected.id: "RUNNING", stuck.id: "RUNNING", young.id: "RUNNING"} | {
        s.id: "STOPPED" for s in waiting}
    ages = {connected.id: 1.0, stuck.id: SETTLE + 1, young.id: 1.0}

    now, still = bounded([connected, stuck, young, *waiting], programs, ages, concurrency=3)

    assert now == [(START, "WAIT0000"), (START, "WAIT0001")]  # 3 places, young holds one
    assert still == ["WAIT0002"]


def test_teardown_starts_first_then_pairing_then_active():
    act1, act2 = slot("ACT00001"), slot("ACT00002")
    tear = Slot("TEAR0001", SlotStatus.AVAILABLE, teardown=True)
    pair = Slot("PAIR0001", SlotStatus.AVAILABLE, pairing=True, pair_deadline=NOW + 60)
    slots = [act1, pair, act2, tear]
    programs = {s.id: "STOPPED" for s in slots}

    assert bounded(slots, programs, concurrency=2) == ([(START, "TEAR0001"), (START, "PAIR0001")],
                                                       ["ACT00001", "ACT00002"])
    assert bounded(slots, programs, concurrency=3)[0][-1] == (START, "ACT00001")


def test_add_stop_and_end_pairing_are_never_held_back():
    busy = [slot(f"BUSY{i:04d}") for i in range(2)]
    new_active = slot("NEWACT01")  # supervisord does not know it: ADD now, its START waits
    sleeper = slot("SLEEP001", status=SlotStatus.SLEEPING)
    over = Slot("PAIR0001", SlotStatus.AVAILABLE, pairing=True, pair_deadline=NOW - 1)
    programs = {busy[0].id: "STARTING", busy[1].id: "RUNNING", sleeper.id: "RUNNING", over.id: "EXITED"}
    ages = {busy[0].id: 0.0, busy[1].id: 2.0, sleeper.id: 1.0}

    now, still = bounded([*busy, new_active, sleeper, over], programs, ages, concurrency=2)

    assert now == [(ADD, "NEWACT01"), (STOP, "SLEEP001"), (END, "PAIR0001")]
    assert still == ["NEWACT01"]


def test_a_ramp_pass_by_pass_never_has_more_than_the_budget_starting():
    """Six active slots after a restart, two at a time: each pass starts what the connected ones freed."""
    ids = [f"ACT{i:05d}" for i in range(6)]
    connected: set[str] = set()
    programs = {i: "STOPPED" for i in ids}
    ages: dict[str, float] = {}
    for _ in range(10):
        slots = [slot(i, connected=i in connected) for i in ids]
        result = bound_starts(plan(slots, programs, NOW), slots, programs, ages, 2, SETTLE)
        for action in result.actions:
            programs[action.slot_id], ages[action.slot_id] = "RUNNING", 0.0
        assert len(starting(slots, programs, ages, SETTLE) | {a.slot_id for a in result.actions}) <= 2
        connected |= {i for i in ids if programs[i] == "RUNNING"}  # each connects before the next pass
        if connected == set(ids):
            break
    assert connected == set(ids)


class _Waiting:
    """A store with more active slots than the budget, none connecting, that records each wait's timeout."""

    def __init__(self, passes: int):
        self.passes, self.timeouts = passes, []
        self.slots = [slot(f"ACT{i:05d}") for i in range(5)]

    def all(self):
        if len(self.timeouts) >= self.passes:
            raise _EndOfTest
        return self.slots

    def wait_for_nudge(self, timeout, own=None):
        self.timeouts.append(timeout)
        return False


class _StoppedPrograms:
    def __init__(self):
        self.started: list[str] = []

    def slot_programs(self):
        return {f"ACT{i:05d}": "STOPPED" for i in range(5)}, {}

    def add_programs(self, ids):
        raise AssertionError(ids)

    def start(self, slot_id):
        self.started.append(slot_id)


def test_while_starts_wait_the_next_pass_comes_soon_then_the_interval_again():
    store, programs = _Waiting(passes=2), _StoppedPrograms()
    with pytest.raises(_EndOfTest):
        Reconciler(store, programs, interval=5.0, start_concurrency=2).run_forever()
    assert store.timeouts == [0.25, 0.25]  # the stub's programs never run, so starts keep waiting
    assert programs.started == ["ACT00000", "ACT00001"] * 2

    store.slots = []
    store.timeouts, store.passes = [], 1
    with pytest.raises(_EndOfTest):
        Reconciler(store, programs, interval=5.0, start_concurrency=2).run_forever()
    assert store.timeouts == [5.0]


class _CrashLooping:
    """Two active slots whose workers crash at start: supervisord respawns them, always just spawned
    (age 0.1 s), never connected; three more active slots stopped, waiting for a place."""

    def __init__(self):
        self.started: list[str] = []
        self.slots = [slot(f"BAD{i:05d}") for i in range(2)] + [slot(f"ACT{i:05d}") for i in range(3)]

    def all(self):
        return self.slots

    def slot_programs(self):
        states = {s.id: ("RUNNING" if s.id.startswith("BAD") or s.id in self.started else "STOPPED")
                  for s in self.slots}
        return states, {s.id: 0.1 for s in self.slots if states[s.id] == "RUNNING"}

    def add_programs(self, ids):
        raise AssertionError(ids)

    def start(self, slot_id):
        self.started.append(slot_id)


def test_workers_crashing_at_start_hold_no_place_once_this_reconcilers_first_settle_is_over():
    fake = _CrashLooping()
    reconciler = Reconciler(fake, fake, interval=1.0, start_concurrency=2, start_settle=0.3)
    reconciler.once()
    assert fake.started == []  # supervisord says both were just spawned: maybe a ramp before ours
    time.sleep(0.35)
    reconciler.once()
    assert fake.started == ["ACT00000", "ACT00001"]  # respawns are not starts of ours
    reconciler.once()
    assert fake.started == ["ACT00000", "ACT00001"]  # ours hold their places, for their settle
    time.sleep(0.35)
    reconciler.once()
    assert fake.started == ["ACT00000", "ACT00001", "ACT00002"]


# --- WHIN_START_CONCURRENCY ---


def test_start_concurrency_defaults_to_two_per_core_at_least_two(tmp_path, monkeypatch):
    assert Settings.from_env({"WHIN_DATA_DIR": str(tmp_path)}).start_concurrency == default_start_concurrency()
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert default_start_concurrency() == 2
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert default_start_concurrency() == 16
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert default_start_concurrency() == 2


def test_start_concurrency_is_read_from_the_environment(tmp_path):
    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_START_CONCURRENCY": " 3 "})
    assert settings.start_concurrency == 3


@pytest.mark.parametrize("raw", ["0", "-1", "2.5", "many", "inf"])
def test_a_bad_start_concurrency_stops_start_up_with_a_sentence(tmp_path, raw):
    with pytest.raises(ConfigError, match=r"WHIN_START_CONCURRENCY must be a whole number of at least 1, got"):
        Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_START_CONCURRENCY": raw})


# --- more than one host ---


def placed(slot_id: str, host: str | None, status=SlotStatus.ACTIVE) -> Slot:
    return Slot(slot_id, status, line="34666000001", host=host)


def test_a_host_runs_the_slots_placed_on_it_and_a_single_machine_also_those_placed_nowhere():
    slots = [placed("HERE0001", "h1"), placed("AWAY0001", "h2"), placed("NEW00001", None)]
    assert [s.id for s in mine(slots, "h1", single_machine=False)] == ["HERE0001"]
    assert [s.id for s in mine(slots, "h1", single_machine=True)] == ["HERE0001", "NEW00001"]


def test_a_host_stops_then_removes_the_programs_of_slots_placed_elsewhere():
    slots = [placed("HERE0001", "h1"), placed("MOVED001", "h2"), placed("GONE0001", "h3"),
             placed("ASLEEP01", None, SlotStatus.SLEEPING)]
    programs = {"HERE0001": "RUNNING", "MOVED001": "RUNNING", "GONE0001": "STOPPED", "ASLEEP01": "EXITED",
                "UNKNOWN1": "RUNNING"}  # a program of no slot at all is plan()'s business, not this one's
    assert plan_foreign(slots, programs, "h1", single_machine=False) == [
        Action(ActionKind.REMOVE, "ASLEEP01"), Action(ActionKind.REMOVE, "GONE0001"), Action(STOP, "MOVED001")]
    # On a single machine a slot placed nowhere is its own.
    assert Action(ActionKind.REMOVE, "ASLEEP01") not in plan_foreign(slots, programs, "h1", single_machine=True)


def test_a_start_waits_while_another_hosts_worker_holds_the_slots_lease():
    actions = [Action(START, "FREE0001"), Action(START, "MINE0001"), Action(START, "HELD0001"),
               Action(STOP, "HELD0002")]
    holders = {"FREE0001": None, "MINE0001": "h1", "HELD0001": "h2", "HELD0002": "h2"}
    assert held_elsewhere(actions, holders, "h1") == ["HELD0001"]  # its own previous worker's lease is taken over


def host_settings(**env) -> Settings:
    return Settings.from_env({"WHIN_REDIS_URL": "redis://x", "WHIN_ROLE": "host", "WHIN_HOST_NAME": "h1",
                              "WHIN_SESSION_DB": "postgresql://x", **env})


def test_a_host_keeps_beating_while_its_pass_is_stuck(redis_client):
    from controlplane.core.hosts import HostRegistry
    from controlplane.core.store import SlotStore
    from controlplane.reconciler import HostAgent

    settings = host_settings(WHIN_RECONCILE_INTERVAL="0.2", WHIN_HOST_DEAD_AFTER="1")
    hosts = HostRegistry(redis_client, settings.host_dead_after)
    HostAgent(settings, SlotStore(redis_client), hosts).beat()  # its first pass, then no other
    time.sleep(2)  # twice WHIN_HOST_DEAD_AFTER without a pass
    assert hosts.alive("h1")


def test_a_dead_hosts_slots_are_placed_from_one_read_spread_over_the_live_hosts(redis_client, monkeypatch):
    from controlplane import placement
    from controlplane.core.hosts import HostRegistry
    from controlplane.core.store import SlotStore
    from controlplane.reconciler import HostAgent

    settings = host_settings(WHIN_HOST_DEAD_AFTER="5")
    store = SlotStore(redis_client)
    hosts = HostRegistry(redis_client, settings.host_dead_after)
    redis_client.sadd("whin:hosts", "dead")
    redis_client.hset("whin:host:dead", mapping={"heartbeat": "1", "capacity": 10})
    hosts.beat("h1", 10)
    hosts.beat("h2", 10)
    orphans = store.create_slots(6)
    for slot_id in orphans:
        redis_client.hset(f"whin:slot:{slot_id}", mapping={"status": "active", "line": "34666000001", "host": "dead"})
    reads = []
    real_read = placement.Occupancy.read
    monkeypatch.setattr(placement.Occupancy, "read", classmethod(lambda cls, *a: reads.append(1) or real_read(*a)))
    assert HostAgent(settings, store, hosts).place_orphans(store.all())
    assert len(reads) == 1
    assert sorted(store.get(s).host for s in orphans) == ["h1", "h1", "h1", "h2", "h2", "h2"]


def test_with_the_embedded_redis_an_agent_claims_no_name_so_a_second_start_beats(redis_client, monkeypatch, tmp_path):
    from controlplane import reconciler
    from controlplane.core.hosts import HostRegistry
    from controlplane.core.store import SlotStore
    from controlplane.reconciler import HostAgent

    monkeypatch.setattr(reconciler.os, "_exit", lambda code: (_ for _ in ()).throw(AssertionError("exited")))
    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_HOST_NAME": "h1",
                                  "WHIN_HOST_INSTANCE": "a1:run2"})  # no WHIN_REDIS_URL: the embedded one
    assert settings.embedded_redis
    redis_client.hset("whin:host:h1", mapping={"instance": "b2:run1", "heartbeat": time.time(), "capacity": 500})
    HostAgent(settings, SlotStore(redis_client), HostRegistry(redis_client, 30)).beat()  # persisted from before
    assert HostRegistry(redis_client, 30).alive("h1")
