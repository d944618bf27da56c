"""Several slot hosts on one machine, as WHIN_ROLE=host runs them on many: a test's own cluster.

One api gateway (WHIN_ROLE=api: the API, the delivery workers and, for the sim engine, the simulated
network every host talks to) and N slot hosts, each a launcher with its own supervisord tree, data
folder and sockets, all on one shared Redis database and one PostgreSQL database for the sessions.
"""

import contextlib
import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path

import psutil

from tests.gateway import Gateway, wait_for

# Fast failure detection for tests: a host is dead after 4 s of silence, a lease lasts 3 s.
CLUSTER_ENV = {"WHIN_HOST_DEAD_AFTER": "4", "WHIN_SLOT_LEASE": "3", "WHIN_RECONCILE_INTERVAL": "0.5"}


class Cluster:
    def __init__(self, folder: Path, redis_url: str, session_db: str, webhook_url: str, hosts: int = 3,
                 host_redis: dict[str, str] | None = None, **env):
        """``host_redis``: a host's own way to the same Redis (a RedisDoor the test can shut)."""
        shared = {**CLUSTER_ENV, "WHIN_SESSION_DB": session_db, **env}
        self.redis_url = redis_url
        self.host_redis = host_redis or {}
        self.api = Gateway(folder / "api", redis_url, WHIN_ROLE="api", WHIN_WEBHOOK_URL=webhook_url,
                           WHIN_HOST_NAME="api", **shared)
        self.hosts = {f"h{n}": self._host(folder, f"h{n}", shared) for n in range(1, hosts + 1)}

    def _host(self, folder: Path, name: str, shared: dict) -> Gateway:
        return Gateway(folder / name, self.host_redis.get(name, self.redis_url), WHIN_ROLE="host", WHIN_HOST_NAME=name,
                       WHIN_SIMNET_PORT=str(self.api.simnet_port), **shared)

    def start(self) -> "Cluster":
        self.api.start()
        for host in self.hosts.values():
            host.start()
        wait_for(lambda: sorted(h["name"] for h in self.host_list() if h["alive"]) == sorted(self.hosts),
                 what="every host to beat")
        return self

    def stop(self) -> None:
        for gw in [*self.hosts.values(), self.api]:
            gw.stop()

    def host_list(self) -> list[dict]:
        response = self.api.api("GET", "/hosts")
        assert response.status_code == 200, response.text
        return response.json()

    def host_of(self, slot_id: str) -> str | None:
        return self.api.detail(slot_id)["host"]

    def kill_host(self, name: str) -> None:
        """SIGKILL a host's whole process tree at once: the machine dies."""
        gw = self.hosts[name]
        pids = [gw.process.pid, *gw.processes()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        gw.process.wait(10)
        psutil.wait_procs([p for p in map(_process, pids) if p], timeout=10)


def slot_workers(slot_id: str) -> list[str]:
    """The hosts with a live worker process of ``slot_id`` now (read from each process's environment)."""
    return workers_by_slot([slot_id])[slot_id]


def workers_by_slot(slot_ids: list[str]) -> dict[str, list[str]]:
    """For each of ``slot_ids``, the hosts with a live worker process of it now: one walk of the processes."""
    wanted = set(slot_ids)
    found: dict[str, list[str]] = {slot_id: [] for slot_id in slot_ids}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if len(cmdline) >= 2 and cmdline[-2] == "slotworker" and cmdline[-1] in wanted \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found[cmdline[-1]].append(proc.environ().get("WHIN_HOST_NAME", "?"))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def log_times(gw, slot_id: str, words: str, after: float) -> list[float]:
    """When (unix time) a slot's worker on ``gw`` logged a line containing ``words``, after ``after``."""
    path = gw.data_dir / "logs" / f"slot-{slot_id}.log"
    times = []
    for raw in (path.read_text().splitlines() if path.exists() else []):
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        at = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
        if words in entry.get("event", "") and at >= after:
            times.append(at)
    return times


def _process(pid: int):
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def wait_until(predicate, timeout: float, what: str):
    started = time.monotonic()
    value = wait_for(predicate, timeout=timeout, interval=0.2, what=what)
    return value, time.monotonic() - started
