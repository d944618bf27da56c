"""Memory of idle slot processes, per engine, with 1 and with 50 slots running at once.

RSS and PSS (proportional set size, from /proc/<pid>/smaps_rollup: shared pages divided among the
processes that share them) per slot process, against an idle bare Python process of the same run.

  sim        slots paired with simulated phones and connected, idle in their long poll.
  whatsmeow  slots that imported neonize and loaded its Go library, their client created and
             connect() running, idle in pairing. WhatsApp cannot be reached from here, so the Go
             library's network calls are played by FakeGo (tests/slotworker/engines/fakego.py);
             a live session adds whatsmeow's own session state (a few MB of Go heap) on top.

Run: make bench  (or .venv/bin/python bench/slot_memory.py [--many 50])
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.gateway import REPO, Gateway, wait_for

FAKE_SITE = REPO / "tests" / "slotworker" / "engines" / "fakego_site"


def pss_mb(pid: int) -> float:
    for row in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if row.startswith("Pss:"):
            return int(row.split()[1]) / 1024
    raise RuntimeError("no Pss")


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1024 / 1024


def idle_slots(engine: str, count: int, folder: Path) -> tuple[float, float]:
    env = {"WHIN_ENGINE": engine, "WHIN_PAIRING_TIMEOUT": "900", "WHIN_SIM_QR_FIRST": "900",
           **{k: v for k, v in os.environ.items() if k in ("MALLOC_ARENA_MAX", "GOMAXPROCS", "GOGC", "PYTHONOPTIMIZE")}}
    if engine == "whatsmeow":
        env.update(WHIN_TEST_FAKE_GO="reachable", PYTHONPATH=os.pathsep.join([str(FAKE_SITE), str(REPO)]))
    gw = Gateway(folder / f"{engine}-{count}", redis_url=None, **env).start()
    try:
        slots = gw.provision(count)
        for index, slot_id in enumerate(slots):
            if engine == "sim":
                gw.enroll(slot_id, str(34600200000 + index))
            else:
                gw.enroll_qr_text(slot_id)
        time.sleep(3)  # settle into idleness
        pids = [gw.slot_pid(s) for s in slots]
        wait_for(lambda: all(pids), what="every slot to run")
        return statistics.mean(rss_mb(p) for p in pids), statistics.mean(pss_mb(p) for p in pids)
    finally:
        gw.stop()


def bare_python(count: int) -> tuple[float, float]:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(count)]
    time.sleep(1)
    try:
        return (statistics.mean(rss_mb(p.pid) for p in procs), statistics.mean(pss_mb(p.pid) for p in procs))
    finally:
        for p in procs:
            p.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--many", type=int, default=50)
    parser.add_argument("--engines", default="sim,whatsmeow")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="whin-bench-") as folder:
        for count in (1, args.many):
            base_rss, base_pss = bare_python(count)
            rows.append(("bare python (baseline)", count, base_rss, base_pss, base_pss))
            for engine in args.engines.split(","):
                rss, pss = idle_slots(engine, count, Path(folder))
                rows.append((f"{engine} slot", count, rss, pss, base_pss))
    print("idle slot processes: mean per process (MB)")
    for name, count, rss, pss, base in rows:
        print(f"  {name:<24} x{count:<3} RSS {rss:6.1f}   PSS {pss:6.1f}   PSS ratio to bare python {pss / base:4.1f}x")


if __name__ == "__main__":
    main()
