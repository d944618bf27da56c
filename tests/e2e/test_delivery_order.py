"""A line's events reach the webhook in seq order, lines in parallel (messaging/backlog.py), and rq-dashboard
still shows the delivery machinery: queues, workers, a job in progress."""

from concurrent.futures import ThreadPoolExecutor

from tests.gateway import wait_for
from tests.helpers import SENDER

EVENTS_PER_LINE = 200


def first_deliveries(receiver, line: str) -> list[tuple[str, int, float]]:
    """(webhook-id, seq, arrival) of the line's events, each at its first 2xx, in arrival order."""
    seen, out = set(), []
    with receiver.lock:
        attempts = list(receiver.attempts)
    for attempt in attempts:
        event = attempt.event
        if attempt.status < 300 and event.get("line") == line and attempt.webhook_id not in seen:
            seen.add(attempt.webhook_id)
            out.append((attempt.webhook_id, event["seq"], attempt.received))
    return out


def test_three_lines_events_arrive_in_seq_order_and_a_failed_one_after_its_retry(make_gateway, own_receiver,
                                                                                new_line):
    gw = make_gateway(WHIN_WEBHOOK_URL=own_receiver.url, WHIN_DELIVERY_WORKERS="2",
                      WHIN_DELIVERY_BACKOFF="8")  # the retry well after the line's other 200 events
    lines = [new_line() for _ in range(3)]
    slots = {line: gw.enrolled_slot(line) for line in lines}
    for line in lines:
        wait_for(lambda line=line: gw.detail(slots[line])["connected"], what="the line to connect")
        assert gw.api("GET", f"/sleep/{line}").status_code == 200  # the network holds what arrives meanwhile

    def send_all(line):
        for i in range(EVENTS_PER_LINE):
            gw.phone_sends(SENDER, line, f"{line} #{i}")

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(send_all, lines))
    own_receiver.fail_with, own_receiver.fail_count = 503, 1  # the first POST after the lines resume fails
    for line in lines:
        assert gw.api("GET", f"/resume/{line}").status_code == 200

    def all_delivered():
        return all(sum(1 for e in own_receiver.delivered(type="message", line=line)) >= EVENTS_PER_LINE
                   for line in lines)

    wait_for(all_delivered, timeout=120, what="every line's messages")
    failed = [a for a in own_receiver.attempts if a.status == 503]
    assert len(failed) == 1
    failed_id, failed_line = failed[0].webhook_id, failed[0].event["line"]
    wait_for(lambda: [a.status for a in own_receiver.attempts_for(failed_id)] == [503, 200], timeout=60,
             what="the failed event's retry")
    for line in lines:
        deliveries = first_deliveries(own_receiver, line)
        texts = [e["payload"]["Message"]["conversation"] for e in own_receiver.delivered(type="message", line=line)]
        assert sorted(set(texts)) == sorted(f"{line} #{i}" for i in range(EVENTS_PER_LINE))  # none lost
        in_order = [seq for webhook_id, seq, _ in deliveries if webhook_id != failed_id]
        assert in_order == sorted(in_order) and len(set(in_order)) == len(in_order), f"line {line} out of order"
    # The failed event did not hold its line back: later events of its line arrived before its retry did.
    deliveries = first_deliveries(own_receiver, failed_line)
    (_, failed_seq, retried_at), = [d for d in deliveries if d[0] == failed_id]
    later = [at for webhook_id, seq, at in deliveries if seq > failed_seq]
    assert later and min(later) < retried_at
    assert [a.status for a in own_receiver.attempts_for(failed_id)] == [503, 200]
    assert retried_at - failed[0].received >= 8  # on its retry schedule


def test_rq_dashboard_lists_the_delivery_queues_the_workers_and_a_delivery_in_progress(fresh_gateway, own_receiver,
                                                                                       new_line):
    gw = fresh_gateway
    line = new_line()
    gw.enrolled_slot(line)
    wait_for(lambda: own_receiver.delivered(type="slot.status", line=line), what="the enrolled event")
    own_receiver.hold.set()
    try:
        gw.phone_sends(SENDER, line, "in progress")
        assert own_receiver.held.acquire(timeout=15)  # a delivery worker is inside the POST now
        queues = {q["name"]: q for q in gw.api("GET", "/rq/0/data/queues.json").json()["queues"]}
        assert {"deliveries", "deliveries-2"} <= set(queues)
        answer = gw.api("GET", "/rq/0/data/workers.json")
        assert answer.status_code == 200, answer.text
        workers = answer.json()["workers"]
        assert sorted(q for w in workers for q in w["queues"]) == ["deliveries", "deliveries-2"]
        busy = [w for w in workers if w["state"] == "busy"]
        assert len(busy) == 1 and busy[0]["current_job"]["description"] == "deliver a line's events"
        (queue,) = busy[0]["queues"]
        started = gw.api("GET", f"/rq/0/data/jobs/{queue}/started/10/asc/1.json").json()["jobs"]
        assert [job["id"] for job in started] == [busy[0]["current_job"]["job_id"]]
        assert "in progress" not in str(started) and line not in str(started) + str(workers)
    finally:
        own_receiver.hold.clear()
    wait_for(lambda: any(e["payload"]["Message"].get("conversation") == "in progress"
                         for e in own_receiver.delivered(type="message", line=line)), what="the held delivery")
