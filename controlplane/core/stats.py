"""The metrics writes: counters and the delivery latency histogram (api/prometheus.py reads them).

Counters carry names only: no message content, no phone numbers. Each write is one Redis call (or
one pipeline), never in the way of what it counts.
"""

from controlplane.core.keys import LATENCY, STATS, slot_stats_key

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


def count(client, name: str, by: int = 1) -> None:
    """One more (or ``by`` more) of a gateway-wide counter: delivered, retried, sent, ..."""
    client.hincrby(STATS, name, by)


def count_for_slot(client, slot_id: str, name: str) -> None:
    """One more of a slot's own counter: worker starts, reconnects."""
    client.hincrby(slot_stats_key(slot_id), name, 1)


def observe_latency(pipe, seconds: float) -> None:
    """One delivery's latency into the histogram (buckets stored one by one; prometheus.py accumulates),
    written in the caller's pipeline: the step that records the delivery itself."""
    bucket = next((f"{b:g}" for b in LATENCY_BUCKETS if seconds <= b), "+Inf")
    pipe.hincrby(LATENCY, bucket, 1)
    pipe.hincrbyfloat(LATENCY, "sum", seconds)
