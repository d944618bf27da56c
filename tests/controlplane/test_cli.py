"""whinctl against a running gateway: the same actions as the API, friendly errors, JSON for scripts."""

import json
import os
import subprocess
import sys

from tests.gateway import QUEUE_KEY, REPO, free_port, wait_for


def whinctl(gateway, *args: str) -> subprocess.CompletedProcess:
    return gateway.whinctl(*args)


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


def test_whinctl_finds_the_ports_the_running_instance_was_started_with(gateway, new_line):
    # A second terminal: the same project folder and data folder, but none of make run's variables.
    bare = {name: value for name, value in gateway.env.items()
            if name not in ("WHIN_PORT", "WHIN_SIMNET_PORT", "WHIN_ENGINE", "WHIN_REDIS_URL")}
    assert gateway.port != 8080 and gateway.simnet_port != 8090
    (slot_id,) = gateway.provision(1)
    line = new_line()
    scanned = subprocess.run([sys.executable, "-m", "controlplane.cli", "sim-scan", slot_id, line], cwd=REPO,
                             env=bare, capture_output=True, text=True, timeout=60)
    assert scanned.returncode == 0, scanned.stderr
    sent = subprocess.run([sys.executable, "-m", "controlplane.cli", "sim-send", "34611000019", line, "hola"],
                          cwd=REPO, env=bare, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: gateway.status_of(slot_id) == "active", what="the slot to be linked")


def test_with_no_gateway_running_every_command_is_one_sentence(tmp_path):
    env = {**os.environ, "WHIN_DATA_DIR": str(tmp_path / "var"), "WHIN_ENGINE": "sim",
           "WHIN_PORT": str(free_port()), "WHIN_SIMNET_PORT": str(free_port()), "WHIN_API_TOKENS": "t",
           "WHIN_QUEUE_KEY": QUEUE_KEY}
    for args in (["sim-scan", "AB12CD34", "34666123456"], ["sim-send", "34611000009", "34666123456", "hola"],
                 ["list"], ["provision", "1"], ["kill", "AB12CD34"]):
        result = subprocess.run([sys.executable, "-m", "controlplane.cli", *args], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr, args
        (sentence,) = result.stderr.strip().splitlines()
        assert sentence.startswith("Error: ") and "is the gateway running" in sentence, (args, sentence)
