"""GET /metrics on the real gateway: Prometheus text, counters from every process, no phone numbers."""

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from tests.assertions import assert_json_error
from tests.gateway import wait_for
from tests.helpers import SENDER, delivered_message


def samples(gateway) -> dict:
    response = gateway.api("GET", "/metrics")
    assert response.status_code == 200
    # Exactly prometheus-client's type: a second charset parameter makes Prometheus 3 refuse the scrape.
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}, response.text


def test_metrics_count_slots_pairings_deliveries_and_sends_without_phone_numbers(gateway, receiver, new_line):
    line = new_line()
    slot_id = gateway.enrolled_slot(line)
    gateway.phone_sends(SENDER, line, "metrics please")
    delivered_message(receiver, line, "metrics please")
    assert gateway.api("POST", "/send", json={"line": line, "to": SENDER, "text": "ok"}).status_code == 200
    values, text = wait_for(lambda: (m := samples(gateway))[0].get(
        ("whin_delivery_latency_seconds_count", ())) and m, what="a delivery to be measured")
    assert values[("whin_slots", (("status", "active"),))] >= 1
    assert values[("whin_pairing_total", (("outcome", "started"),))] >= 1
    assert values[("whin_pairing_total", (("outcome", "paired"),))] >= 1
    assert values[("whin_deliveries_total", (("outcome", "delivered"),))] >= 2  # enrolled + the message
    assert values[("whin_sends_total", (("outcome", "sent"),))] >= 1
    assert values[("whin_slot_worker_starts_total", (("slot", slot_id),))] >= 1
    assert ("whin_delivery_queue", (("state", "queued"),)) in values
    (never_started,) = gateway.provision(1)  # a slot's series appear with its first start
    values, _ = samples(gateway)
    assert not [key for key in values if ("slot", never_started) in key[1]]
    assert line not in text and SENDER not in text and "metrics please" not in text


def test_metrics_need_a_token(gateway):
    assert_json_error(gateway.api("GET", "/metrics", token=None), 401, "unauthorized")


def test_refused_sends_are_counted_by_their_code(gateway, new_line):
    line = new_line()
    gateway.enrolled_slot(line)
    before, _ = samples(gateway)

    def sends(outcome):
        return samples(gateway)[0].get(("whin_sends_total", (("outcome", outcome),)), 0) - \
            before.get(("whin_sends_total", (("outcome", outcome),)), 0)

    assert gateway.api("POST", "/send", json={"line": line, "to": "12", "text": "x"}).status_code == 422
    assert gateway.api("POST", "/send", json={"line": line, "to": SENDER}).status_code == 422
    assert gateway.api("POST", "/send", data="not json").status_code == 422
    answers = [gateway.api("POST", "/send", json={"line": line, "to": SENDER, "text": "burst"}).status_code
               for _ in range(15)]  # the burst allowance (10 by default) runs out
    assert 429 in answers
    assert sends("invalid_number") == 1
    assert sends("missing_content") == 1
    assert sends("invalid_json") == 1
    assert sends("rate_limited") == answers.count(429)
    assert sends("sent") == answers.count(200)
