"""A gateway's logs read as timed events: supervisord's own log, and a slot worker's JSON lines."""

import json
import re
from datetime import datetime
from pathlib import Path

# supervisord.log: "2025-01-31 12:00:00,123 INFO spawned: 'slot-ABCD1234' with pid 4242" (local time).
_SUPERVISORD_LINE = re.compile(r"^(\S+ \S+),(\d{3}) (\w+) (.*)$")


def supervisord_events(logs_dir: Path) -> list[tuple[float, str, str]]:
    """(epoch seconds, level, message) for each line of the gateway's supervisord.log."""
    events = []
    for line in (logs_dir / "supervisord.log").read_text().splitlines():
        if match := _SUPERVISORD_LINE.match(line):
            at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S").timestamp() + int(match[2]) / 1000
            events.append((at, match[3], match[4]))
    return events


def slot_event_times(logs_dir: Path, slot_id: str, event: str) -> list[float]:
    """When (epoch seconds) the slot's worker logged ``event``, in order (its JSON lines carry UTC times)."""
    times = []
    for line in (logs_dir / f"slot-{slot_id}.log").read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            at = datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
            times.append((at - datetime(1970, 1, 1)).total_seconds())
    return times
