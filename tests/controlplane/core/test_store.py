"""controlplane.core.store against a real Redis: the atomic line <-> slot steps and their refusals."""

import contextlib
import json
import socket
import threading
import time

import pytest
import redis

from controlplane.core.config import Settings
from controlplane.core.errors import Refused
from controlplane.core.keys import command_key, seq_key, slot_key
from controlplane.core.states import SlotPhase, SlotStatus
from controlplane.core.store import SlotStore
from controlplane.messaging.events import EventPublisher
from tests.gateway import QUEUE_KEY
from tests.helpers import queued_envelopes

LINE = "34666123456"


@pytest.fixture
def store(redis_client):
    return SlotStore(redis_client)


def pairing_slots(store, count):
    slots = store.create_slots(count)
    for slot_id in slots:
        assert store.begin_pairing(slot_id, time.time() + 60)
    return slots


def test_created_slots_start_available_and_ids_are_never_reused(store):
    created = store.create_slots(50)
    assert len(set(created)) == 50
    assert [s.id for s in store.all()] == sorted(created)
    assert all(s.status is SlotStatus.AVAILABLE and s.line is None for s in store.all())


def test_every_slot_is_read_in_one_command_sorted_and_whole(store, redis_client):
    created = store.create_slots(30)
    assert store.begin_pairing(created[3], time.time() + 60)
    redis_client.sadd("whin:slots", "HALFMADE")  # create_slots adds the id before it writes the hash
    redis_client.config_resetstat()
    slots = store.all()
    calls = {name for name in redis_client.info("commandstats") if name != "cmdstat_config"}
    assert calls == {"cmdstat_sort"}  # one SORT ... GET: no per-slot round trips at any size
    assert [s.id for s in slots] == sorted(created)
    assert [s.id for s in slots if s.pairing] == [created[3]]
    assert store.fields(("status", "line"))[0] == (sorted(created)[0], {"status": "available"})


def test_pair_success_maps_the_line_and_activates(store):
    (slot_id,) = pairing_slots(store, 1)
    assert store.pair_success(slot_id, LINE) is None
    slot = store.get(slot_id)
    assert (slot.status, slot.line, slot.pairing, slot.qr) == (SlotStatus.ACTIVE, LINE, False, None)
    assert store.lines() == {LINE: slot_id}


def test_pairing_a_held_line_evicts_the_holder_in_the_same_step(store):
    first, second = pairing_slots(store, 2)
    store.pair_success(first, LINE)
    assert store.pair_success(second, LINE) == first
    evicted = store.get(first)
    assert (evicted.status, evicted.line, evicted.teardown) == (SlotStatus.AVAILABLE, None, True)
    assert store.lines() == {LINE: second}
    # The evicted worker is told to log out and wipe.
    assert json.loads(store.redis.lpop(command_key(first))) == {"op": "logout", "reason": "evicted"}


def test_pair_success_is_refused_once_pairing_was_cancelled(store):
    (slot_id,) = pairing_slots(store, 1)
    store.release(slot_id, "killed", ("pairing",))
    with pytest.raises(Refused) as refused:
        store.pair_success(slot_id, LINE)
    assert refused.value.code == "not_pairing"
    assert store.lines() == {}


def test_twenty_pairings_of_one_line_racing_leave_exactly_one_holder(store):
    MOVES = 300
    # Many bystander slots make each snapshot span several of Redis's reads of the request, so a
    # snapshot that were not one transaction would let the racing scripts run in its middle.
    store.create_slots(1500)
    slots = store.create_slots(20)
    barrier = threading.Barrier(len(slots) + 1)
    duplicates = []
    done = threading.Event()
    moves = []

    def keep_pairing(slot_id):
        # Re-pair the line over and over until it has moved enough times (however long a busy machine
        # takes; the cap only ends a hang): each success evicts the holder.
        barrier.wait()
        cap = time.monotonic() + 60
        while len(moves) < MOVES and time.monotonic() < cap:
            if store.get(slot_id).status is SlotStatus.ACTIVE:
                continue
            store.finish_teardown(slot_id)
            with contextlib.suppress(Refused):  # another racer may have moved things meanwhile
                store.begin_pairing(slot_id, time.time() + 60)
                store.pair_success(slot_id, LINE)
                moves.append(slot_id)

    def read_snapshots():
        barrier.wait()
        while not done.is_set():
            holders = [s.id for s in store.all() if s.line == LINE]
            if len(holders) > 1:
                duplicates.append(holders)

    threads = [threading.Thread(target=keep_pairing, args=(s,)) for s in slots]
    reader = threading.Thread(target=read_snapshots)
    for t in [*threads, reader]:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()

    assert len(moves) >= MOVES, "the race should move the line many times"
    assert duplicates == []
    holders = [s for s in store.all() if s.line == LINE]
    assert len(holders) == 1
    assert store.lines() == {LINE: holders[0].id}
    assert all(store.get(s).status is SlotStatus.AVAILABLE for s in slots if s != holders[0].id)


def test_begin_pairing_is_idempotent_while_pairing_and_restarts_when_overdue(store):
    (slot_id,) = store.create_slots(1)
    assert store.begin_pairing(slot_id, time.time() + 60) is True
    assert store.begin_pairing(slot_id, time.time() + 60) is False
    store.redis.hset(slot_key(slot_id), "pair_deadline", time.time() - 1)
    assert store.begin_pairing(slot_id, time.time() + 60) is True


@pytest.mark.parametrize("state", ["active", "sleeping"])
def test_begin_pairing_refuses_enrolled_slots(store, state):
    (slot_id,) = pairing_slots(store, 1)
    store.pair_success(slot_id, LINE)
    if state == "sleeping":
        store.move(slot_id, SlotStatus.ACTIVE, SlotStatus.SLEEPING)
    with pytest.raises(Refused) as refused:
        store.begin_pairing(slot_id, time.time() + 60)
    assert (refused.value.code, refused.value.state) == ("wrong_state", state)


def test_a_qr_is_published_only_while_pairing(store):
    (slot_id,) = pairing_slots(store, 1)
    assert store.set_qr(slot_id, "code-1", time.time() + 5)
    assert store.get(slot_id).qr == "code-1"
    assert store.end_pairing(slot_id) is True
    assert store.set_qr(slot_id, "code-2", time.time() + 5) is False
    assert store.get(slot_id).qr is None
    assert store.end_pairing(slot_id) is False


def test_move_checks_the_source_state(store):
    (slot_id,) = pairing_slots(store, 1)
    store.pair_success(slot_id, LINE)
    store.move(slot_id, SlotStatus.ACTIVE, SlotStatus.SLEEPING)
    with pytest.raises(Refused):
        store.move(slot_id, SlotStatus.ACTIVE, SlotStatus.SLEEPING)
    store.move(slot_id, SlotStatus.SLEEPING, SlotStatus.ACTIVE)
    assert store.get(slot_id).status is SlotStatus.ACTIVE


def test_release_unmaps_the_line_and_flags_the_wipe_until_finished(store):
    (slot_id,) = pairing_slots(store, 1)
    store.pair_success(slot_id, LINE)
    assert store.release(slot_id, "killed", ("active", "sleeping")) == LINE
    slot = store.get(slot_id)
    assert (slot.status, slot.line, slot.teardown) == (SlotStatus.AVAILABLE, None, True)
    assert store.lines() == {}
    with pytest.raises(Refused):
        store.release(slot_id, "killed", ("active", "sleeping"))
    store.finish_teardown(slot_id)
    assert store.get(slot_id).teardown is False
    assert store.redis.exists(command_key(slot_id)) == 0


def test_unknown_slots_are_refused_everywhere(store):
    for call in (lambda: store.pair_success("NOPE0000", LINE),
                 lambda: store.release("NOPE0000", "killed", ("active",)),
                 lambda: store.move("NOPE0000", SlotStatus.ACTIVE, SlotStatus.SLEEPING),
                 lambda: store.begin_pairing("NOPE0000", time.time())):
        with pytest.raises(Refused) as refused:
            call()
        assert refused.value.code == "unknown_slot"


# --- transitions that queue their own slot.status events (events.Outbox), in the same MULTI/EXEC ---

@pytest.fixture
def publisher(redis_client):
    kwargs = redis_client.connection_pool.connection_kwargs
    connection = redis.Redis(unix_socket_path=kwargs["path"], db=kwargs["db"])  # bytes, as rq wants
    yield EventPublisher(Settings.from_env({"WHIN_QUEUE_KEY": QUEUE_KEY}), connection)
    connection.close()


def queued(publisher) -> list[tuple]:
    """(slot, status, seq, reason) of every queued event, in queue order."""
    return [(e["slot"], e["status"], e["seq"], e["payload"]["reason"])
            for e in queued_envelopes(publisher.connection, QUEUE_KEY)]


def test_an_eviction_queues_evicted_then_enrolled_in_the_pairing_step(store, publisher):
    first, second = pairing_slots(store, 2)
    assert store.pair_success(first, LINE, outbox=publisher.outbox()) is None
    assert store.pair_success(second, LINE, outbox=publisher.outbox()) == first
    assert queued(publisher) == [(first, "enrolled", 1, None), (first, "evicted", 2, f"paired on slot {second}"),
                                 (second, "enrolled", 3, None)]
    assert store.get(first).enrollment is None and store.get(second).enrollment


def test_an_enrollment_that_was_killed_cannot_also_end_as_logged_out(store, publisher):
    """The worker's logout echo after a kill (issue 9): its release of the same enrollment is refused
    and nothing is queued, however late it comes."""
    (slot_id,) = pairing_slots(store, 1)
    store.pair_success(slot_id, LINE, enrollment="E1", outbox=publisher.outbox())
    assert store.release(slot_id, "killed", ("active", "sleeping", "pairing"), outbox=publisher.outbox()) == LINE
    with pytest.raises(Refused):
        store.release(slot_id, "logged_out", ("active", "sleeping"), enrollment="E1", outbox=publisher.outbox(),
                      detail="logged_out")
    assert queued(publisher) == [(slot_id, "enrolled", 1, None), (slot_id, "killed", 2, None)]


def test_an_ended_enrollment_cannot_end_the_next_one(store, publisher):
    (slot_id,) = pairing_slots(store, 1)
    store.pair_success(slot_id, LINE, enrollment="E1", outbox=publisher.outbox())
    store.release(slot_id, "killed", ("active",), outbox=publisher.outbox())
    store.finish_teardown(slot_id)
    store.begin_pairing(slot_id, time.time() + 60)
    store.pair_success(slot_id, LINE, enrollment="E2", outbox=publisher.outbox())
    with pytest.raises(Refused) as refused:  # the first enrollment's late word
        store.release(slot_id, "logged_out", ("active", "sleeping"), enrollment="E1", outbox=publisher.outbox())
    assert (refused.value.code, refused.value.state) == ("enrollment_ended", "active")
    assert store.get(slot_id).status is SlotStatus.ACTIVE
    assert store.release(slot_id, "logged_out", ("active", "sleeping"), enrollment="E2",
                         outbox=publisher.outbox(), detail="logged_out") == LINE
    assert [e[1:3] for e in queued(publisher)] == [("enrolled", 1), ("killed", 2), ("enrolled", 3), ("logged_out", 4)]


def test_kill_unlink_and_eviction_racing_end_each_enrollment_exactly_once(store, publisher):
    """The API's kill, the worker's unlink and another slot's pairing, all at once, 30 times over."""
    slots = store.create_slots(2)
    for round_ in range(30):
        holder, other = slots[round_ % 2], slots[(round_ + 1) % 2]
        for slot_id in slots:
            store.finish_teardown(slot_id)
            with contextlib.suppress(Refused):  # between rounds: the winner's enrollment is killed
                store.release(slot_id, "killed", ("active", "sleeping", "pairing"), outbox=publisher.outbox())
            store.finish_teardown(slot_id)
        store.begin_pairing(holder, time.time() + 60)
        store.pair_success(holder, LINE, enrollment=f"R{round_}", outbox=publisher.outbox())
        store.begin_pairing(other, time.time() + 60)
        barrier = threading.Barrier(3)

        def attempt(step, barrier=barrier):
            barrier.wait()
            with contextlib.suppress(Refused):
                step()

        steps = [
            lambda h=holder: store.release(h, "killed", ("active", "sleeping"), outbox=publisher.outbox()),
            lambda h=holder, r=round_: store.release(h, "logged_out", ("active", "sleeping"), enrollment=f"R{r}",
                                                     outbox=publisher.outbox(), detail="logged_out"),
            lambda o=other: store.pair_success(o, LINE, outbox=publisher.outbox()),
        ]
        threads = [threading.Thread(target=attempt, args=(s,)) for s in steps]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    events = queued(publisher)
    assert [e[2] for e in events] == list(range(1, len(events) + 1))  # no gap, no repeat
    ends = {}
    current = {}
    for slot_id, status, _, _ in events:
        if status == "enrolled":
            current[slot_id] = len(ends)
            ends[len(ends)] = []
        else:
            ends[current[slot_id]].append(status)
    assert len(ends) >= 30
    # Every enrollment but the last ended exactly once (the last one may still be linked).
    assert all(len(v) == 1 for k, v in ends.items() if k != len(ends) - 1), ends
    assert len(ends[len(ends) - 1]) <= 1
    assert {v[0] for v in ends.values() if v} <= {"killed", "logged_out", "evicted"}


def test_a_failure_before_exec_leaves_the_slot_linked_and_no_event(store, publisher, monkeypatch):
    """The release and its report are one step: a process that dies while queueing does neither."""
    (slot_id,) = pairing_slots(store, 1)
    store.pair_success(slot_id, LINE, outbox=publisher.outbox())

    def dies(*args, **kwargs):
        raise SystemExit("the API process exits here")

    with monkeypatch.context() as patch:
        patch.setattr(redis.client.Pipeline, "execute", dies)  # at EXEC: nothing of the step is sent
        with pytest.raises(SystemExit):
            store.release(slot_id, "killed", ("active",), outbox=publisher.outbox())
    assert store.get(slot_id).status is SlotStatus.ACTIVE and store.lines() == {LINE: slot_id}
    assert store.redis.get(seq_key(LINE)) == "1"
    assert store.release(slot_id, "killed", ("active",), outbox=publisher.outbox()) == LINE
    assert [e[1:3] for e in queued(publisher)] == [("enrolled", 1), ("killed", 2)]


@pytest.mark.parametrize("dies_at", ["stage", "exec"])
def test_a_pairing_that_dies_midway_either_links_and_reports_or_does_neither(store, publisher, monkeypatch, dies_at):
    """enrolled (and the holder's evicted) are written by the step that pairs the line: a kill -9 at
    any point before EXEC leaves the line with its old holder and no event; a retry does both once."""
    first, second = pairing_slots(store, 2)
    store.pair_success(first, LINE, outbox=publisher.outbox())

    def dies(*args, **kwargs):
        raise SystemExit("the slot worker is killed here")

    with monkeypatch.context() as patch:
        if dies_at == "stage":  # after reading the holder and the counters, before MULTI
            patch.setattr(type(publisher.outbox()), "write", dies)
        else:
            patch.setattr(redis.client.Pipeline, "execute", dies)
        with pytest.raises(SystemExit):
            store.pair_success(second, LINE, outbox=publisher.outbox())
    assert store.lines() == {LINE: first} and store.get(first).status is SlotStatus.ACTIVE
    assert [e[:3] for e in queued(publisher)] == [(first, "enrolled", 1)]
    assert store.pair_success(second, LINE, outbox=publisher.outbox()) == first
    assert store.lines() == {LINE: second}
    assert [e[:3] for e in queued(publisher)] == [(first, "enrolled", 1), (first, "evicted", 2),
                                                  (second, "enrolled", 3)]


def test_sleep_and_resume_queue_their_status_in_the_same_step(store, publisher):
    (slot_id,) = pairing_slots(store, 1)
    store.pair_success(slot_id, LINE, outbox=publisher.outbox())
    store.move(slot_id, SlotStatus.ACTIVE, SlotStatus.SLEEPING, outbox=publisher.outbox())
    with pytest.raises(Refused):
        store.move(slot_id, SlotStatus.ACTIVE, SlotStatus.SLEEPING, outbox=publisher.outbox())
    store.move(slot_id, SlotStatus.SLEEPING, SlotStatus.ACTIVE, outbox=publisher.outbox())
    assert [e[1:3] for e in queued(publisher)] == [("enrolled", 1), ("sleeping", 2), ("active", 3)]


class ReplyLosingProxy:
    """A unix-socket proxy to Redis that, once armed, lets one EXEC through and loses Redis's reply:
    the connection drops after the transaction ran, as a network cut or a timeout can make it."""

    def __init__(self, target: str, path: str):
        self.target, self.path, self.armed = target, path, False
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(path)
        self.server.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            cut = threading.Event()  # set once this connection's EXEC went through: its answers are lost
            threading.Thread(target=self._answers, args=(upstream, client, cut), daemon=True).start()
            threading.Thread(target=self._requests, args=(client, upstream, cut), daemon=True).start()

    def _requests(self, client, upstream, cut):
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.armed and b"EXEC" in data:
                    self.armed = False
                    cut.set()
                    upstream.sendall(data)
                    time.sleep(0.3)  # Redis runs it and answers; the answer never reaches the client
                    client.shutdown(socket.SHUT_RDWR)
                    client.close()
                    upstream.close()
                    return
                upstream.sendall(data)

    def _answers(self, upstream, client, cut):
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if cut.is_set():
                    return
                client.sendall(data)

    def close(self):
        self.server.close()


@pytest.fixture
def lossy(redis_client, tmp_path):
    kwargs = redis_client.connection_pool.connection_kwargs
    proxy = ReplyLosingProxy(kwargs["path"], str(tmp_path / "proxy.sock"))
    client = redis.Redis(unix_socket_path=proxy.path, db=kwargs["db"], decode_responses=True)
    yield proxy, SlotStore(client)
    client.close()
    proxy.close()


def test_a_transition_whose_exec_reply_is_lost_is_not_decided_again(lossy, store, publisher):
    """redis-py reports a cut connection under WATCH as a WatchError: retried blindly, a kill that was
    done would be refused (the slot is no longer active) and its caller told it failed."""
    proxy, lossy_store = lossy
    (slot_id,) = pairing_slots(store, 1)
    store.pair_success(slot_id, LINE, enrollment="E1", outbox=publisher.outbox())
    proxy.armed = True
    assert lossy_store.release(slot_id, "killed", ("active",), outbox=publisher.outbox()) == LINE
    assert proxy.armed is False  # the reply was lost
    assert queued(publisher) == [(slot_id, "enrolled", 1, None), (slot_id, "killed", 2, None)]


def test_events_whose_exec_reply_is_lost_are_queued_once(lossy, redis_client):
    proxy, _ = lossy
    kwargs = redis_client.connection_pool.connection_kwargs
    connection = redis.Redis(unix_socket_path=proxy.path, db=kwargs["db"])
    publisher = EventPublisher(Settings.from_env({"WHIN_QUEUE_KEY": QUEUE_KEY}), connection)
    proxy.armed = True
    publisher.slot_status("SLOT0001", LINE, "enrolled")
    assert proxy.armed is False
    publisher.slot_status("SLOT0001", LINE, "sleeping")
    assert [(e[1], e[2]) for e in queued(publisher)] == [("enrolled", 1), ("sleeping", 2)]
    connection.close()


# --- the scripts' keys and their typed refusals ---

def test_scripts_touch_only_the_keys_they_are_given():
    """Every key a script reads or writes reaches it in KEYS (keys.py spells them): none is built in Lua."""
    import re

    from controlplane.core import scripts

    sources = {name: getattr(scripts, name) for name in dir(scripts) if name.isupper() and not name.startswith("_")}
    assert set(sources) == {"PAIR_SUCCESS", "RELEASE", "MOVE", "BEGIN_PAIRING", "END_PAIRING", "SET_QR"}
    key_names = {"key", "lines", "commands", "nudge", "KEYS[4]", "KEYS[5]"}
    for name, source in sources.items():
        assert "whin" not in source and "ARGV[1] .." not in source, name
        for used in re.findall(r"redis\.call\('\w+', ([^,)]+)", source):
            assert used in key_names, (name, used)
        # Locals named like keys are bound from KEYS only.
        for bound in re.findall(r"^local ([\w, ]+) = (.*)$", source, re.M):
            names, values = [n.strip() for n in bound[0].split(",")], [v.strip() for v in bound[1].split(",")]
            for n, v in zip(names, values, strict=False):
                if n in key_names:
                    assert v.startswith("KEYS["), (name, n, v)


def test_refusals_carry_the_phase_the_step_found(store):
    available, resetting, paired = store.create_slots(3)
    store.begin_pairing(resetting, time.time() + 60)
    store.release(resetting, "cancelled", ("pairing",))
    store.begin_pairing(paired, time.time() + 60)
    with pytest.raises(Refused) as refused:
        store.move(paired, SlotStatus.ACTIVE, SlotStatus.SLEEPING)
    assert (refused.value.code, refused.value.state) == ("wrong_state", SlotPhase.PAIRING)
    with pytest.raises(Refused) as refused:
        store.begin_pairing(resetting, time.time() + 60)
    assert (refused.value.code, refused.value.state) == ("wrong_state", SlotPhase.RESETTING)
    with pytest.raises(Refused) as refused:
        store.release(available, "killed", ("active", "sleeping", "pairing"))
    assert (refused.value.code, refused.value.state) == ("wrong_state", SlotPhase.AVAILABLE)
    with pytest.raises(Refused) as refused:
        store.pair_success(available, LINE)
    assert (refused.value.code, refused.value.state) == ("not_pairing", SlotPhase.AVAILABLE)
    assert [store.get(s).phase for s in (available, resetting, paired)] == [
        SlotPhase.AVAILABLE, SlotPhase.RESETTING, SlotPhase.PAIRING]


def test_a_refusal_inside_a_transaction_is_typed_too(store):
    """The Python mirror and the script agree; a script's refusal met at EXEC reads the same."""
    from controlplane.core import scripts

    (slot_id,) = store.create_slots(1)
    with pytest.raises(Refused) as refused, store.redis.pipeline(transaction=True) as pipe:
        pipe.multi()
        store._move(keys=[slot_key(slot_id)], args=["active", "sleeping"], client=pipe)
        try:
            pipe.execute()
        except redis.ResponseError as err:
            raise scripts.refusal(err) from None
    assert (refused.value.code, refused.value.state) == ("wrong_state", SlotPhase.AVAILABLE)
