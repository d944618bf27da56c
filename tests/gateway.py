"""A whole gateway for tests: the real launcher, supervisord, gunicorn, reconciler, simnet, slot workers.

Only WhatsApp's servers are replaced (by simnet, the sim engine's network). Each Gateway gets its
own data folder, ports and Redis database, so several can run side by side on one Redis server.
"""

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from controlplane import instance
from controlplane.cli import decode_qr_png
from controlplane.core.connection import connect
from controlplane.supervisor import Supervisor, program_name

REPO = Path(__file__).resolve().parents[1]

# Every process a Gateway starts carries its mark in the environment (supervisord hands its
# environment to every program), so stop() finds them all: supervisord gives each program a
# process group of its own, and a killed launcher leaves them running. redis-server rewrites its
# environment for its process title, so it is found by its data folder in its command line.
GATEWAY_MARK = "WHIN_TEST_GATEWAY"

# QR codes rotate fast in tests; pairing gives up fast.
TEST_ENV = {
    "WHIN_ENGINE": "sim",
    "WHIN_SIM_QR_FIRST": "6",
    "WHIN_SIM_QR_NEXT": "3",
    "WHIN_SIM_QR_COUNT": "3",
    "WHIN_PAIRING_TIMEOUT": "20",
    "WHIN_RECONCILE_INTERVAL": "0.5",
    "WHIN_API_WORKERS": "2",
    # Deliveries retry after 1, 1, 2, 2, ... s, for a minute; a POST waits 3 s at most.
    "WHIN_DELIVERY_BACKOFF": "1,1,2",
    "WHIN_DELIVERY_MAX_AGE": "60",
    "WHIN_WEBHOOK_TIMEOUT": "3",
    "WHIN_DELIVERY_WORKERS": "2",
    "WHIN_SEND_TIMEOUT": "5",
    "WHIN_MEDIA_MAX_BYTES": str(1024 * 1024),
    "WHIN_MEDIA_TIMEOUT": "3",
    "WHIN_MEDIA_ALLOW": "127.0.0.1/32",  # the tests' media servers are on loopback (test_send.py tests without)
}

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"test-webhook-secret-32-bytes-ok!").decode()
QUEUE_KEY = base64.urlsafe_b64encode(b"test-queue-key-of-32-bytes-long!").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NotYet(Exception):
    """An answer that means "not yet" (a 5xx while the gateway is busy or restarting a part)."""


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll until predicate() is truthy; return its value, or fail saying what never happened.

    Every "not yet" is not yet until the deadline: a falsy value, a refused or timed-out request,
    a 5xx (NotYet). The last of them is named when the wait fails.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
        except (NotYet, requests.RequestException) as err:
            value, last = None, err
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}" +
                                 (f" (last: {type(last).__name__}: {last})" if last else ""))
        time.sleep(interval)


class Gateway:
    def __init__(self, data_dir: Path, redis_url: str | None, command: list[str] | None = None, **overrides):
        """``redis_url=None``: the gateway runs its own embedded Redis, as `make run` does by default."""
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.simnet_port = free_port()
        self.admin_token = "test-admin-token"
        self.user_token = "test-user-token"
        self.env = {
            **os.environ, **TEST_ENV,
            "WHIN_DATA_DIR": str(self.data_dir),
            "WHIN_REDIS_URL": redis_url or "",
            "WHIN_PORT": str(self.port),
            "WHIN_SIMNET_PORT": str(self.simnet_port),
            "WHIN_API_TOKENS": f"{self.admin_token},{self.user_token}",
            "WHIN_SUPERVISOR_PASSWORD": "test-supervisor-password",
            "WHIN_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "WHIN_QUEUE_KEY": QUEUE_KEY,
            GATEWAY_MARK: uuid.uuid4().hex,
            **overrides,
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.simnet_url = f"http://127.0.0.1:{self.simnet_port}"
        redis_url = redis_url or f"unix://{self.data_dir.resolve()}/run/redis.sock"
        self.redis = connect(redis_url)  # redis+sentinel:// too
        # By default the process we start is the launcher, supervisord's parent (`make run` without make).
        self.command = command or [sys.executable, "-m", "controlplane.launch"]
        self.process: subprocess.Popen | None = None
        self.http = requests.Session()

    # --- processes ---

    def start(self, timeout: float = 60) -> "Gateway":
        """Start and wait until it answers; if it never does, stop all it started before failing."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "launch.out", "ab") as log:
            self.process = subprocess.Popen(self.command, cwd=REPO, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(self._answers, timeout=timeout, what="the API and simnet to answer")
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the launcher exited with {self.process.returncode}; see {self.data_dir}")
        if self.env.get("WHIN_ROLE") == "host":  # a slot host has no API: ready once its agent runs
            try:
                return self.supervisor.program_states().get("reconciler") == "RUNNING"
            except Exception:  # supervisord not answering yet
                return False
        try:
            simnet_up = (self.env["WHIN_ENGINE"] != "sim"  # simnet runs for the sim engine only
                         or requests.get(f"{self.simnet_url}/health", timeout=5).status_code == 200)
            return requests.get(f"{self.url}/ready", timeout=5).status_code == 200 and simnet_up
        except requests.RequestException:  # refused, timed out, reset: not yet
            return False

    def stop(self, timeout: float = 30, sig: int = signal.SIGTERM, whole_group: bool = False) -> None:
        """Signal the gateway as a sysadmin would: its main process, or (Ctrl-C) its whole process group.

        Whatever is still running after ``timeout`` (or was left without a parent) is killed: a test
        never leaves a process of its gateway behind, whether it passed or not.
        """
        if self.process and self.process.poll() is None:
            if whole_group:
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        instance.end_processes(self.processes(), grace=5)
        self.http.close()

    def processes(self) -> list[int]:
        """Pids of every live process this gateway started, orphans included."""
        return processes_of(GATEWAY_MARK, self.env[GATEWAY_MARK], self.data_dir)


    @property
    def supervisor(self) -> Supervisor:
        from controlplane.core.config import Settings

        settings = Settings.from_env(self.env)
        return Supervisor.from_settings(settings)

    def supervisorctl(self, *args: str) -> str:
        conf = self.data_dir / "supervisor" / "supervisord.conf"
        result = subprocess.run([str(Path(sys.executable).parent / "supervisorctl"), "-c", str(conf), *args],
                                capture_output=True, text=True, timeout=30)
        return result.stdout

    def whinctl(self, *args: str) -> subprocess.CompletedProcess:
        """whinctl as a sysadmin runs it in this gateway's project and data folder."""
        return subprocess.run([sys.executable, "-m", "controlplane.cli", *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=60)

    def slot_pid(self, slot_id: str) -> int:
        return self.running_pid(program_name(slot_id))

    def running_pid(self, name: str, timeout: float = 20.0) -> int:
        """The pid of a program once it runs. Never 0, which supervisord answers between two runs of a
        program: os.kill(0, …) would signal the test's own process group, pytest included."""
        def pid():
            info = self.supervisor.process_info_by_name(name)
            return info["pid"] if info["statename"] == "RUNNING" and info["pid"] > 0 else None
        return wait_for(pid, timeout=timeout, what=f"{name} to run")

    def slot_dir(self, slot_id: str) -> Path:
        return self.data_dir / "slots" / slot_id

    # --- the API ---

    def api(self, method: str, path: str, token: str | None = "admin", **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token == "admin":
            token = self.admin_token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, self.url + path, headers=headers, timeout=60, **kwargs)

    def provision(self, count: int = 1) -> list[str]:
        response = self.api("POST", "/slots", json={"count": count})
        assert response.status_code == 200, response.text
        return response.json()["created"]

    def detail(self, slot_id: str) -> dict:
        return self._answer("GET", f"/slot/{slot_id}")

    def status_of(self, slot_id: str) -> str:
        listing = self._answer("GET", "/slots")
        return next(pair[slot_id] for pair in listing if slot_id in pair)

    def _answer(self, method: str, path: str):
        """The JSON of a read; a 5xx is NotYet (a wait retries it), any other answer is returned."""
        response = self.api(method, path)
        if response.status_code >= 500:
            raise NotYet(f"{method} {path} answered {response.status_code}: {response.text[:200]}")
        return response.json()

    def enroll_qr_text(self, slot_id: str) -> str:
        response = self.api("GET", f"/enroll/{slot_id}")
        assert response.status_code == 200, response.text
        return decode_qr_png(base64.b64decode(response.json()["qr"]))

    def scan(self, line: str, qr_text: str) -> requests.Response:
        return self.http.post(f"{self.simnet_url}/scan", json={"line": line, "qr": qr_text}, timeout=10)

    def enroll(self, slot_id: str, line: str) -> None:
        """The whole enrollment as a person does it: ask for the QR, the phone scans it, wait for active."""
        response = self.scan(line, self.enroll_qr_text(slot_id))
        assert response.status_code == 200, response.text
        wait_for(lambda: self.detail(slot_id).get("connected"), what=f"slot {slot_id} to connect")

    def phone_sends(self, sender: str, line: str, text: str) -> str:
        """A phone sends a text to an enrolled line; returns WhatsApp's message id."""
        response = self.http.post(f"{self.simnet_url}/messages", json={"from": sender, "to": line, "text": text},
                                  timeout=10)
        response.raise_for_status()
        return response.json()["id"]

    def simnet(self, method: str, path: str, body: dict | None = None):
        """A call to the simulated network (a phone's doing, or WhatsApp's); its JSON answer."""
        response = self.http.request(method, f"{self.simnet_url}{path}", json=body, timeout=10)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def phone_sends_media(self, sender: str, line: str, data: bytes, mimetype: str, **media) -> str:
        """A phone sends a photo, voice note or document (filename, caption, ptt); WhatsApp's message id."""
        body = {"data": base64.b64encode(data).decode("ascii"), "mimetype": mimetype, **media}
        return self.simnet("POST", "/messages", {"from": sender, "to": line, "media": body})["id"]

    def inbox(self, number: str) -> list[dict]:
        return self.http.get(f"{self.simnet_url}/phones/{number}/inbox", timeout=10).json()

    def enrolled_slot(self, line: str) -> str:
        """A new slot, enrolled with ``line`` and connected; returns its id."""
        (slot_id,) = self.provision(1)
        self.enroll(slot_id, line)
        return slot_id

    def unlink(self, line: str) -> None:
        self.http.post(f"{self.simnet_url}/phones/{line}/unlink", timeout=10).raise_for_status()


def processes_of(mark: str, value: str, data_dir: Path) -> list[int]:
    """Pids of the live processes of one start: those whose environment carries ``mark=value``, and
    those naming its data folder (redis-server rewrites its environment for its process title)."""
    return sorted(set(instance.processes_with_env(mark, value)) | set(instance.processes_naming(data_dir)))
