"""Inbound delivery end to end: simnet phone -> slot worker -> RQ -> delivery worker -> signed webhook."""

import os
import signal
import time

import psutil

from controlplane.core import keys
from controlplane.messaging.events import message_event_id
from tests.gateway import wait_for
from tests.helpers import SENDER, delivered_message, failed_deliveries, rq_job_keys
from tests.receiver import DROPPED


def test_a_message_reaches_the_webhook_signed_with_the_contracts_envelope(gateway, receiver, new_line):
    line = new_line()
    slot_id = gateway.enrolled_slot(line)
    message_id = gateway.phone_sends(SENDER, line, "Hola, ¿está disponible el piso? 🏠")
    event = delivered_message(receiver, line, "Hola, ¿está disponible el piso? 🏠")
    assert list(event) == ["type", "line", "slot", "seq", "event", "message_id", "chat", "from", "from_me",
                           "received_at", "payload"]
    assert (event["type"], event["line"], event["slot"], event["from"]) == ("message", line, slot_id, SENDER)
    assert (event["message_id"], event["chat"], event["from_me"]) == (message_id, f"{SENDER}@s.whatsapp.net", False)
    assert abs(event["received_at"] - time.time()) < 30
    # The payload is the network's event, untouched.
    assert event["payload"]["Info"]["ID"] == message_id
    sender = event["payload"]["Info"]["MessageSource"]["Sender"]
    assert (sender["User"], sender["Server"]) == (SENDER, "s.whatsapp.net")
    # The payload is neonize's MessageEv as JSON: it parses back into the protobuf.
    from google.protobuf import json_format
    from neonize.events import MessageEv
    assert json_format.ParseDict(event["payload"], MessageEv()).Message.conversation.startswith("Hola")
    (attempt,) = receiver.attempts_for(message_event_id(line, message_id))  # verified by standardwebhooks on arrival
    assert attempt.signature.startswith("v1,")


def test_seq_counts_the_lines_events_in_order(gateway, receiver, new_line):
    line = new_line()
    gateway.enrolled_slot(line)
    texts = [f"mensaje {i}" for i in range(5)]
    for text in texts:
        gateway.phone_sends(SENDER, line, text)
    events = [delivered_message(receiver, line, text) for text in texts]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    enrolled = wait_for(lambda: receiver.delivered(type="slot.status", line=line, status="enrolled"), what="enrolled")
    assert enrolled[0]["seq"] == 1  # the line's first event
    assert seqs == list(range(2, 7))


def test_slot_status_events_go_through_the_same_pipeline(gateway, receiver, new_line):
    first, second = gateway.provision(2)
    line = new_line()
    gateway.enroll(first, line)
    assert gateway.api("GET", f"/sleep/{line}").status_code == 200
    assert gateway.api("GET", f"/resume/{line}").status_code == 200
    gateway.enroll(second, line)  # evicts the first
    assert gateway.api("GET", f"/kill/{line}").status_code == 200
    other = new_line()
    gateway.enroll(first, other)
    gateway.unlink(other)

    def statuses(the_line, slot_id):
        return [(e["status"], e["payload"]["status"]) for e in receiver.delivered(type="slot.status", line=the_line)
                if e["slot"] == slot_id]

    wait_for(lambda: [s for s, _ in statuses(line, first)] == ["enrolled", "sleeping", "active", "evicted"],
             what="the first slot's events")
    wait_for(lambda: [s for s, _ in statuses(line, second)] == ["enrolled", "killed"], what="the second slot's")
    wait_for(lambda: [s for s, _ in statuses(other, first)] == ["enrolled", "logged_out"], what="the unlink")
    assert all(s == p for s, p in statuses(line, first))


def test_a_sleeping_line_receives_nothing_until_it_resumes_and_loses_nothing(gateway, receiver, new_line):
    line = new_line()
    gateway.enrolled_slot(line)
    assert gateway.api("GET", f"/sleep/{line}").status_code == 200
    gateway.phone_sends(SENDER, line, "while you sleep")
    time.sleep(3)
    assert not [e for e in receiver.delivered(type="message", line=line)]
    assert gateway.api("GET", f"/resume/{line}").status_code == 200
    delivered_message(receiver, line, "while you sleep")


def test_failed_attempts_are_retried_with_the_same_webhook_id_and_fresh_signatures(fresh_gateway, own_receiver,
                                                                                     new_line):
    gw, receiver = fresh_gateway, own_receiver
    line = new_line()
    gw.enrolled_slot(line)
    # The slot's `enrolled` event first, or it could be the one that takes the failures meant for the message.
    wait_for(lambda: receiver.delivered(type="slot.status", line=line, status="enrolled"),
             what="the enrolled event")
    receiver.fail_with, receiver.fail_count = 500, 3
    message_id = gw.phone_sends(SENDER, line, "retry me")
    delivered_message(receiver, line, "retry me", timeout=30)
    attempts = receiver.attempts_for(message_event_id(line, message_id))
    assert [a.status for a in attempts] == [500, 500, 500, 200]
    assert len({a.signature for a in attempts}) == 4  # re-signed every time
    assert len({a.body for a in attempts}) == 1  # the same event
    gaps = [b.received - a.received for a, b in zip(attempts, attempts[1:], strict=False)]
    assert all(gap >= 0.9 for gap in gaps), gaps  # the back-off, not a hot loop


def test_a_receiver_down_for_a_while_loses_nothing(fresh_gateway, own_receiver, new_line):
    gw, receiver = fresh_gateway, own_receiver
    line = new_line()
    gw.enrolled_slot(line)
    wait_for(lambda: receiver.delivered(type="slot.status", line=line), what="the enrolled event")
    receiver.stop()
    texts = [f"down {i}" for i in range(10)]
    for text in texts:
        gw.phone_sends(SENDER, line, text)
    time.sleep(8)  # several attempts find the port closed
    receiver.start(receiver.port)
    for text in texts:
        delivered_message(receiver, line, text, timeout=30)


def test_a_slow_receiver_times_out_and_is_retried(fresh_gateway, own_receiver, new_line):
    gw, receiver = fresh_gateway, own_receiver
    line = new_line()
    gw.enrolled_slot(line)
    # The enrolled event first, or it could be one of the two held requests meant for the message.
    wait_for(lambda: receiver.delivered(type="slot.status", line=line), what="the enrolled event")
    receiver.hold.set()  # hold every request open beyond WHIN_WEBHOOK_TIMEOUT (3 s)
    message_id = gw.phone_sends(SENDER, line, "slow")
    assert receiver.held.acquire(timeout=15)
    assert receiver.held.acquire(timeout=15)  # the gateway gave up waiting on the first and tried again
    receiver.hold.clear()
    delivered_message(receiver, line, "slow", timeout=30)
    attempts = receiver.attempts_for(message_event_id(line, message_id))
    assert attempts[0].status == DROPPED  # the gateway stopped waiting: the timeout worked
    assert attempts[-1].status == 200


def test_retry_after_from_the_receiver_is_honoured(fresh_gateway, own_receiver, new_line):
    gw, receiver = fresh_gateway, own_receiver
    line = new_line()
    gw.enrolled_slot(line)
    wait_for(lambda: receiver.delivered(type="slot.status", line=line), what="the enrolled event")
    receiver.fail_with, receiver.fail_count, receiver.retry_after = 429, 1, "6"
    message_id = gw.phone_sends(SENDER, line, "slow down")
    delivered_message(receiver, line, "slow down", timeout=40)
    first, *rest = receiver.attempts_for(message_event_id(line, message_id))
    assert first.status == 429
    assert rest[-1].received - first.received >= 5.5  # not before the receiver's Retry-After


def test_kill_9_of_the_delivery_worker_mid_request_loses_nothing_and_duplicates_nothing(fresh_gateway, own_receiver,
                                                                                          new_line):
    """Also the regression test of rq's duplicate deliveries with result_ttl=0 (RELIABILITY-NOTES): a
    recovered job that then succeeds must not be run again."""
    gw, receiver = fresh_gateway, own_receiver
    line = new_line()
    slot_id = gw.enrolled_slot(line)
    wait_for(lambda: receiver.delivered(type="slot.status", line=line), what="the enrolled event")
    receiver.hold.set()
    message_id = gw.phone_sends(SENDER, line, "survive the kill")
    assert receiver.held.acquire(timeout=15)  # a delivery worker is inside the POST now
    pids = [gw.running_pid(f"delivery-{n}") for n in (1, 2)]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    # kill() returns before the process is gone; answering before its sockets close would record a 200.
    wait_for(lambda: all(_exited(pid) for pid in pids), what="the killed delivery workers to exit")
    receiver.hold.clear()
    event = delivered_message(receiver, line, "survive the kill", timeout=60)
    assert event["slot"] == slot_id
    time.sleep(6)  # room for any spurious re-run to show up
    # The attempt cut short by the kill, then the one retry that delivered it: nothing more.
    assert [a.status for a in receiver.attempts_for(message_event_id(line, message_id))] == [DROPPED, 200]
    assert failed_deliveries(gw.redis) == 0


def test_kill_9_of_the_slot_worker_loses_no_message(fresh_gateway, own_receiver, new_line):
    gw, receiver = fresh_gateway, own_receiver
    line = new_line()
    slot_id = gw.enrolled_slot(line)
    texts = [f"kill {i}" for i in range(30)]
    for i, text in enumerate(texts):
        gw.phone_sends(SENDER, line, text)
        if i in (5, 15, 25):
            os.kill(gw.slot_pid(slot_id), signal.SIGKILL)
            time.sleep(0.2)
    for text in texts:
        delivered_message(receiver, line, text, timeout=40)


def test_a_delivery_that_runs_out_of_time_gives_up_counted_and_without_a_trace(own_receiver, make_gateway, new_line):
    gw = make_gateway(WHIN_WEBHOOK_URL=own_receiver.url, WHIN_DELIVERY_MAX_AGE="3")
    (slot_id,) = gw.provision(1)
    line = new_line()
    own_receiver.fail_with = 503  # for good
    gw.enroll(slot_id, line)
    gw.phone_sends(SENDER, line, "never delivered")
    wait_for(lambda: int(gw.redis.hget(keys.STATS, "given_up") or 0) >= 2, timeout=30,
             what="both events (enrolled, message) to be given up")
    time.sleep(2)
    assert not rq_job_keys(gw.redis)
    assert failed_deliveries(gw.redis) == 0
    log = "".join(p.read_text(errors="replace") for p in (gw.data_dir / "logs").glob("delivery-*.log"))
    assert "delivery given up: event msg_" in log
    assert "never delivered" not in log


def _exited(pid: int) -> bool:
    """Gone, or a zombie: either way its sockets are closed."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
