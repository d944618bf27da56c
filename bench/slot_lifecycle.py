"""Slot lifecycle figures on the real processes (sim engine), with baselines from the same run.

  - /enroll -> QR answer: the worker's start (a new Python process) dominates; the baseline is the
    time to start a bare Python interpreter under the same machine load.
  - /resume -> active (OK once the worker reconnected): likewise against a bare interpreter start.
  - RSS and PSS of one idle, connected sim slot process, against an idle bare Python process.

Run: make bench  (or .venv/bin/python bench/slot_lifecycle.py [--samples N])
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.gateway import Gateway, wait_for


def pss_kb(pid: int) -> int:
    for row in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if row.startswith("Pss:"):
            return int(row.split()[1])
    raise RuntimeError("no Pss in smaps_rollup")


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def bare_python_start() -> float:
    return timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[max(0, int(len(ordered) * 0.9) - 1)]
    return f"median {statistics.median(ordered) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="whin-bench-") as folder:
        gw = Gateway(Path(folder) / "var", redis_url=None).start()
        try:
            run(gw, args.samples)
        finally:
            gw.stop()


def run(gw: Gateway, samples: int) -> None:
    slots = gw.provision(samples)
    enroll, resume, baseline = [], [], []
    for index, slot_id in enumerate(slots):
        baseline.append(bare_python_start())
        enroll.append(timed(lambda s=slot_id: gw.api("GET", f"/enroll/{s}").raise_for_status()))
        line = str(34600100000 + index)
        gw.scan(line, gw.enroll_qr_text(slot_id)).raise_for_status()
        wait_for(lambda s=slot_id: gw.detail(s)["connected"], what="connect")
        gw.api("GET", f"/sleepid/{slot_id}").raise_for_status()
        resume.append(timed(lambda s=slot_id: gw.api("GET", f"/resumeid/{s}").raise_for_status()))

    time.sleep(2)  # let the workers settle into their idle long poll
    pid = gw.slot_pid(slots[0])
    slot_rss = psutil.Process(pid).memory_info().rss / 1024
    slot_pss = pss_kb(pid)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(0.5)
    bare_rss = psutil.Process(idle.pid).memory_info().rss / 1024
    bare_pss = pss_kb(idle.pid)
    idle.kill()

    base = statistics.median(baseline)
    print(f"slot lifecycle, sim engine, {samples} samples each")
    print(f"  bare python start (baseline)  {summary(baseline)}")
    print(f"  /enroll -> QR answer          {summary(enroll)}   ratio {statistics.median(enroll) / base:.1f}x")
    print(f"  /resume -> active (OK)        {summary(resume)}   ratio {statistics.median(resume) / base:.1f}x")
    print(f"  idle sim slot process         RSS {slot_rss / 1024:5.1f} MB   PSS {slot_pss / 1024:5.1f} MB")
    print(f"  idle bare python (baseline)   RSS {bare_rss / 1024:5.1f} MB   PSS {bare_pss / 1024:5.1f} MB"
          f"   ratio RSS {slot_rss / bare_rss:.1f}x")


if __name__ == "__main__":
    main()
