"""The sim engine's world for the contract suite: a real simnet, driven through its HTTP API."""

import base64
import threading
from pathlib import Path

import requests
from werkzeug.serving import make_server

from controlplane.core.config import Settings
from simnet.app import create_app
from simnet.network import Network, QrSchedule
from slotworker.engines.sim import SimEngine
from tests.gateway import free_port
from tests.slotworker.engines.harness import Recorder


class SimHarness:
    name = "sim"

    def __init__(self, tmp_path: Path):
        self.network = Network(tmp_path / "simnet", QrSchedule(first=30, following=10, count=3))
        port = free_port()
        self.server = make_server("127.0.0.1", port, create_app(self.network), threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{port}"
        self.env = {"WHIN_DATA_DIR": str(tmp_path), "WHIN_SIMNET_PORT": str(port)}
        self.settings = Settings.from_env(self.env)

    def engine(self, slot_dir: Path, events, **env) -> SimEngine:
        settings = Settings.from_env({**self.env, **env}) if env else self.settings
        return SimEngine("SLOT0001", slot_dir, settings, events)

    def _post(self, path: str, body: dict | None = None) -> dict:
        response = requests.post(f"{self.url}{path}", json=body or {}, timeout=5)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def scan(self, line: str, recorder: Recorder) -> None:
        qr = recorder.wait("on_qr")[-1][0]
        requests.post(f"{self.url}/scan", json={"line": line, "qr": qr}, timeout=5).raise_for_status()

    # --- the phones ---

    def deliver(self, sender: str, line: str, text: str) -> str:
        return self._post("/messages", {"from": sender, "to": line, "text": text})["id"]

    def send_media(self, sender: str, line: str, data: bytes, mimetype: str, filename: str | None = None,
                   caption: str | None = None, ptt: bool = False) -> str:
        media = {"data": base64.b64encode(data).decode(), "mimetype": mimetype, "filename": filename,
                 "caption": caption, "ptt": ptt}
        body = {"from": sender, "to": line, "media": {k: v for k, v in media.items() if v is not None}}
        return self._post("/messages", body)["id"]

    def own_message(self, line: str, to: str, text: str) -> str:
        """The line's own phone writes to someone: every linked device sees it (IsFromMe)."""
        return self._post("/messages", {"from": line, "to": to, "text": text})["id"]

    def react(self, sender: str, line: str, target_id: str, emoji: str) -> str:
        body = {"from": sender, "to": line, "reaction": {"message_id": target_id, "emoji": emoji}}
        return self._post("/messages", body)["id"]

    def edit(self, sender: str, line: str, target_id: str, text: str) -> str:
        body = {"from": sender, "to": line, "edit": {"message_id": target_id, "text": text}}
        return self._post("/messages", body)["id"]

    def revoke(self, sender: str, line: str, target_id: str) -> str:
        return self._post("/messages", {"from": sender, "to": line, "revoke": {"message_id": target_id}})["id"]

    def read(self, phone: str, line: str, ids: list[str]) -> None:
        self._post(f"/phones/{phone}/read", {"line": line, "ids": ids})

    def call(self, phone: str, line: str) -> str:
        return self._post(f"/phones/{phone}/call", {"line": line})["call_id"]

    def hang_up(self, phone: str, line: str, call_id: str) -> None:
        self._post(f"/phones/{phone}/hangup", {"line": line, "call_id": call_id})

    def typing(self, phone: str, line: str, state: str) -> None:
        self._post(f"/phones/{phone}/typing", {"line": line, "state": state})

    def presence(self, phone: str, line: str, available: bool) -> None:
        self._post(f"/phones/{phone}/presence", {"line": line, "available": available})

    def undecryptable(self, phone: str, line: str) -> str:
        return self._post(f"/phones/{phone}/undecryptable", {"line": line})["id"]

    def create_group(self, name: str, members: list[str]) -> str:
        return self._post("/groups", {"name": name, "members": members})["id"]

    def rename_group(self, group_id: str, name: str) -> None:
        self._post(f"/groups/{group_id}", {"name": name})

    def group_message(self, sender: str, group_id: str, text: str) -> str:
        return self._post("/messages", {"from": sender, "group": group_id, "text": text})["id"]

    # --- WhatsApp itself ---

    def forget_media(self) -> None:
        requests.delete(f"{self.url}/media", timeout=5).raise_for_status()

    def ban(self, line: str, seconds: int) -> None:
        self._post(f"/phones/{line}/ban", {"seconds": seconds})

    def replace(self, line: str) -> None:
        self._post(f"/phones/{line}/replace")

    def outdate(self, line: str) -> None:
        self._post(f"/phones/{line}/outdated", {"outdated": True})

    def unlink(self, line: str) -> None:
        requests.post(f"{self.url}/phones/{line}/unlink", timeout=5).raise_for_status()

    def join(self, number: str) -> None:
        """That number is now on WhatsApp."""
        self._post("/phones", {"number": number})

    def _get(self, path: str):
        response = requests.get(f"{self.url}{path}", timeout=5)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def sent_to(self, number: str) -> list[dict]:
        """What the phone shows from the lines, as simnet's inbox entries, oldest first."""
        return self._get(f"/phones/{number}/inbox")

    def sent_to_group(self, group_id: str) -> list[dict]:
        return self._get(f"/groups/{group_id}/inbox")

    def read_by_line(self, number: str) -> list[str]:
        return self._get(f"/phones/{number}/read-by-line")

    def chat_state(self, number: str) -> dict:
        return self._get(f"/phones/{number}/chat-state")

    def go_offline(self) -> None:
        self.server.shutdown()

    def close(self) -> None:
        self.server.shutdown()
