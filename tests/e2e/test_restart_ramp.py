"""A restart with many active slots is a ramp, not a stampede (issue 14): at most WHIN_START_CONCURRENCY
slot workers start at once, and every active slot comes back connected.

The bound is checked on what supervisord and the workers leave behind, not on the reconciler's word:
a worker starts when supervisord.log says it spawned it, and has started when its own log says
"connected". At no moment may more than the budget be between the two.
"""

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.gateway import Gateway, wait_for
from tests.gateway_logs import slot_event_times, supervisord_events

ACTIVE = 6
CONCURRENCY = 2

_SPAWNED = re.compile(r"^spawned: 'slot-([A-Z0-9]+)' with pid \d+")


def spawn_times(logs_dir: Path, since: float) -> dict[str, list[float]]:
    """slot id -> the times supervisord spawned its worker after ``since`` (epoch seconds)."""
    spawned: dict[str, list[float]] = {}
    for at, level, message in supervisord_events(logs_dir):
        if level == "INFO" and (match := _SPAWNED.match(message)) and at >= since:
            spawned.setdefault(match[1], []).append(at)
    return spawned


def connected_time(logs_dir: Path, slot_id: str, since: float) -> float | None:
    """When the slot's worker first logged "connected" after ``since``."""
    return next((at for at in slot_event_times(logs_dir, slot_id, f"slot {slot_id}: connected") if at >= since), None)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of the intervals open at one moment (an end before a start at the same time)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                   key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_a_restart_brings_every_active_slot_back_at_most_the_budget_starting_at_once(make_gateway, new_line):
    gw: Gateway = make_gateway(WHIN_START_CONCURRENCY=str(CONCURRENCY))
    slots = gw.provision(ACTIVE)
    with ThreadPoolExecutor(ACTIVE) as pool:  # as people do: each at their own phone, at the same time
        list(pool.map(gw.enroll, slots, [new_line() for _ in slots]))
    gw.stop()

    restarted = time.time()
    gw.start()
    wait_for(lambda: all(gw.detail(s)["connected"] for s in slots), timeout=30,
             what=f"all {ACTIVE} active slots to connect again")
    ramp = time.time() - restarted

    logs_dir = gw.data_dir / "logs"
    spawned = spawn_times(logs_dir, restarted - 1)
    assert sorted(spawned) == sorted(slots), spawned  # each came back, and only the active ones
    intervals = []
    for slot_id in slots:
        (start,) = spawned[slot_id]  # spawned once: no crash, no restart loop
        end = connected_time(logs_dir, slot_id, start - 1)
        assert end is not None and end >= start - 0.01, (slot_id, start, end)
        intervals.append((start, end))
    assert most_at_once(intervals) <= CONCURRENCY, sorted(intervals)
    assert most_at_once(intervals) == CONCURRENCY  # the budget was used: a ramp, not one start at a time
    print(f"restart -> all {ACTIVE} connected: {ramp:.1f} s")  # bounded by the wait above
