"""A real simnet HTTP server in a thread, and the calls its tests share."""

import threading
from pathlib import Path

import requests
from werkzeug.serving import make_server

from simnet.app import create_app
from simnet.network import QR_PREFIX, Network, QrSchedule
from tests.gateway import free_port


class SimServer:
    def __init__(self, folder: Path):
        self.folder = folder
        self.network = Network(folder, QrSchedule(first=30, following=10, count=3))
        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, create_app(self.network), threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"

    def post(self, path: str, json: dict | None = None) -> requests.Response:
        return requests.post(self.url + path, json=json, timeout=5)

    def ok(self, path: str, json: dict | None = None) -> dict:
        response = self.post(path, json)
        assert response.status_code == 200, response.text
        return response.json()

    def link(self, line: str) -> dict:
        """A device linked to ``line`` (device_id, secret, line), by a scan as a phone does."""
        session = self.network.begin_pairing({})
        (event,) = self.network.pairing_events(session, seen=-1, timeout=1)
        self.ok("/scan", {"line": line, "qr": QR_PREFIX + event["ref"]})
        (paired,) = self.network.pairing_events(session, seen=0, timeout=1)
        return paired["device"]

    def device(self, device: dict, method: str, action: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.url}/devices/{device['device_id']}/{action}", timeout=5,
                                headers={"Authorization": f"Bearer {device['secret']}"}, **kwargs)

    def events(self, device: dict, after: int = 0, **params) -> list[dict]:
        response = self.device(device, "GET", "events", params={"after": after, "timeout": 0, **params})
        assert response.status_code == 200, response.text
        return response.json()

    def close(self) -> None:
        self.server.shutdown()
