"""POST /media for a 5 MB photo: time to first byte, total, and the peak RSS of every gateway process,
against a plain download of the same encrypted file plus its decryption in one Python process.

  ours      POST /media -> API (gunicorn) -> Redis command -> slot worker: GET simnet /mms/..., decrypt
            (Decryptor), seal each chunk -> Redis reply list -> API: pop, unseal, stream out -> us
  baseline  in this process: GET the same encrypted file from simnet's /mms/..., then
            whatsapp_media.decrypt it whole (the total includes the decryption)
  streamed  (for reference, not the target) the same GET, decrypted chunk by chunk as it arrives

Rounds alternate ours/baseline/streamed, after one warm-up of each (counted for memory, not time);
medians. Every download's SHA-256 is checked against the photo. Memory: while each download runs, a
thread samples the RSS of every process of the gateway every 10 ms, and the kernel's own peak
(VmHWM, reset before the round through /proc/<pid>/clear_refs) catches what falls between samples.
Growth is the peak during a round minus the RSS just before it. CPU seconds per process role per
download show where ours spends its time.

Target (the issue's): ours <= 1.5x the baseline's time, and no process growing by more than 2x the
file size. Prints "target met" or "target missed"; exits non-zero only on a broken run.

Run: make bench  (or .venv/bin/python bench/media.py [--rounds 7] [--megabytes 5])
"""

import argparse
import base64
import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane.core import whatsapp_media
from tests.gateway import WEBHOOK_SECRET, Gateway, wait_for
from tests.receiver import Receiver

SENDER = "34611000001"
LINE = "34655000001"
MB = 1024 * 1024
READ_CHUNK = 64 * 1024  # what the client reads at a time (iter_content)
RELAY_CHUNK = 256 * 1024  # the sim engine's DOWNLOAD_CHUNK: the size of the pieces the slot relays
SAMPLE_SECONDS = 0.01
TIME_TARGET = 1.5
MEMORY_TARGET = 2.0  # times the file's size


def photo(size: int) -> bytes:
    """A JPEG header (SOI + JFIF APP0) followed by random bytes: incompressible, as a real photo is."""
    header = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return header + os.urandom(size - len(header))


# --- the processes of the gateway, by role ---

def role_of(proc: psutil.Process, slot_pid: int) -> str:
    cmd = " ".join(proc.cmdline())
    if proc.pid == slot_pid:
        return "slot worker (this slot)"
    for key, name in (("redis-server", "redis"), ("simnet", "simnet"), ("slotworker", "slot worker (other)"),
                      ("controlplane.messaging.delivery", "delivery"), ("reconciler", "reconciler"),
                      ("supervisord", "supervisord"), ("controlplane.launch", "launcher")):
        if key in cmd:
            return name
    if "gunicorn" in cmd:
        parent = proc.parent()
        return "api worker" if parent is not None and "gunicorn" in " ".join(parent.cmdline()) else "api master"
    return "other: " + cmd[:40]


def gateway_processes(gw: Gateway, slot_id: str) -> dict[int, str]:
    """pid -> role, numbered when a role has several processes (api worker 1, 2; delivery 1, 2)."""
    slot_pid = gw.slot_pid(slot_id)
    found: list[tuple[str, int]] = []
    for pid in gw.processes():
        try:
            found.append((role_of(psutil.Process(pid), slot_pid), pid))
        except psutil.NoSuchProcess:
            continue
    counts: dict[str, int] = {}
    for role, _ in found:
        counts[role] = counts.get(role, 0) + 1
    named, seen = {}, {}
    for role, pid in sorted(found):
        seen[role] = seen.get(role, 0) + 1
        named[pid] = f"{role} {seen[role]}" if counts[role] > 1 else role
    return named


def _hwm_bytes(pid: int) -> int | None:
    try:
        for row in Path(f"/proc/{pid}/status").read_text().splitlines():
            if row.startswith("VmHWM:"):
                return int(row.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
        return True
    except OSError:
        return False


class MemoryWatch:
    """Peak RSS growth of some processes over a block: samples every 10 ms, plus VmHWM after."""

    def __init__(self, pids: list[int]):
        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.before: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.hwm_used = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self, pid: int) -> int:
        try:
            return self.procs[pid].memory_info().rss
        except psutil.NoSuchProcess:
            return 0

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            for pid in self.procs:
                self.peak[pid] = max(self.peak[pid], self._rss(pid))

    def __enter__(self) -> "MemoryWatch":
        for pid in self.procs:
            self.hwm_used &= _reset_hwm(pid)
            self.before[pid] = self.peak[pid] = self._rss(pid)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for pid in self.procs:
            self.peak[pid] = max(self.peak[pid], self._rss(pid))
            if self.hwm_used:
                self.peak[pid] = max(self.peak[pid], _hwm_bytes(pid) or 0)

    def growth(self) -> dict[int, int]:
        return {pid: self.peak[pid] - self.before[pid] for pid in self.procs}


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    used = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            used[pid] = times.user + times.system
        except psutil.NoSuchProcess:
            used[pid] = 0.0
    return used


# --- the three ways to the photo ---

def ours(http: requests.Session, gw: Gateway, message: dict, expected: str) -> tuple[float, float]:
    start = time.perf_counter()
    response = http.post(gw.url + "/media", json={"line": LINE, "message": message},
                         headers={"Authorization": f"Bearer {gw.user_token}"}, stream=True, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"POST /media answered {response.status_code}: {response.text[:300]}")
    digest, first = hashlib.sha256(), None
    for chunk in response.iter_content(READ_CHUNK):
        if first is None:
            first = time.perf_counter() - start
        digest.update(chunk)
    total = time.perf_counter() - start
    if digest.hexdigest() != expected:
        raise RuntimeError("POST /media answered bytes other than the photo's")
    return first, total


def _reference(message: dict) -> tuple[str, bytes, bytes, bytes]:
    fields = message["imageMessage"]
    return (fields["directPath"], *(base64.b64decode(fields[f]) for f in ("mediaKey", "fileSHA256", "fileEncSHA256")))


def baseline(http: requests.Session, simnet_url: str, message: dict, expected: str) -> tuple[float, float, float]:
    """(time to first byte, total, of which decryption) of a GET of the encrypted file, then decrypt()."""
    path, media_key, sha256, enc_sha256 = _reference(message)
    start = time.perf_counter()
    response = http.get(simnet_url + path, stream=True, timeout=60)
    response.raise_for_status()
    parts, first = [], None
    for chunk in response.iter_content(READ_CHUNK):
        if first is None:
            first = time.perf_counter() - start
        parts.append(chunk)
    downloaded = time.perf_counter()
    plain = whatsapp_media.decrypt(b"".join(parts), media_key, "image", sha256, enc_sha256)
    end = time.perf_counter()
    if hashlib.sha256(plain).hexdigest() != expected:
        raise RuntimeError("the baseline decrypted bytes other than the photo's")
    return first, end - start, end - downloaded


def streamed(http: requests.Session, simnet_url: str, message: dict, expected: str) -> tuple[float, float]:
    """The same GET, decrypted as it arrives in the sim engine's chunks: first plain byte, total."""
    path, media_key, sha256, enc_sha256 = _reference(message)
    start = time.perf_counter()
    response = http.get(simnet_url + path, stream=True, timeout=60)
    response.raise_for_status()
    decryptor = whatsapp_media.Decryptor(media_key, "image", sha256, enc_sha256)
    digest, first = hashlib.sha256(), None
    for chunk in response.iter_content(RELAY_CHUNK):
        plain = decryptor.update(chunk)
        if plain and first is None:
            first = time.perf_counter() - start
        digest.update(plain)
    digest.update(decryptor.finish())
    total = time.perf_counter() - start
    if digest.hexdigest() != expected:
        raise RuntimeError("the streamed baseline decrypted bytes other than the photo's")
    return first, total


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--megabytes", type=float, default=5.0)
    args = parser.parse_args()

    data = photo(int(args.megabytes * MB))
    size = len(data)
    expected = hashlib.sha256(data).hexdigest()
    receiver = Receiver(WEBHOOK_SECRET).start()
    times = {"ours": [], "baseline": [], "streamed": []}
    decrypt_times: list[float] = []
    growth: dict[str, dict[str, list[int]]] = {"ours": {}, "baseline": {}}  # way -> role -> per round
    before: dict[str, int] = {}
    cpu: dict[str, float] = {}
    hwm = True

    with tempfile.TemporaryDirectory(prefix="whin-bench-") as folder:
        gw = Gateway(Path(folder) / "var", redis_url=None, WHIN_WEBHOOK_URL=receiver.url,
                     WHIN_MEDIA_MAX_BYTES=str(16 * MB), WHIN_MEDIA_TIMEOUT="30").start()
        try:
            slot_id = gw.enrolled_slot(LINE)
            message_id = gw.phone_sends_media(SENDER, LINE, data, "image/jpeg")
            event = wait_for(lambda: receiver.delivered(type="message", message_id=message_id), timeout=60,
                             what="the photo's message event")[0]
            message = event["payload"]["Message"]
            if int(message["imageMessage"]["fileLength"]) != size:
                raise RuntimeError("the message does not state the photo's size")
            roles = gateway_processes(gw, slot_id)
            roles[os.getpid()] = "this process (client / baseline)"
            pids = list(roles)
            http_ours, http_base = requests.Session(), requests.Session()

            for index in range(args.rounds + 1):  # round 0: the warm-up
                warm = index > 0
                cpu_start = cpu_seconds(pids)
                with MemoryWatch(pids) as watch:
                    first, total = ours(http_ours, gw, message, expected)
                cpu_end = cpu_seconds(pids)
                hwm &= watch.hwm_used
                if not warm:
                    before = {roles[p]: watch.before[p] for p in pids}
                for pid, grew in watch.growth().items():
                    growth["ours"].setdefault(roles[pid], []).append(grew)
                if warm:
                    times["ours"].append((first, total))
                    for pid in pids:
                        cpu[roles[pid]] = cpu.get(roles[pid], 0.0) + cpu_end[pid] - cpu_start[pid]

                with MemoryWatch([os.getpid()]) as watch:
                    first, total, decrypting = baseline(http_base, gw.simnet_url, message, expected)
                growth["baseline"].setdefault(roles[os.getpid()], []).append(watch.growth()[os.getpid()])
                if warm:
                    times["baseline"].append((first, total))
                    decrypt_times.append(decrypting)
                    times["streamed"].append(streamed(http_base, gw.simnet_url, message, expected))
                else:
                    streamed(http_base, gw.simnet_url, message, expected)

        finally:
            gw.stop()
            receiver.stop()

    def median(way: str, which: int) -> float:
        return statistics.median(t[which] for t in times[way])

    def spread(way: str, which: int) -> str:
        values = [t[which] * 1000 for t in times[way]]
        return f"{min(values):6.0f}..{max(values):<6.0f}"

    print(f"POST /media, a {size / MB:.1f} MB photo (image/jpeg), {args.rounds} rounds after a warm-up; "
          "median (min..max) in ms")
    print(f"  {'':<36}{'first byte':>10} {'(range)':<15}{'total':>8} {'(range)':<15}")
    for way, label in (("ours", "ours (POST /media)"), ("baseline", "baseline (GET + decrypt)"),
                       ("streamed", "streamed GET + Decryptor (ref.)")):
        print(f"  {label:<36}{median(way, 0) * 1000:10.0f} {spread(way, 0):<15}"
              f"{median(way, 1) * 1000:8.0f} {spread(way, 1):<15}")
    print(f"  of the baseline's total, decrypt(): {statistics.median(decrypt_times) * 1000:.0f} ms")
    ttfb_ratio, total_ratio = median("ours", 0) / median("baseline", 0), median("ours", 1) / median("baseline", 1)
    print(f"  ratio ours/baseline: first byte {ttfb_ratio:.2f}x, total {total_ratio:.2f}x "
          f"(ours/streamed: first byte {median('ours', 0) / median('streamed', 0):.2f}x, "
          f"total {median('ours', 1) / median('streamed', 1):.2f}x)")

    print(f"\nmemory: RSS before the first download, and peak growth during one (sampled every "
          f"{SAMPLE_SECONDS * 1000:.0f} ms{', and VmHWM' if hwm else '; VmHWM unavailable'}); "
          f"file size {size / MB:.1f} MB")
    print(f"  {'process':<36}{'RSS MB':>8}{'cold +MB':>10}{'warm max +MB':>14}{'x file':>8}")
    over = []
    for role in sorted(growth["ours"]):
        rounds = growth["ours"][role]
        worst = max(rounds)
        flag = ""
        if worst > MEMORY_TARGET * size and not role.startswith("this process"):
            flag = f"  > {MEMORY_TARGET:g}x"
            over.append(role)
        print(f"  {role:<36}{before[role] / MB:8.1f}{rounds[0] / MB:10.1f}{max(rounds[1:]) / MB:14.1f}"
              f"{worst / size:8.2f}{flag}")
    base_rounds = growth["baseline"][roles[os.getpid()]]
    print(f"  {'baseline: this process, GET+decrypt':<36}{'':>8}{base_rounds[0] / MB:10.1f}"
          f"{max(base_rounds[1:]) / MB:14.1f}{max(base_rounds) / size:8.2f}")

    print(f"\nCPU seconds per download of ours, by process (mean of {args.rounds}):")
    print("  " + ", ".join(f"{role} {seconds / args.rounds * 1000:.0f} ms"
                           for role, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]) if seconds > 0.0005))

    # The time target is on the total: the baseline's first byte is the encrypted file's (it decrypts only
    # once it has it all), ours is a decrypted one, so their ratio is shown but not held to the target.
    time_met = total_ratio <= TIME_TARGET
    print(f"\ntarget: total time <= {TIME_TARGET:g}x the baseline's ({total_ratio:.2f}x): "
          f"{'met' if time_met else 'missed'}; no process growing by more than {MEMORY_TARGET:g}x the file: "
          f"{'met' if not over else 'missed (' + ', '.join(over) + ')'}")
    print("target met" if time_met and not over else "target missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
