"""Redis stopped under a running gateway (its own embedded Redis, as `make run` has): nothing is lost.

The slot runs the whatsmeow engine with only neonize's Go library played (FakeGo, driven through its
control folder): whatsmeow acknowledges a message to WhatsApp before our handler sees it, so a worker
that exited while Redis was away would lose it for good (issue 10, item 2).
"""

import json
import os
import time
import uuid

import pytest
import redis

from controlplane.messaging.events import message_event_id
from tests.gateway import REPO, wait_for
from tests.slotworker.engines.fakego import CONTROL_ENV

FAKE_SITE = REPO / "tests" / "slotworker" / "engines" / "fakego_site"
LINE = "34666777001"
SENDER = "34611122233"


class FakeWhatsApp:
    """Tells the FakeGo inside a slot's worker what the network does (see fakego.CONTROL_ENV)."""

    def __init__(self, folder):
        self.folder = folder

    def order(self, slot_id: str, command: dict):
        folder = self.folder / slot_id
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{command['op']}"
        tmp = folder / f".{name}.tmp"
        tmp.write_text(json.dumps(command))
        tmp.rename(folder / f"{name}.json")  # whole, or not there
        return folder / f"{name}.taken"

    def taken_by(self, taken, timeout=20) -> int:
        """The pid of the worker whose FakeGo took the command (it writes it once it has)."""
        return wait_for(lambda: taken.exists() and taken.read_text().strip().isdigit() and int(taken.read_text()),
                        timeout=timeout, what=f"FakeGo to take {taken.name}")


@pytest.fixture
def outage_gateway(own_receiver, make_gateway, tmp_path):
    control = tmp_path / "fakego-control"
    control.mkdir()
    env = {"WHIN_ENGINE": "whatsmeow", "WHIN_TEST_FAKE_GO": "reachable", CONTROL_ENV: str(control),
           "WHIN_WEBHOOK_URL": own_receiver.url, "WHIN_PAIRING_TIMEOUT": "60",
           "PYTHONPATH": os.pathsep.join([str(FAKE_SITE), str(REPO)])}
    return make_gateway(embedded_redis=True, **env), FakeWhatsApp(control)


def redis_down(gw) -> bool:
    try:
        gw.redis.ping()
    except redis.RedisError:
        return True
    return False


def linked_slot(gw, phone: FakeWhatsApp, receiver) -> str:
    (slot_id,) = gw.provision(1)
    response = gw.api("GET", f"/enroll/{slot_id}")
    assert response.status_code == 200, response.text
    phone.taken_by(phone.order(slot_id, {"op": "pair", "line": LINE}))
    wait_for(lambda: gw.detail(slot_id).get("connected"), timeout=20, what="the slot to connect")
    wait_for(lambda: receiver.delivered(type="slot.status", line=LINE, status="enrolled"), timeout=30,
             what="the enrolled event")
    return slot_id


def test_a_message_that_arrives_while_redis_is_stopped_is_delivered_once_redis_is_back(outage_gateway,
                                                                                      own_receiver):
    gw, phone = outage_gateway
    slot_id = linked_slot(gw, phone, own_receiver)
    pid = gw.slot_pid(slot_id)

    gw.supervisorctl("stop", "redis")
    wait_for(lambda: redis_down(gw), what="Redis to be down")
    message_id = f"3EB0{uuid.uuid4().hex[:16].upper()}"
    taken = phone.order(slot_id, {"op": "deliver", "sender": SENDER, "text": "¿Sigue libre el ático?",
                                  "id": message_id})
    assert phone.taken_by(taken) == pid  # whatsmeow has it, and has acknowledged it to WhatsApp
    time.sleep(4)  # the command loop meets the outage many times over (it polls every 0.5 s)
    info = gw.supervisor.process_info(slot_id)
    assert (info["statename"], info["pid"]) == ("RUNNING", pid), "the worker exited during the outage"
    assert redis_down(gw)

    gw.supervisorctl("start", "redis")
    webhook_id = message_event_id(LINE, message_id)
    wait_for(lambda: [e for e in own_receiver.delivered(type="message", line=LINE)
                      if e["payload"]["Message"]["conversation"] == "¿Sigue libre el ático?"],
             timeout=60, what="the message to be delivered")
    time.sleep(3)  # a second copy would come within the delivery back-off (1, 1, 2 s here)
    assert [a.status for a in own_receiver.attempts_for(webhook_id)] == [200]
    info = gw.supervisor.process_info(slot_id)
    assert (info["statename"], info["pid"]) == ("RUNNING", pid)
    assert gw.detail(slot_id)["connected"] is True  # and the slot still serves

    log = (gw.data_dir / "logs" / f"slot-{slot_id}.log").read_text()
    assert "Sigue libre" not in log and "tico" not in log


def test_the_reconciler_rides_out_a_redis_outage_and_logs_only_json(outage_gateway, own_receiver):
    gw, _phone = outage_gateway
    pid = gw.supervisor.process_info_by_name("reconciler")["pid"]
    log_path = gw.data_dir / "logs" / "reconciler.log"

    gw.supervisorctl("stop", "redis")
    wait_for(lambda: redis_down(gw), what="Redis to be down")
    time.sleep(4)  # WHIN_RECONCILE_INTERVAL is 0.5 s: many passes and waits meet the outage
    info = gw.supervisor.process_info_by_name("reconciler")
    assert (info["statename"], info["pid"]) == ("RUNNING", pid), "the reconciler died with Redis"

    gw.supervisorctl("start", "redis")
    wait_for(lambda: not redis_down(gw), timeout=30, what="Redis to be back")
    # It reconciles again: a slot's program that supervisord lost is added and started by it.
    (slot_id,) = gw.provision(1)
    assert gw.api("GET", f"/enroll/{slot_id}").status_code == 200
    gw.supervisorctl("stop", f"slot-{slot_id}")
    wait_for(lambda: gw.supervisor.process_info(slot_id)["statename"] == "RUNNING", timeout=30,
             what="the reconciler to start the pairing slot again")
    info = gw.supervisor.process_info_by_name("reconciler")
    assert (info["statename"], info["pid"]) == ("RUNNING", pid)

    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    for line in lines:
        json.loads(line)  # every line JSON: no raw traceback
    assert any("Redis unreachable" in json.loads(line)["event"] for line in lines)


def test_a_slot_stopped_during_a_long_outage_gives_its_message_up_within_stopwaitsecs_and_says_so(outage_gateway,
                                                                                                   own_receiver):
    gw, phone = outage_gateway
    slot_id = linked_slot(gw, phone, own_receiver)
    pid = gw.slot_pid(slot_id)
    gw.supervisorctl("stop", "redis")
    wait_for(lambda: redis_down(gw), what="Redis to be down")
    taken = phone.order(slot_id, {"op": "deliver", "sender": SENDER, "text": "perdido", "id": "3EB0LOST0001"})
    assert phone.taken_by(taken) == pid

    gw.supervisorctl("stop", f"slot-{slot_id}")  # SIGTERM; supervisord SIGKILLs after stopwaitsecs (10 s)
    wait_for(lambda: gw.supervisor.process_info(slot_id)["statename"] == "STOPPED", timeout=30,
             what="the worker to stop")
    supervisord_log = (gw.data_dir / "logs" / "supervisord.log").read_text()
    assert f"stopped: slot-{slot_id} (exit status 0)" in supervisord_log  # it ended itself, in time
    assert "SIGKILL" not in supervisord_log
    entries = [json.loads(line) for line in (gw.data_dir / "logs" / f"slot-{slot_id}.log").read_text().splitlines()
               if line.startswith("{")]
    given_up = [e for e in entries if e["level"] == "ERROR" and "they are lost" in e["event"]]
    assert len(given_up) == 1 and "1 inbound event(s)" in given_up[0]["event"]
    assert not [e for e in entries if "perdido" in json.dumps(e) or SENDER[-6:] in json.dumps(e)]
