"""Logs are JSON lines with the slot id and the event; the gateway's real log files are checked."""

import json

from tests.gateway import wait_for


def _lines(path):
    return [line for line in path.read_text().splitlines() if line.strip()]


def test_every_log_line_of_a_slot_worker_is_json_with_its_slot_id(gateway, new_line):
    line = new_line()
    slot_id = gateway.enrolled_slot(line)
    assert gateway.api("GET", f"/sleep/{line}").status_code == 200
    log = gateway.data_dir / "logs" / f"slot-{slot_id}.log"
    entries = wait_for(lambda: [json.loads(x) for x in _lines(log)], what="the slot's log")
    assert all({"ts", "level", "logger", "event"} <= e.keys() and e["slot"] == slot_id for e in entries)
    events = " ".join(e["event"] for e in entries)
    assert "paired with line …" in events and line not in events  # numbers are masked


def test_the_api_logs_json_lines_only_gunicorns_own_included(gateway):
    gateway.api("GET", "/slots")
    log = gateway.data_dir / "logs" / "api.log"
    entries = wait_for(lambda: (e := [json.loads(x) for x in _lines(log)]) and  # every line parses
                       any(x["event"] == "GET /slots 200" for x in [{**y, "event": y["event"].rsplit(" ", 1)[0]}
                                                                   for y in e]) and e,
                       what="the access log line")
    assert {"gunicorn.error", "gunicorn.access"} <= {e["logger"] for e in entries}
    for program in ("reconciler", "delivery-1"):  # whatever they logged so far: JSON too
        assert all(json.loads(x)["event"] for x in _lines(gateway.data_dir / "logs" / f"{program}.log"))


def test_the_access_log_masks_lines_in_paths(gateway, new_line):
    line = new_line()
    gateway.enrolled_slot(line)
    assert gateway.api("GET", f"/sleep/{line}").status_code == 200
    log = gateway.data_dir / "logs" / "api.log"
    wait_for(lambda: any(f"GET /sleep/…{line[-3:]} 200" in json.loads(x)["event"] for x in _lines(log)),
             what="the masked access line")
    assert line not in log.read_text()


def test_a_path_with_a_line_separator_stays_on_one_log_line(gateway):
    # Found by the OpenAPI fuzz: a U+0085 written raw splits a JSON line for splitlines() readers. (gunicorn
    # decodes a path's bytes as latin-1, so the byte 0x85 of "%C2%85" is the U+0085 in the log.)
    gateway.api("GET", "/slot/%C2%85AAAAAA")
    log = gateway.data_dir / "logs" / "api.log"
    wait_for(lambda: "/slot/" in log.read_text() and "\\u0085" in log.read_text(), what="the access line")
    assert all(json.loads(line) for line in _lines(log))
