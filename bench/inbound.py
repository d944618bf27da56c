"""Inbound delivery: throughput and latency through the real gateway, against a minimal baseline.

  ours      simnet phone -> slot worker -> the line's backlog (sealed) and its rq job -> delivery worker
            -> signed POST -> receiver
  baseline  the same envelope through Redis (LPUSH / BRPOP) and POSTed on a kept-alive connection:
            the practical limit for this path on this machine.

Both deliver to the same fast receiver, a separate process. Throughput: N messages waiting for the
line (queued while it slept), counted from the first arrival to the last. Latency: a steady 100 msg/s,
from the slot having the event (the envelope's received_at) or the baseline's push to the receiver's
arrival; printed as well from the phone's send, which adds simnet's own hop (the network's, not ours).

Run: make bench  (or .venv/bin/python bench/inbound.py [--messages N] [--workers N])
"""

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import redis
import requests
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.gateway import Gateway, free_port, wait_for

SENDER = "34611000001"
LINE = "34655000001"


# --- the receiver: its own process, so that its work does not share our GIL ---
# A minimal asyncio HTTP/1.1 server (keep-alive, Content-Length bodies): it costs a small fraction of
# http.server's CPU per request, so the figures measure the gateway rather than the receiver.

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def _receiver(port: int, arrivals: multiprocessing.Queue) -> None:
    import asyncio

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(h.split(b":", 1)[1]) for h in head.split(b"\r\n")
                              if h.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                now = time.time()
                writer.write(_OK)
                event = json.loads(body)
                if event.get("type") == "message":
                    arrivals.put((event["payload"]["Message"]["conversation"], now, event.get("received_at")))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(serve())


class Arrivals:
    def __init__(self, queue: multiprocessing.Queue):
        self.queue = queue
        self.seen: dict[str, float] = {}
        self.sealed_at: dict[str, float] = {}  # the envelope's received_at: when the slot had it

    def wait_for(self, texts: set[str], timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while not texts <= self.seen.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"lost or late: {len(texts - self.seen.keys())} of {len(texts)} never arrived")
            try:
                text, when, sealed_at = self.queue.get(timeout=min(remaining, 1))
            except Exception:  # queue.Empty: keep waiting until the deadline
                continue
            self.seen[text] = when
            if sealed_at:
                self.sealed_at[text] = sealed_at
        return {t: self.seen[t] for t in texts}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# --- ours ---

def cpu_seconds(root_pid: int) -> dict[str, float]:
    """CPU time used so far by each program under supervisord, by its role (slot, delivery, redis, ...)."""
    used: dict[str, float] = {}
    for proc in psutil.Process(root_pid).children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        role = next((name for key, name in (("slotworker", "slot worker"),
                                            ("controlplane.messaging.delivery", "delivery"),
                                            ("redis-server", "redis"), ("simnet", "simnet"), ("gunicorn", "api"),
                                            ("reconciler", "reconciler")) if key in cmd), "other")
        used[role] = used.get(role, 0.0) + times.user + times.system
    return used


def ours_throughput(gw: Gateway, arrivals: Arrivals, count: int) -> tuple[float, dict[str, float]]:
    assert gw.api("GET", f"/sleep/{LINE}").status_code == 200  # the network holds what arrives meanwhile
    texts = [f"tp-{i}" for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda t: gw.phone_sends(SENDER, LINE, t), texts))
    before = cpu_seconds(gw.process.pid)
    assert gw.api("GET", f"/resume/{LINE}").status_code == 200
    times = arrivals.wait_for(set(texts), timeout=120).values()
    after = cpu_seconds(gw.process.pid)
    per_message = {role: (after[role] - before.get(role, 0.0)) / count * 1000 for role in after}
    return (count - 1) / (max(times) - min(times)), per_message


def ours_latency(gw: Gateway, arrivals: Arrivals, rate: float, seconds: float) -> tuple[list[float], list[float]]:
    sent: dict[str, float] = {}
    http = requests.Session()
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        text = f"lat-{i}"
        sent[text] = time.time()
        http.post(f"{gw.simnet_url}/messages", json={"from": SENDER, "to": LINE, "text": text}, timeout=10)
    got = arrivals.wait_for(set(sent), timeout=60)
    # The gateway's own path: from the slot having the event from the network (the envelope's
    # received_at) to the receiver's arrival, as the baseline's from the push.
    own = [got[t] - arrivals.sealed_at[t] for t in sent if t in arrivals.sealed_at]
    return [got[t] - sent[t] for t in sent], own


# --- the baseline: push/blocking pop through Redis, POST on a kept-alive connection ---

def envelope(text: str) -> str:
    return json.dumps({"type": "message", "line": LINE, "slot": "BASELINE", "seq": 1, "from": SENDER,
                       "received_at": time.time(), "payload": {"Message": {"conversation": text}}})


def baseline_consumer(client: redis.Redis, url: str, stop: threading.Event) -> None:
    http = urllib3.PoolManager(maxsize=1, retries=False)  # the same HTTP client as the delivery workers
    while not stop.is_set():
        item = client.brpop(["bench:baseline"], timeout=1)
        if item:
            http.request("POST", url, body=item[1], headers={"Content-Type": "application/json"}, timeout=10)


def baseline(client: redis.Redis, url: str, arrivals: Arrivals, count: int, rate: float,
             seconds: float) -> tuple[float, list[float]]:
    stop = threading.Event()
    consumer = threading.Thread(target=baseline_consumer, args=(client, url, stop), daemon=True)
    # Throughput: everything waiting first, then drained, as for ours.
    texts = [f"btp-{i}" for i in range(count)]
    client.lpush("bench:baseline", *[envelope(t) for t in texts])
    consumer.start()
    times = arrivals.wait_for(set(texts), timeout=120).values()
    throughput = (count - 1) / (max(times) - min(times))
    sent: dict[str, float] = {}
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        text = f"blat-{i}"
        sent[text] = time.time()
        client.lpush("bench:baseline", envelope(text))
    got = arrivals.wait_for(set(sent), timeout=60)
    stop.set()
    return throughput, [got[t] - sent[t] for t in sent]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000, help="messages for the throughput run")
    parser.add_argument("--workers", type=int, default=2, help="delivery workers")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    port = free_port()
    queue: multiprocessing.Queue = multiprocessing.Queue()
    receiver = multiprocessing.Process(target=_receiver, args=(port, queue), daemon=True)
    receiver.start()
    url = f"http://127.0.0.1:{port}/webhook"
    arrivals = Arrivals(queue)

    with tempfile.TemporaryDirectory(prefix="whin-bench-") as folder:
        gw = Gateway(Path(folder) / "var", redis_url=None, WHIN_WEBHOOK_URL=url,
                     WHIN_DELIVERY_WORKERS=str(args.workers), WHIN_SEND_RATE="100000").start()
        try:
            (slot_id,) = gw.provision(1)
            gw.enroll(slot_id, LINE)
            wait_for(lambda: gw.detail(slot_id)["connected"], what="connect")
            ours_tp, cpu_ms = ours_throughput(gw, arrivals, args.messages)
            phone_lat, ours_lat = ours_latency(gw, arrivals, args.rate, args.seconds)
            # The baseline uses the same Redis server (the embedded one), in a database of its own.
            client = redis.Redis(unix_socket_path=str(gw.data_dir.resolve() / "run" / "redis.sock"), db=15)
            base_tp, base_lat = baseline(client, url, arrivals, args.messages, args.rate, args.seconds)
        finally:
            gw.stop()
    receiver.terminate()

    def line(name, tp, lat):
        return (f"  {name:<9} throughput {tp:7.0f} msg/s   at {args.rate:.0f} msg/s: "
                f"p50 {percentile(lat, 50) * 1000:6.1f} ms   p99 {percentile(lat, 99) * 1000:6.1f} ms"
                f"   ({len(lat)} messages)")

    print(f"inbound delivery, {args.messages} messages for throughput, {args.workers} delivery workers")
    print("  latency ours: from the slot having the event (the envelope's received_at) to the receiver; "
          "baseline: from the push")
    print(line("ours", ours_tp, ours_lat))
    print(line("baseline", base_tp, base_lat))
    print(f"  ratio ours/baseline: throughput {ours_tp / base_tp:.2f} (target >= 0.5), "
          f"p99 {percentile(ours_lat, 99) / percentile(base_lat, 99):.1f}x (target <= 3x); "
          "lost: 0 (every message arrived)")
    print(f"  mean latency ours {statistics.mean(ours_lat) * 1000:.1f} ms, "
          f"baseline {statistics.mean(base_lat) * 1000:.1f} ms")
    print(f"  from the phone's send through simnet (the network's own hop included): p50 "
          f"{percentile(phone_lat, 50) * 1000:.1f} ms, p99 {percentile(phone_lat, 99) * 1000:.1f} ms, "
          f"{percentile(phone_lat, 99) / percentile(base_lat, 99):.1f}x the baseline's p99")
    print("  CPU per message in the throughput run: " +
          ", ".join(f"{role} {ms:.2f} ms" for role, ms in sorted(cpu_ms.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
