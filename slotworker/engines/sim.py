"""The engine for the simulated WhatsApp network (simnet), over loopback HTTP.

It behaves like the real one where the layers above can tell: QR codes that rotate and run out, a
linked device whose credentials live in the slot's directory and survive restarts, reconnects
after a network drop, and messages held by the network until the device acknowledges them.
"""

import base64
import contextlib
import logging
import os
import threading

import requests

from controlplane.core import slotfiles
from slotworker.engines.base import Engine, EngineUnavailable, OutboundMedia, SendRefused, SendResult

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "sim-device.json"
POLL_SECONDS = 5  # long-poll length; a stop never waits for it (the thread is a daemon)
QR_PREFIX = "https://wa.me/settings/linked_devices#"


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode("ascii")


def qr_text(ref: str, keys: dict) -> str:
    """The QR payload, laid out as whatsmeow's: ref, noise key, identity key, adv secret, type."""
    return QR_PREFIX + ",".join([ref, keys["noise"], keys["identity"], keys["adv"], "1"])


def sender_number(payload: dict) -> str | None:
    """The sender's phone number, when the event carries it (a @lid sender may only have SenderAlt)."""
    source = payload.get("Info", {}).get("MessageSource", {})
    for jid in (source.get("Sender"), source.get("SenderAlt")):
        if jid and jid.get("Server") == "s.whatsapp.net" and jid.get("User"):
            return jid["User"]
    return None


class LoggedOut(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SimEngine(Engine):
    name = "sim"

    def __init__(self, slot_id, slot_dir, settings, events):
        super().__init__(slot_id, slot_dir, settings, events)
        self.base_url = settings.simnet_url
        self.http = requests.Session()
        self._stopping = threading.Event()
        self._logging_out = threading.Event()  # set before we tell the network: its echo is not news
        self._pairing_session: str | None = None
        self._connected = threading.Event()

    @property
    def credentials_path(self):
        return self.slot_dir / CREDENTIALS_FILE

    def credentials(self) -> dict | None:
        return slotfiles.read_json(self.credentials_path)

    def has_credentials(self) -> bool:
        return self.credentials() is not None

    # --- lifecycle ---

    def start_pairing(self) -> None:
        self._spawn(self._pair)

    def connect(self) -> None:
        self._spawn(self._session, self.credentials())

    def stop(self) -> None:
        self._stopping.set()
        session, self._pairing_session = self._pairing_session, None
        if session:
            # Like closing WhatsApp's socket: the codes on screen stop working at once.
            with contextlib.suppress(requests.RequestException):
                requests.delete(f"{self.base_url}/pair/{session}", timeout=1)
        self.http.close()

    def logout(self) -> None:
        creds = self.credentials()
        if creds is None:
            return
        # Before the request, not after: the session's long poll may see the device gone (and raise
        # LoggedOut on its thread) before this call returns.
        self._logging_out.set()
        try:
            self.http.post(self._device_url(creds, "logout"), headers=self._auth(creds), timeout=3)
        except requests.RequestException as err:
            log.warning("slot %s: network logout failed (%s); wiping credentials anyway",
                        self.slot_id, type(err).__name__)

    def _spawn(self, target, *args) -> None:
        threading.Thread(target=target, args=args, name=f"sim-{self.slot_id}", daemon=True).start()

    # --- pairing: QR codes until a phone scans one or they run out ---

    def _pair(self) -> None:
        keys = {"noise": _key(), "identity": _key(), "adv": _key()}
        try:
            response = self.http.post(f"{self.base_url}/pair", json=keys, timeout=5)
            response.raise_for_status()
            session = self._pairing_session = response.json()["session"]
            seen = -1
            while not self._stopping.is_set():
                for event in self._get(f"/pair/{session}/events", {"seen": seen}):
                    if event["type"] == "qr":
                        seen = event["index"]
                        self.events.on_qr(qr_text(event["ref"], keys), event["expires_in"])
                    elif event["type"] == "paired":
                        self._pairing_session = None
                        slotfiles.write_private_json(self.credentials_path, event["device"])
                        self.events.on_paired(event["device"]["line"])
                        self._session(event["device"])
                        return
                    elif event["type"] == "timeout":
                        self.events.on_pairing_ended("codes_exhausted")
                        return
        except requests.RequestException as err:
            if not self._stopping.is_set():
                log.warning("slot %s: simnet unreachable while pairing (%s)", self.slot_id, type(err).__name__)
                self.events.on_pairing_ended("network_unreachable")

    # --- a linked session: connect, take events, reconnect after drops ---

    def _session(self, creds: dict) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._connect_and_listen(creds)
                return
            except LoggedOut as logged_out:
                if not (self._stopping.is_set() or self._logging_out.is_set()):  # our own logout's echo: not news
                    self.events.on_logged_out(logged_out.reason)
                return
            except requests.RequestException as err:
                if self._stopping.is_set():
                    return
                self._connected.clear()
                failures += 1
                log.warning("slot %s: connection lost (%s); retry %d", self.slot_id, type(err).__name__, failures)
                self.events.on_disconnected()
                # whatsmeow retries after 2 s x the number of failures; the same here, capped.
                self._stopping.wait(min(2 * failures, 30))

    def _connect_and_listen(self, creds: dict) -> None:
        response = self.http.post(self._device_url(creds, "connect"), headers=self._auth(creds), timeout=5)
        self._raise_for_logout(response)
        response.raise_for_status()
        self._connected.set()
        self.events.on_connected()
        acked = int(response.json().get("acked", 0))
        while not self._stopping.is_set():
            response = self.http.get(self._device_url(creds, "events"), headers=self._auth(creds),
                                     params={"after": acked, "timeout": POLL_SECONDS}, timeout=POLL_SECONDS + 5)
            self._raise_for_logout(response)
            response.raise_for_status()
            for event in response.json():
                if self._stopping.is_set():
                    return  # unacknowledged events stay with the network for the next connection
                if event["type"] == "message":
                    payload = event["payload"]
                    self.events.on_message(payload, payload["Info"]["ID"], sender_number(payload))
                elif event["type"] == "logged_out":
                    raise LoggedOut(event.get("reason", "logged_out"))
                # Acknowledged with the next poll only after the handler returned: at-least-once.
                acked = event["seq"]

    def pair_code(self, line: str) -> str:
        session = self._pairing_session
        if session is None:
            raise EngineUnavailable("the slot is not pairing")
        try:
            response = requests.post(f"{self.base_url}/pair/{session}/code", json={"line": line}, timeout=5)
        except requests.RequestException as err:
            raise EngineUnavailable(f"WhatsApp unreachable ({type(err).__name__})") from None
        if response.status_code != 200:
            raise EngineUnavailable(f"WhatsApp refused a pairing code ({response.status_code})")
        return response.json()["code"]

    # --- sending ---

    def send(self, to: str, text: str | None = None, media: OutboundMedia | None = None) -> SendResult:
        creds = self.credentials()
        if creds is None or not self._connected.is_set():
            raise EngineUnavailable("not connected to WhatsApp")
        body: dict = {"to": to}
        if text is not None:
            body["text"] = text
        if media is not None:
            body["media"] = {"data": base64.b64encode(media.data).decode("ascii"), "mimetype": media.mimetype,
                             "filename": media.filename, "caption": media.caption}
        try:
            # A fresh connection: the session's pool is busy with the long poll on another thread.
            response = requests.post(self._device_url(creds, "send"), json=body, headers=self._auth(creds),
                                     timeout=10)
        except requests.RequestException as err:
            raise EngineUnavailable(f"WhatsApp unreachable ({type(err).__name__})") from None
        if response.status_code == 422:
            raise SendRefused(response.json().get("error", "refused"), response.json().get("detail", ""))
        if response.status_code != 200:
            raise EngineUnavailable(f"WhatsApp answered {response.status_code}")
        sent = response.json()
        return SendResult(id=sent["id"], timestamp=int(sent["timestamp"]))

    def _get(self, path: str, params: dict) -> list:
        response = self.http.get(f"{self.base_url}{path}", params={**params, "timeout": POLL_SECONDS},
                                 timeout=POLL_SECONDS + 5)
        response.raise_for_status()
        return response.json()

    def _device_url(self, creds: dict, action: str) -> str:
        return f"{self.base_url}/devices/{creds['device_id']}/{action}"

    @staticmethod
    def _auth(creds: dict) -> dict:
        return {"Authorization": f"Bearer {creds['secret']}"}

    @staticmethod
    def _raise_for_logout(response) -> None:
        if response.status_code == 401:
            raise LoggedOut(response.json().get("reason", "logged_out"))
