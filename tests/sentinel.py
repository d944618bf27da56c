"""A Redis that fails over, for tests: a master, its replica and one Sentinel watching them, each a real
redis-server on loopback TCP (Sentinel knows servers by address and port, not by unix socket).

``fail_over()`` SIGKILLs the master, as a machine's death would, and waits until the Sentinel has
promoted the replica; clients of ``url`` (redis+sentinel://) then find the new master by asking it.
"""

import contextlib
import subprocess
import time
from pathlib import Path

import redis

from controlplane.launch import redis_server_binary
from tests.gateway import free_port

SERVICE = "whin"


class SentinelRedis:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.master_port, self.replica_port, self.sentinel_port = free_port(), free_port(), free_port()
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}/0"

    def start(self) -> "SentinelRedis":
        self._server("master", self.master_port)
        self._server("replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        conf = self.folder / "sentinel" / "sentinel.conf"
        conf.parent.mkdir(parents=True)
        conf.write_text(f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {conf.parent}\n"
                        f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 1\n"
                        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                        f"sentinel failover-timeout {SERVICE} 5000\n")
        self.processes["sentinel"] = subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"],
                                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        # Ready once the replica is in sync and the Sentinel knows it: only then can it be promoted.
        self._until(lambda: self._client(self.replica_port).info("replication")["master_link_status"] == "up",
                    "the replica to sync")
        self._until(lambda: self._sentinel().sentinel_slaves(SERVICE), "the Sentinel to find the replica")
        return self

    def master(self) -> int:
        return int(self._sentinel().sentinel_get_master_addr_by_name(SERVICE)[1])

    def fail_over(self) -> None:
        """The master's machine dies; returns once the Sentinel names the replica the master."""
        old = self.processes.pop("master")
        old.kill()
        old.wait(10)
        self._until(lambda: self.master() == self.replica_port, "the Sentinel to promote the replica", timeout=30)
        self._until(lambda: self._client(self.replica_port).info("replication")["role"] == "master",
                    "the replica to act as master")

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
                continue
            process.kill()
            process.wait()

    def _server(self, name: str, port: int, *args: str) -> None:
        folder = self.folder / name
        folder.mkdir(parents=True)
        self.processes[name] = subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(folder), *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, decode_responses=True)

    def _sentinel(self) -> redis.Redis:
        return self._client(self.sentinel_port)

    @staticmethod
    def _until(predicate, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate():
                    return
            except (redis.RedisError, KeyError):
                pass  # not up yet
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.1)
