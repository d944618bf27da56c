"""GET /metrics: Prometheus text, read from Redis at scrape time.

The counters live in Redis (keys.py: whin:stats, whin:stats:latency, whin:slotstats:<ID>), written by
whichever process saw the event (api, slot workers, delivery workers), so every api process reports
the same totals. Labels are slot ids, statuses and outcomes: never a phone number, never content.
"""

import time
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from controlplane.core.hosts import HostRegistry
from controlplane.core.keys import LATENCY, STATS
from controlplane.core.states import SlotStatus
from controlplane.core.stats import LATENCY_BUCKETS
from controlplane.core.store import SlotStore
from controlplane.messaging.backlog import delivery_queue
from controlplane.placement import PLACEMENT_FIELDS, Occupancy, host_listing

_DELIVERY = ("delivered", "retried", "given_up")


class GatewayCollector:
    def __init__(self, store: SlotStore, delivery_workers: int = 1, host_dead_after: float = 30.0):
        self.store = store
        self.delivery_workers = delivery_workers
        self.hosts = HostRegistry(store.redis, host_dead_after)

    def collect(self):
        r = self.store.redis
        slots = self.store.fields(PLACEMENT_FIELDS)
        # The small reads in one round trip: a scrape under load waits for each one it makes.
        queues = [delivery_queue(r, n) for n in range(1, self.delivery_workers + 1)]
        with r.pipeline(transaction=False) as pipe:
            pipe.hgetall(STATS)
            pipe.hgetall(LATENCY)
            # rq names its own keys; its registries' count() would also clean up, a side effect a
            # scrape must not have.
            for queue in queues:
                pipe.llen(queue.key)
                pipe.zcard(ScheduledJobRegistry(queue=queue).key)
                pipe.zcard(StartedJobRegistry(queue=queue).key)
            raw_stats, latency, *counts = pipe.execute()
        depths = [sum(counts[i::3]) for i in range(3)]
        stats = {k: int(float(v)) for k, v in raw_stats.items()}

        counted = Counter(fields["status"] for _, fields in slots)  # one pass over hundreds of slots
        by_status = GaugeMetricFamily("whin_slots", "Slots by status.", labels=["status"])
        for status in SlotStatus:
            by_status.add_metric([status.value], counted[status.value])
        yield by_status
        yield GaugeMetricFamily("whin_slots_pairing", "Slots showing QR codes now.",
                                value=sum(fields.get("pairing") == "1" for _, fields in slots))

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

        yield self._latency(latency)
        yield self._queue(*depths)
        yield from self._per_host(slots)
        yield from self._per_slot(self.store)

    def _per_host(self, slots: list[tuple[str, dict]]):
        """Each slot host (core/hosts.py) by name: alive or not, its capacity, the slots placed there and
        those of them whose worker should run."""
        now = time.time()
        listing = host_listing(self.hosts.all(), Occupancy.of(slots, now), now, self.hosts.dead_after)
        alive = GaugeMetricFamily("whin_host_alive", "1 while the host's agent beats within WHIN_HOST_DEAD_AFTER.",
                                  labels=["host"])
        capacity = GaugeMetricFamily("whin_host_capacity", "The most slots the host runs (WHIN_HOST_CAPACITY).",
                                     labels=["host"])
        on_host = GaugeMetricFamily("whin_host_slots", "Slots placed on the host.", labels=["host"])
        busy = GaugeMetricFamily("whin_host_running", "Slots placed on the host whose worker should run.",
                                 labels=["host"])
        draining = GaugeMetricFamily("whin_host_draining", "1 while the host is drained.", labels=["host"])
        for host in listing:
            alive.add_metric([host["name"]], int(host["alive"]))
            capacity.add_metric([host["name"]], host["capacity"])
            on_host.add_metric([host["name"]], len(host["slots"]))
            busy.add_metric([host["name"]], host["running"])
            draining.add_metric([host["name"]], int(host["draining"]))
        yield from (alive, capacity, on_host, busy, draining)

    @staticmethod
    def _latency(raw: dict):
        buckets, running = [], 0
        for bound in [f"{b:g}" for b in LATENCY_BUCKETS] + ["+Inf"]:
            running += int(raw.get(bound, 0))
            buckets.append((bound, running))
        return HistogramMetricFamily("whin_delivery_latency_seconds", "From receipt by the slot to the webhook's 2xx.",
                                     buckets=buckets, sum_value=float(raw.get("sum", 0)))

    @staticmethod
    def _queue(queued: int, scheduled: int, in_progress: int):
        depth = GaugeMetricFamily("whin_delivery_queue", "Delivery jobs by state: a queued one delivers a line's "
                                  "waiting events, a scheduled one retries one event.", labels=["state"])
        depth.add_metric(["queued"], queued)
        depth.add_metric(["scheduled_retry"], scheduled)
        depth.add_metric(["in_progress"], in_progress)
        return depth

    @staticmethod
    def _per_slot(store: SlotStore):
        # A slot's series appear with its first start: hundreds of provisioned, never started slots
        # would otherwise be hundreds of zero series, each costing every scrape.
        starts = CounterMetricFamily("whin_slot_worker_starts", "Worker process starts per slot.", labels=["slot"])
        reconnects = CounterMetricFamily("whin_slot_reconnects", "Reconnects to WhatsApp per slot.", labels=["slot"])
        for slot_id, (started, reconnected) in store.slot_counters(("starts", "reconnects")):
            if started or reconnected:
                starts.add_metric([slot_id], int(started or 0))
                reconnects.add_metric([slot_id], int(reconnected or 0))
        yield starts
        yield reconnects
