"""One harness per engine, so that one contract suite runs over both (test_contract.py)."""

import threading
import time
from pathlib import Path

import neonize.client
import requests
from werkzeug.serving import make_server

from controlplane.core.config import Settings
from simnet.app import create_app
from simnet.network import Network, QrSchedule
from slotworker.engines.sim import SimEngine
from slotworker.engines.whatsmeow import WhatsmeowEngine
from tests.gateway import free_port, wait_for
from tests.slotworker.engines.fakego import FakeGo


class Recorder:
    """The engine's events as the slot runner would get them."""

    def __init__(self):
        self.events: list[tuple] = []

    def __getattr__(self, name):
        if not name.startswith("on_"):
            raise AttributeError(name)
        return lambda *args: self.events.append((name, *args))

    def of(self, name: str) -> list[tuple]:
        return [e[1:] for e in self.events if e[0] == name]

    def wait(self, name: str, count: int = 1, timeout: float = 10) -> list[tuple]:
        return wait_for(lambda: len(self.of(name)) >= count and self.of(name), timeout=timeout, what=name)


class SimHarness:
    name = "sim"

    def __init__(self, tmp_path: Path):
        self.network = Network(tmp_path / "simnet", QrSchedule(first=30, following=10, count=3))
        port = free_port()
        self.server = make_server("127.0.0.1", port, create_app(self.network), threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{port}"
        self.settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_SIMNET_PORT": str(port)})

    def engine(self, slot_dir: Path, events) -> SimEngine:
        return SimEngine("SLOT0001", slot_dir, self.settings, events)

    def scan(self, line: str, recorder: Recorder) -> None:
        qr = recorder.wait("on_qr")[-1][0]
        requests.post(f"{self.url}/scan", json={"line": line, "qr": qr}, timeout=5).raise_for_status()

    def deliver(self, sender: str, line: str, text: str) -> str:
        response = requests.post(f"{self.url}/messages", json={"from": sender, "to": line, "text": text}, timeout=5)
        return response.json()["id"]

    def unlink(self, line: str) -> None:
        requests.post(f"{self.url}/phones/{line}/unlink", timeout=5).raise_for_status()

    def sent_to(self, number: str) -> list[dict]:
        return self.network.inbox(number)

    def go_offline(self) -> None:
        self.server.shutdown()

    def close(self) -> None:
        self.server.shutdown()


class WhatsmeowHarness:
    name = "whatsmeow"

    def __init__(self, tmp_path: Path, monkeypatch):
        self.fake = FakeGo()
        monkeypatch.setattr(neonize.client, "gocode", self.fake)  # every NewClient now talks to the stand-in
        self.settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_ENGINE": "whatsmeow"})
        self._ids = 0

    def engine(self, slot_dir: Path, events) -> WhatsmeowEngine:
        return WhatsmeowEngine("SLOT0001", slot_dir, self.settings, events)

    def scan(self, line: str, recorder: Recorder) -> None:
        recorder.wait("on_qr")
        self.fake.pair(line)

    def deliver(self, sender: str, line: str, text: str) -> str:
        self._ids += 1
        message_id = f"3EB0{time.time_ns():X}{self._ids}"
        self.fake.deliver(sender, text, message_id)
        return message_id

    def unlink(self, line: str) -> None:
        self.fake.unlink()

    def sent_to(self, number: str) -> list[dict]:
        return [{"text": m.conversation} if m.conversation else {"media": m} for to, m in self.fake.sent
                if to == number]

    def go_offline(self) -> None:
        self.fake.connected = False

    def close(self) -> None:
        pass
