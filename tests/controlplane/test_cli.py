"""whinctl against a running gateway: the same actions as the API, friendly errors, JSON for scripts."""

import json
import subprocess
import sys

from tests.gateway import REPO


def whinctl(gateway, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controlplane.cli", *args], cwd=REPO, env=gateway.env,
                          capture_output=True, text=True, timeout=60)


def test_provision_enroll_scan_message_and_kill_from_the_command_line(gateway, receiver, new_line):
    created = json.loads(whinctl(gateway, "provision", "1", "--json").stdout)["created"]
    (slot_id,) = created
    line = new_line()
    scanned = whinctl(gateway, "sim-scan", slot_id, line)
    assert scanned.returncode == 0, scanned.stderr
    listing = json.loads(whinctl(gateway, "list", "--json").stdout)
    assert {"slot": slot_id, "status": "active", "line": line, "pairing": False} in listing
    sent = whinctl(gateway, "sim-send", "34611000009", line, "desde la terminal", "--json")
    assert sent.returncode == 0 and json.loads(sent.stdout)["devices"] == 1
    assert json.loads(whinctl(gateway, "sleep", "--line", line, "--json").stdout) == {
        "slot": slot_id, "action": "sleep", "ok": True}
    assert whinctl(gateway, "kill", slot_id).stdout.strip() == "OK"
    assert gateway.status_of(slot_id) == "available"


def test_errors_are_one_friendly_line_and_a_nonzero_exit(gateway):
    result = whinctl(gateway, "sleep", "--line", "+34666")
    assert result.returncode == 1
    assert "Write the line without the leading '+'" in result.stderr and "[invalid_line]" in result.stderr
    assert "Traceback" not in result.stderr
    drawn = whinctl(gateway, "enroll", "ZZZZZZZ9")
    assert drawn.returncode == 1 and "unknown_slot" in drawn.stderr
