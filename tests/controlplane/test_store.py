"""controlplane.store against a real Redis: the atomic line <-> slot steps and their refusals."""

import contextlib
import json
import threading
import time

import pytest

from controlplane.errors import Refused
from controlplane.states import SlotStatus
from controlplane.store import SlotStore, command_key

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
    # Many bystander slots make each snapshot span several of Redis's reads of the request, so a
    # snapshot that were not one transaction would let the racing scripts run in its middle.
    store.create_slots(1500)
    slots = store.create_slots(20)
    barrier = threading.Barrier(len(slots) + 1)
    duplicates = []
    done = threading.Event()
    moves = []

    def keep_pairing(slot_id):
        # Re-pair the line over and over for a second: each success evicts the holder.
        barrier.wait()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
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

    assert len(moves) > 100, "the race should move the line many times"
    assert duplicates == []
    holders = [s for s in store.all() if s.line == LINE]
    assert len(holders) == 1
    assert store.lines() == {LINE: holders[0].id}
    assert all(store.get(s).status is SlotStatus.AVAILABLE for s in slots if s != holders[0].id)


def test_begin_pairing_is_idempotent_while_pairing_and_restarts_when_overdue(store):
    (slot_id,) = store.create_slots(1)
    assert store.begin_pairing(slot_id, time.time() + 60) is True
    assert store.begin_pairing(slot_id, time.time() + 60) is False
    store.redis.hset(f"whin:slot:{slot_id}", "pair_deadline", time.time() - 1)
    assert store.begin_pairing(slot_id, time.time() + 60) is True


@pytest.mark.parametrize("state", ["active", "sleeping"])
def test_begin_pairing_refuses_enrolled_slots(store, state):
    (slot_id,) = pairing_slots(store, 1)
    store.pair_success(slot_id, LINE)
    if state == "sleeping":
        store.move(slot_id, SlotStatus.ACTIVE, SlotStatus.SLEEPING)
    with pytest.raises(Refused) as refused:
        store.begin_pairing(slot_id, time.time() + 60)
    assert (refused.value.code, refused.value.detail) == ("wrong_state", state)


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
