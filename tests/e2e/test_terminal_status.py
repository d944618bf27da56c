"""One kill, one eviction or one phone unlink ends an enrollment with exactly one terminal slot.status,
the right one, whatever the timing; and a line's seq counts its events with no gap and no repeat.

Regression tests for issue 9, bug 2: a kill soon after linking also sent ``logged_out`` (the echo of
the worker's own logout taken for the phone's unlink), and so did the old slot of an eviction.
"""

import time

from controlplane.core import keys
from tests.gateway import wait_for

TERMINAL = {"killed", "evicted", "logged_out"}


def settled_events(gateway, receiver, line, slots):
    """Every event of the line, once the slots' workers have exited (nothing more can come from them)
    and every number the line used has been delivered; in seq order."""
    for slot_id in slots:
        wait_for(lambda s=slot_id: not gateway.detail(s)["resetting"], timeout=30, what=f"slot {slot_id} to be wiped")
    for slot_id in slots:
        wait_for(lambda s=slot_id: gateway.detail(s)["status"] != "available" or not gateway.supervisor.is_running(s),
                 timeout=30, what=f"the worker of released slot {slot_id} to exit")
    used = int(gateway.redis.get(keys.seq_key(line)) or 0)

    def all_numbers_arrived():
        seqs = {e["seq"] for e in receiver.delivered(line=line)}
        return seqs >= set(range(1, used + 1))

    wait_for(all_numbers_arrived, timeout=30, what=f"events 1..{used} of line {line} to be delivered")
    by_seq = {}
    for event in receiver.delivered(line=line):
        by_seq.setdefault(event["seq"], event)  # retries of one event repeat its seq and its id
    events = [by_seq[s] for s in sorted(by_seq)]
    assert [e["seq"] for e in events] == list(range(1, used + 1)), "seq has a gap or a repeat"
    ids_by_seq = {}
    for event in receiver.delivered(line=line):
        ids_by_seq.setdefault(event["seq"], set()).add((event["type"], event.get("status"), event["slot"]))
    assert all(len(v) == 1 for v in ids_by_seq.values()), f"two events share a seq: {ids_by_seq}"
    return events


def statuses(events):
    return [(e["slot"], e["status"]) for e in events if e["type"] == "slot.status"]


def active_in_redis(gateway, slot_id):
    return gateway.redis.hget(keys.slot_key(slot_id), "status") == "active"


def kill_soon_after_linking(gateway, new_line, delay):
    """Link a line and kill it ``delay`` s after the store first says active; returns (slot, line)."""
    line = new_line()
    (slot_id,) = gateway.provision(1)
    assert gateway.scan(line, gateway.enroll_qr_text(slot_id)).status_code == 200
    wait_for(lambda: active_in_redis(gateway, slot_id), timeout=30, interval=0.005, what=f"slot {slot_id} to link")
    time.sleep(delay)
    response = gateway.api("GET", f"/kill/{line}")
    assert (response.status_code, response.text) == (200, "OK")
    return slot_id, line


def test_ten_quick_kills_right_after_linking_each_send_one_killed_and_nothing_else(gateway, receiver, new_line):
    killed = [kill_soon_after_linking(gateway, new_line, 0) for _ in range(10)]
    for slot_id, line in killed:
        assert statuses(settled_events(gateway, receiver, line, [slot_id])) == [
            (slot_id, "enrolled"), (slot_id, "killed")]


def test_kills_at_varied_small_delays_after_linking_send_one_killed(gateway, receiver, new_line):
    killed = [kill_soon_after_linking(gateway, new_line, delay)
              for delay in (0.0, 0.01, 0.03, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6)]
    for slot_id, line in killed:
        events = settled_events(gateway, receiver, line, [slot_id])
        assert statuses(events) == [(slot_id, "enrolled"), (slot_id, "killed")]
        assert events[-1]["payload"] == {"status": "killed", "reason": None}


def test_a_kill_racing_the_scan_itself_ends_in_at_most_one_killed(gateway, receiver, new_line):
    """Killed while the worker may still be pairing: either the line never linked (no event at all)
    or it linked and was killed; never a logged_out, never a status after killed."""
    for _ in range(5):
        line = new_line()
        (slot_id,) = gateway.provision(1)
        assert gateway.scan(line, gateway.enroll_qr_text(slot_id)).status_code == 200
        assert gateway.api("GET", f"/killid/{slot_id}").status_code == 200
        got = statuses(settled_events(gateway, receiver, line, [slot_id]))
        assert got in ([], [(slot_id, "enrolled"), (slot_id, "killed")]), got


def test_repeated_evictions_send_one_evicted_per_old_slot_and_no_logged_out(gateway, receiver, new_line):
    line = new_line()
    slots = gateway.provision(8)
    for slot_id in slots:
        gateway.enroll(slot_id, line)  # evicts the slot before
    assert gateway.api("GET", f"/kill/{line}").status_code == 200
    got = statuses(settled_events(gateway, receiver, line, slots))
    # The new slot's pairing evicts the old one in the same step: evicted (old), then enrolled (new).
    expected = [(slots[0], "enrolled")]
    for before, after in zip(slots, slots[1:], strict=False):
        expected += [(before, "evicted"), (after, "enrolled")]
    expected.append((slots[-1], "killed"))
    assert got == expected
    for slot_id in slots:
        assert [s for who, s in got if who == slot_id and s in TERMINAL] == (
            ["killed"] if slot_id == slots[-1] else ["evicted"])


def test_evicting_back_and_forth_between_two_slots(gateway, receiver, new_line):
    """The same two slots taking the line from each other: every enrollment ends once, as evicted."""
    line = new_line()
    first, second = gateway.provision(2)
    order = [first, second] * 4
    for slot_id in order:
        wait_for(lambda s=slot_id: not gateway.detail(s)["resetting"], timeout=30, what=f"slot {slot_id} to be wiped")
        gateway.enroll(slot_id, line)
    assert gateway.api("GET", f"/kill/{line}").status_code == 200
    got = statuses(settled_events(gateway, receiver, line, [first, second]))
    expected = [(order[0], "enrolled")]
    for before, after in zip(order, order[1:], strict=False):
        expected += [(before, "evicted"), (after, "enrolled")]
    expected.append((order[-1], "killed"))
    assert got == expected


def test_a_phone_unlink_sends_one_logged_out(gateway, receiver, new_line):
    for _ in range(3):
        line = new_line()
        slot_id = gateway.enrolled_slot(line)
        gateway.unlink(line)
        wait_for(lambda s=slot_id: gateway.detail(s)["status"] == "available", timeout=30,
                 what="the unlink to free the slot")
        events = settled_events(gateway, receiver, line, [slot_id])
        assert statuses(events) == [(slot_id, "enrolled"), (slot_id, "logged_out")]
        assert events[-1]["payload"] == {"status": "logged_out", "reason": "logged_out"}
