"""GET /metrics: Prometheus text, read from Redis at scrape time.

The counters live in Redis (keys.py: whin:stats, whin:stats:latency, whin:slotstats:<ID>), written by
whichever process saw the event (api, slot workers, delivery workers), so every api process reports
the same totals. Labels are slot ids, statuses and outcomes: never a phone number, never content.
"""

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from controlplane.core.keys import LATENCY, STATS, slot_stats_key
from controlplane.core.states import SlotStatus
from controlplane.core.stats import LATENCY_BUCKETS
from controlplane.core.store import SlotStore
from controlplane.messaging.events import delivery_queue

_DELIVERY = ("delivered", "retried", "given_up")


class GatewayCollector:
    def __init__(self, store: SlotStore):
        self.store = store

    def collect(self):
        r = self.store.redis
        slots = self.store.all()
        stats = {k: int(float(v)) for k, v in r.hgetall(STATS).items()}

        by_status = GaugeMetricFamily("whin_slots", "Slots by status.", labels=["status"])
        for status in SlotStatus:
            by_status.add_metric([status.value], sum(s.status is status for s in slots))
        yield by_status
        yield GaugeMetricFamily("whin_slots_pairing", "Slots showing QR codes now.",
                                value=sum(s.pairing for s in slots))

        pairing = CounterMetricFamily("whin_pairing", "Pairing attempts and outcomes.", labels=["outcome"])
        for name, value in stats.items():
            if name.startswith("pairing_"):
                pairing.add_metric([name.removeprefix("pairing_")], value)
        yield pairing

        deliveries = CounterMetricFamily("whin_deliveries", "Webhook delivery attempts by outcome.",
                                         labels=["outcome"])
        for outcome in _DELIVERY:
            deliveries.add_metric([outcome], stats.get(outcome, 0))
        yield deliveries

        sends = CounterMetricFamily("whin_sends", "POST /send by outcome.", labels=["outcome"])
        sends.add_metric(["sent"], stats.get("sent", 0))
        for name, value in stats.items():
            if name.startswith("send_"):
                sends.add_metric([name.removeprefix("send_")], value)
        yield sends

        actions = CounterMetricFamily("whin_actions", "The chat actions (/read, /presence, /revoke, /edit, /exists) "
                                      "by outcome: ok, or the refusal's code.", labels=["action", "outcome"])
        for name, value in stats.items():
            if name.startswith("action_"):
                action, _, outcome = name.removeprefix("action_").partition("_")
                actions.add_metric([action, outcome], value)
        yield actions

        yield self._latency(r)
        yield self._queue(r)
        yield from self._per_slot(r, slots)

    @staticmethod
    def _latency(r):
        raw = r.hgetall(LATENCY)
        buckets, running = [], 0
        for bound in [f"{b:g}" for b in LATENCY_BUCKETS] + ["+Inf"]:
            running += int(raw.get(bound, 0))
            buckets.append((bound, running))
        return HistogramMetricFamily("whin_delivery_latency_seconds", "From receipt by the slot to the webhook's 2xx.",
                                     buckets=buckets, sum_value=float(raw.get("sum", 0)))

    @staticmethod
    def _queue(r):
        # rq names its own keys; its registries' count() would also clean up, a side effect a scrape must not have.
        queue = delivery_queue(r)
        depth = GaugeMetricFamily("whin_delivery_queue", "Events waiting for delivery.", labels=["state"])
        depth.add_metric(["queued"], r.llen(queue.key))
        depth.add_metric(["scheduled_retry"], r.zcard(ScheduledJobRegistry(queue=queue).key))
        depth.add_metric(["in_progress"], r.zcard(StartedJobRegistry(queue=queue).key))
        return depth

    @staticmethod
    def _per_slot(r, slots):
        starts = CounterMetricFamily("whin_slot_worker_starts", "Worker process starts per slot.", labels=["slot"])
        reconnects = CounterMetricFamily("whin_slot_reconnects", "Reconnects to WhatsApp per slot.", labels=["slot"])
        with r.pipeline(transaction=False) as pipe:
            for slot in slots:
                pipe.hgetall(slot_stats_key(slot.id))
            per_slot = pipe.execute()
        for slot, counters in zip(slots, per_slot, strict=True):
            starts.add_metric([slot.id], int(counters.get("starts", 0)))
            reconnects.add_metric([slot.id], int(counters.get("reconnects", 0)))
        yield starts
        yield reconnects
