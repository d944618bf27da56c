"""One host, many slots (issue 14): stop, start, provision, idle CPU and API latency at size N.

Runs the real gateway (launcher, supervisord, embedded Redis, gunicorn, reconciler, simnet, one slot
worker per slot) on the sim engine and prints each figure against its target and against a
baseline measured in the same run on the same machine:

  stop      SIGTERM to the launcher -> every process gone, with N active slots; baseline: the same
            gateway stopped with no slot active.
  start     restart with N active slots: /ready, all N connected, `supervisorctl status` and GET /slots
            during the ramp; baseline: /ready of the empty gateway's first start.
  provision POST /slots count=100 with 0 slots there (baseline) and with 400 there.
  enroll    /enroll -> scan -> connected, the first ones (baseline) and the ones at 400+ provisioned.
  idle      CPU of every process over a quiet window, per active slot; simnet's own share apart.
  api       p99 of GET /slots, /slots2lines, /metrics, 8 clients, 500 provisioned and N active.

Run: make bench  (or .venv/bin/python bench/host_scale.py [--slots N]); N=200 needs ~6 GB of memory
and a few minutes.
"""

import argparse
import concurrent.futures
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane.core.keys import SLOTS
from tests.gateway import Gateway, wait_for

PROVISION_BATCH = 100
PROVISIONED_BEFORE = 400  # the "at any size" point: POST /slots and enrollment are measured here too
ENROLL_SAMPLES = 10
API_CLIENTS = 8
API_SECONDS = 8.0
IDLE_SECONDS = 30.0
# Closer to production than the tests' settings: the default reconcile interval and API workers.
BENCH_ENV = {"WHIN_RECONCILE_INTERVAL": "2", "WHIN_API_WORKERS": str(2 * (os.cpu_count() or 1) + 1),
             "WHIN_PAIRING_TIMEOUT": "60", "WHIN_SIM_QR_FIRST": "30", "WHIN_SIM_QR_NEXT": "15"}


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def verdict(ok: bool) -> str:
    return "ok  " if ok else "MISS"


class Report:
    def __init__(self):
        self.rows: list[str] = []
        self.missed = 0

    def add(self, ok: bool, text: str) -> None:
        self.missed += not ok
        self.rows.append(f"  [{verdict(ok)}] {text}")
        print(self.rows[-1], flush=True)


# --- the gateway ---

def new_gateway(data_dir: Path) -> Gateway:
    return Gateway(data_dir, redis_url=None, **BENCH_ENV)


def start(gw: Gateway) -> float:
    """Launch; seconds until /ready answers 200."""
    began = time.perf_counter()
    gw.start(timeout=120)
    return time.perf_counter() - began


def stop(gw: Gateway) -> float:
    """SIGTERM to the launcher (what `make run` gets from Ctrl-C or systemd); seconds until every
    process of the gateway is gone."""
    began = time.perf_counter()
    gw.process.send_signal(signal.SIGTERM)
    wait_for(lambda: not gw.processes() and gw.process.poll() is not None, timeout=300, interval=0.1,
             what="every process to end")
    took = time.perf_counter() - began
    gw.stop()  # closes the harness's session; nothing is left to end
    return took


def sigkilled(gw: Gateway) -> int:
    log = gw.data_dir / "logs" / "supervisord.log"
    return log.read_text(errors="replace").count("SIGKILL") if log.exists() else 0


def enroll(gw: Gateway, slot_id: str, line: str) -> float:
    began = time.perf_counter()
    gw.enroll(slot_id, line)
    return time.perf_counter() - began


def enroll_many(gw: Gateway, slot_ids: list[str], first_line: int) -> list[float]:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda pair: enroll(gw, pair[1], str(first_line + pair[0])), enumerate(slot_ids)))


def connected_count(gw: Gateway) -> int:
    try:
        details = gw.api("GET", "/slots/details").json()
    except (requests.RequestException, ValueError):
        return 0
    return sum(bool(d.get("connected")) for d in details)


# --- measurements ---

def provision_cost(gw: Gateway) -> float:
    return timed(lambda: gw.provision(PROVISION_BATCH))


def api_p99(gw: Gateway, path: str) -> tuple[float, int]:
    """p99 seconds of GET path with API_CLIENTS clients in a loop for API_SECONDS; and the errors."""
    samples: list[float] = []
    errors = [0]
    deadline = time.monotonic() + API_SECONDS

    def client():
        session = requests.Session()
        headers = {"Authorization": f"Bearer {gw.admin_token}"}
        while time.monotonic() < deadline:
            began = time.perf_counter()
            answer = session.get(gw.url + path, headers=headers, timeout=30)
            samples.append(time.perf_counter() - began)
            errors[0] += answer.status_code != 200

    threads = [threading.Thread(target=client) for _ in range(API_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return p99(samples), errors[0]


def role(process: psutil.Process) -> str:
    line = " ".join(process.cmdline())
    for mark, name in (("slotworker", "slots"), ("supervisord", "supervisord"), ("redis-server", "redis"),
                       ("-m simnet", "simnet"), ("gunicorn", "api"), ("reconciler", "reconciler"),
                       ("delivery", "delivery"), ("controlplane.launch", "launcher")):
        if mark in line:
            return name
    return "other"


def cpu_by_role(gw: Gateway, seconds: float) -> dict[str, float]:
    """Share of one core used by each role over ``seconds`` (user + system time)."""
    def snapshot():
        times = {}
        for pid in gw.processes() + [gw.process.pid]:
            try:
                process = psutil.Process(pid)
                cpu = process.cpu_times()
                times[pid] = (role(process), cpu.user + cpu.system)
            except psutil.Error:
                pass
        return times

    before = snapshot()
    time.sleep(seconds)
    after = snapshot()
    used: dict[str, float] = {}
    for pid, (name, total) in after.items():
        if pid in before:
            used[name] = used.get(name, 0.0) + (total - before[pid][1]) / seconds
    return used


class RampWatch:
    """While slots come back: how long `supervisorctl status` and GET /slots take, sampled in a loop."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.status: list[float] = []
        self.slots: list[float] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._status_loop), threading.Thread(target=self._slots_loop)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _status_loop(self):
        conf = self.gw.data_dir / "supervisor" / "supervisord.conf"
        ctl = str(Path(sys.executable).parent / "supervisorctl")
        while not self._stop.is_set():
            began = time.perf_counter()
            # Only the RPC, not supervisorctl's own Python start (~0.2 s, the same at any size).
            subprocess.run([ctl, "-c", str(conf), "status"], capture_output=True, timeout=60)
            self.status.append(time.perf_counter() - began)
            self._stop.wait(0.5)

    def _slots_loop(self):
        session = requests.Session()
        headers = {"Authorization": f"Bearer {self.gw.admin_token}"}
        while not self._stop.is_set():
            began = time.perf_counter()
            with contextlib.suppress(requests.RequestException):
                session.get(self.gw.url + "/slots", headers=headers, timeout=30)
            self.slots.append(time.perf_counter() - began)
            self._stop.wait(0.05)


def bare_supervisorctl_seconds() -> float:
    """supervisorctl's own start, to set its status times against."""
    ctl = str(Path(sys.executable).parent / "supervisorctl")
    return statistics.median(timed(lambda: subprocess.run([ctl, "--help"], capture_output=True)) for _ in range(3))


def run(folder: Path, n: int, report: Report) -> None:
    gw = new_gateway(folder / "var")
    empty_ready = start(gw)
    empty_stop = stop(gw)
    gw = new_gateway(folder / "var")
    start(gw)
    try:
        measure(gw, n, report, empty_ready, empty_stop)
    finally:
        if gw.process and gw.process.poll() is None:
            gw.stop(timeout=120)


def measure(gw: Gateway, n: int, report: Report, empty_ready: float, empty_stop: float) -> None:
    print(f"host scale, sim engine, N = {n} active slots, {PROVISIONED_BEFORE + PROVISION_BATCH} provisioned, "
          f"{os.cpu_count()} cores", flush=True)
    early = gw.provision(ENROLL_SAMPLES)
    enroll_at_0 = statistics.median(enroll_many(gw, early, 34600000000))
    provision_at_0 = provision_cost(gw)
    while len(gw.redis.smembers(SLOTS)) < PROVISIONED_BEFORE:
        gw.provision(PROVISION_BATCH)
    provision_at_400 = provision_cost(gw)
    available = sorted(set(gw.redis.smembers(SLOTS)) - set(early))
    late = available[:ENROLL_SAMPLES]
    enroll_at_400 = statistics.median(enroll_many(gw, late, 34600100000))
    rest = available[ENROLL_SAMPLES:ENROLL_SAMPLES + max(0, n - 2 * ENROLL_SAMPLES)]
    enroll_many(gw, rest, 34600200000)
    active = connected_count(gw)

    report.add(provision_at_400 <= 1.3 * provision_at_0,
               f"POST /slots count=100: {provision_at_0 * 1000:.0f} ms with {ENROLL_SAMPLES} there (baseline), "
               f"{provision_at_400 * 1000:.0f} ms with {PROVISIONED_BEFORE} there: "
               f"{provision_at_400 / provision_at_0:.2f}x (target <= 1.3x)")
    report.add(enroll_at_400 <= 1.2 * enroll_at_0,
               f"enrollment (median of {ENROLL_SAMPLES}): {enroll_at_0 * 1000:.0f} ms at {ENROLL_SAMPLES} "
               f"provisioned (baseline), "
               f"{enroll_at_400 * 1000:.0f} ms at {PROVISIONED_BEFORE}+ provisioned: "
               f"{enroll_at_400 / enroll_at_0:.2f}x (target <= 1.2x)")

    time.sleep(10)  # the enrollments' after-effects (QR files, first polls) settle
    cpu = cpu_by_role(gw, IDLE_SECONDS)
    simnet = cpu.pop("simnet", 0.0)
    together = sum(cpu.values())
    per_slot = together / max(active, 1)
    shares = ", ".join(f"{name} {share * 100:.1f}" for name, share in sorted(cpu.items(), key=lambda kv: -kv[1]))
    report.add(per_slot <= 0.0005,
               f"idle CPU: {together * 100:.1f} % of a core for {active} idle slots ({shares}; simnet apart "
               f"{simnet * 100:.1f}): {per_slot * 100:.3f} % per slot (target <= 0.05 %)")

    for path in ("/slots", "/slots2lines", "/metrics"):
        took, errors = api_p99(gw, path)
        report.add(took <= 0.050 and not errors,
                   f"GET {path} p99 with {API_CLIENTS} clients: {took * 1000:.1f} ms, {errors} errors "
                   f"(target <= 50 ms)")

    full_stop = stop(gw)
    report.add(full_stop <= 20 and not sigkilled(gw),
               f"stop with {active} active: {full_stop:.1f} s (baseline, none active: {empty_stop:.1f} s; "
               f"{full_stop / empty_stop:.1f}x); SIGKILLs in supervisord.log: {sigkilled(gw)} "
               f"(target <= 20 s, none killed)")

    ctl_start = bare_supervisorctl_seconds()
    began = time.perf_counter()
    gw.start(timeout=120)
    ready = time.perf_counter() - began
    with RampWatch(gw) as watch:
        wait_for(lambda: connected_count(gw) >= active, timeout=300, interval=0.5, what="every slot back")
        ramp = time.perf_counter() - began
    report.add(ready <= 5, f"restart -> /ready: {ready:.1f} s (baseline, empty gateway's first start: "
               f"{empty_ready:.1f} s; target <= 5 s)")
    report.add(ramp <= 60, f"restart -> all {active} connected: {ramp:.1f} s (target <= 60 s on 2 cores)")
    worst_ctl = max(watch.status) - ctl_start
    report.add(worst_ctl <= 1.0, f"supervisorctl status during the ramp: worst {max(watch.status):.2f} s, "
               f"{worst_ctl:.2f} s beyond its own start of {ctl_start:.2f} s (baseline) (target <= 1 s)")
    report.add(p99(watch.slots) <= 0.100, f"GET /slots during the ramp: p99 {p99(watch.slots) * 1000:.0f} ms "
               f"over {len(watch.slots)} calls (target <= 100 ms)")
    second_stop = stop(gw)
    report.add(second_stop <= 20, f"stop after the restart: {second_stop:.1f} s (target <= 20 s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slots", type=int, default=200, help="active slots (N); 500 are provisioned")
    args = parser.parse_args()
    if args.slots < 2 * ENROLL_SAMPLES:
        sys.exit(f"--slots must be at least {2 * ENROLL_SAMPLES}")
    report = Report()
    with tempfile.TemporaryDirectory(prefix="whin-bench-") as folder:
        run(Path(folder), args.slots, report)
    print(f"host scale: {len(report.rows) - report.missed} of {len(report.rows)} targets met", flush=True)


if __name__ == "__main__":
    main()
