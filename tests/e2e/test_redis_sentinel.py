"""A gateway on a Redis under Sentinel (WHIN_REDIS_URL=redis+sentinel://…): the master's machine dies, the
Sentinel promotes its replica, and every part of the gateway (the API, the reconciler, the delivery
workers and their rq scheduler, the slot worker) finds the new master by itself: messages both ways
before and after, nothing lost of what reaches WhatsApp after the failover."""

import pytest

from tests.gateway import Gateway, wait_for
from tests.sentinel import SentinelRedis

SENDER = "34611122233"


@pytest.fixture
def sentinel(tmp_path):
    made = SentinelRedis(tmp_path / "redis").start()
    yield made
    made.stop()


def delivered(receiver, line: str, text: str) -> list[dict]:
    return [e for e in receiver.delivered(type="message", line=line)
            if e["payload"]["Message"].get("conversation") == text]


def sent(gw: Gateway, line: str, text: str) -> bool:
    answer = gw.api("POST", "/send", json={"line": line, "to": SENDER, "text": text})
    return answer.status_code == 200  # a 503 while Redis fails over is "not yet"


def test_a_gateway_on_redis_sentinel_rides_out_a_failover(tmp_path, sentinel, own_receiver, new_line):
    gw = Gateway(tmp_path / "gateway", sentinel.url, WHIN_WEBHOOK_URL=own_receiver.url).start()
    try:
        (slot_id,) = gw.provision(1)
        line = new_line()
        gw.enroll(slot_id, line)
        gw.phone_sends(SENDER, line, "antes del relevo")
        wait_for(lambda: delivered(own_receiver, line, "antes del relevo"), timeout=20, what="the first message")
        assert sent(gw, line, "respuesta antes")

        sentinel.fail_over()
        gw.phone_sends(SENDER, line, "después del relevo")  # to WhatsApp: it waits there if need be
        wait_for(lambda: delivered(own_receiver, line, "después del relevo"), timeout=60,
                 what="a message delivered through the new master")
        wait_for(lambda: sent(gw, line, "respuesta después"), timeout=30, what="a /send through the new master")
        texts = [entry.get("text") for entry in gw.inbox(SENDER)]
        assert "respuesta antes" in texts and "respuesta después" in texts
        assert gw.detail(slot_id)["connected"] and gw.status_of(slot_id) == "active"
        assert len(delivered(own_receiver, line, "después del relevo")) >= 1
        queues = gw.api("GET", "/rq/0/data/queues.json")  # rq-dashboard reads the same URL
        assert queues.status_code == 200 and "deliveries" in {q["name"] for q in queues.json()["queues"]}
    finally:
        gw.stop()
