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

from controlplane.core.whatsapp_media import Decryptor, MediaCorrupt, media_of
from slotworker.engines.base import Download, Engine, EngineUnavailable, MediaRefused
from slotworker.engines.sim_send import SimConversation

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "sim-device.json"  # in the slot folder, when its session record lives there
CREDENTIALS_RECORD = "sim-device"
# Long-poll length: an idle linked slot asks simnet once this often (under simnet's own cap,
# simnet/app.py MAX_POLL_SECONDS). Nothing waits for it to run out: an event ends it at once, a
# simnet restart breaks it, and a stop never waits for it (the thread is a daemon).
POLL_SECONDS = 25
QR_PREFIX = "https://wa.me/settings/linked_devices#"
OFFLINE_REASONS = ("temporary_ban", "stream_replaced", "client_outdated")
# A client WhatsApp calls outdated stays offline; it asks again this often (an update of simnet's
# flag, or of the real client, brings it back without a restart).
OUTDATED_RETRY_SECONDS = 60
DOWNLOAD_CHUNK = 256 * 1024
LID_CACHE_SIZE = 10_000  # numbers behind LIDs kept per slot (a few hundred KB at most)


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode("ascii")


def qr_text(ref: str, keys: dict) -> str:
    """The QR payload, laid out as whatsmeow's: ref, noise key, identity key, adv secret, type."""
    return QR_PREFIX + ",".join([ref, keys["noise"], keys["identity"], keys["adv"], "1"])


class LoggedOut(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Offline(Exception):
    """The network ended the connection, or refused it, though the device is still linked."""

    def __init__(self, reason: str, details: dict):
        super().__init__(reason)
        self.reason = reason
        self.details = details


class Reconnect(Exception):
    """The network no longer knows this connection (it restarted): connect again."""


def _offline(notice: dict) -> Offline:
    """An offline notice or a refused connect (both carry ``reason``/``error``, and a ban's details)."""
    reason = notice.get("reason") if notice.get("type") == "offline" else notice.get("error")
    details = {}
    if reason == "temporary_ban":
        details = {"expires_in": int(notice.get("expires_in") or 0),
                   "ban_code": str(notice.get("ban_code") or "unknown").lower()}
    return Offline(reason, details)


class SimEngine(SimConversation, Engine):  # sending and the rest of a conversation: sim_send.py
    name = "sim"

    def __init__(self, slot_id, slot_dir, settings, events):
        super().__init__(slot_id, slot_dir, settings, events)
        self.base_url = settings.simnet_url
        self.http = requests.Session()
        self._stopping = threading.Event()
        self.thread: threading.Thread | None = None  # the last one spawned (pairing or session)
        self._logging_out = threading.Event()  # set before we tell the network: its echo is not news
        self._pairing_session: str | None = None
        self._connected = threading.Event()
        self._offline_reason: str | None = None  # the last one reported, so an outdated client says it once
        self._lid_phones: dict[str, str] = {}

    def credentials(self) -> dict | None:
        return self.session.read(CREDENTIALS_RECORD)

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
        # Kept so that its end can be awaited (tests): a stopped engine's thread may still sit in its
        # long poll, and another engine of the same slot id in the same process would share its name.
        self.thread = threading.Thread(target=target, args=args, name=f"sim-{self.slot_id}", daemon=True)
        self.thread.start()

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
                        self.session.write(CREDENTIALS_RECORD, event["device"])
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
        """Connect, listen, reconnect: after a drop (2 s x failures), after a temporary ban once it
        expired, every OUTDATED_RETRY_SECONDS while the client is outdated; never after another client
        took the session (stream_replaced: the thread ends, the credentials stay)."""
        failures = 0
        self._offline_reason = None
        while not self._stopping.is_set():
            try:
                self._connect_and_listen(creds)
                return
            except LoggedOut as logged_out:
                if not (self._stopping.is_set() or self._logging_out.is_set()):  # our own logout's echo: not news
                    self.events.on_logged_out(logged_out.reason)
                return
            except Offline as offline:
                self._connected.clear()
                if self._stopping.is_set():
                    return
                # A ban is news every time (it carries its expiry); an outdated client only once.
                if offline.reason == "temporary_ban" or offline.reason != self._offline_reason:
                    self.events.on_offline(offline.reason, offline.details)
                self._offline_reason = offline.reason
                if offline.reason == "temporary_ban":
                    self._stopping.wait(offline.details["expires_in"] + 1)
                elif offline.reason == "client_outdated":
                    self._stopping.wait(OUTDATED_RETRY_SECONDS)
                else:
                    return
            except Exception as err:  # a drop, or a bug in a callback: the session reconnects, never dies quietly
                if self._stopping.is_set():
                    return
                self._connected.clear()
                failures += 1
                level = logging.WARNING if isinstance(err, (requests.RequestException, Reconnect)) else logging.ERROR
                log.log(level, "slot %s: connection lost (%s); retry %d", self.slot_id, type(err).__name__, failures)
                self.events.on_disconnected()
                # whatsmeow retries after 2 s x the number of failures; the same here, capped.
                self._stopping.wait(min(2 * failures, 30))

    def _connect_and_listen(self, creds: dict) -> None:
        # The network queues only the events this slot forwards (WHIN_EVENTS), as whatsmeow subscribes.
        response = self.http.post(self._device_url(creds, "connect"), headers=self._auth(creds),
                                  json={"sources": sorted(self.sources)}, timeout=5)
        self._raise_for_logout(response)
        if response.status_code == 403 and self._json(response).get("error") in OFFLINE_REASONS:
            raise _offline(self._json(response))
        response.raise_for_status()
        connected = response.json()
        self._connected.set()
        self._offline_reason = None
        self.events.on_connected()
        acked, connection = int(connected.get("acked", 0)), connected.get("connection")
        while not self._stopping.is_set():
            response = self.http.get(self._device_url(creds, "events"), headers=self._auth(creds),
                                     params={"after": acked, "timeout": POLL_SECONDS, "connection": connection},
                                     timeout=POLL_SECONDS + 5)
            self._raise_for_logout(response)
            if response.status_code == 409:
                raise Reconnect()
            response.raise_for_status()
            for event in response.json():
                if self._stopping.is_set():
                    return  # unacknowledged events stay with the network for the next connection
                if event["type"] == "logged_out":
                    raise LoggedOut(event.get("reason") or "logged_out")
                if event["type"] == "offline":
                    raise _offline(event)
                # Saved before events had a source, every entry was a message.
                source = "Message" if event["type"] == "message" else event.get("source")
                if source in self.sources:
                    self.events.on_event(source, event["payload"])
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

    # --- media and the LID store ---

    def download(self, message: dict, max_bytes: int) -> Download:
        ref = media_of(message)
        if ref is None:
            raise MediaRefused("no_media", "The message carries no media.")
        try:
            media_key = base64.b64decode(ref.fields["mediaKey"], validate=True)
            sha256, enc_sha256 = (base64.b64decode(ref.fields.get(f) or "", validate=True)
                                  for f in ("fileSHA256", "fileEncSHA256"))
            direct_path = ref.fields["directPath"]
            decryptor = Decryptor(media_key, ref.kind, sha256 or None, enc_sha256 or None)
        except (KeyError, TypeError, ValueError):  # binascii.Error and MediaCorrupt are ValueErrors
            raise MediaRefused("no_media", "The message's media reference is incomplete.") from None
        # Only simnet's own media server, whatever the message's URL says: a crafted message must not
        # make the slot fetch an address of its choosing.
        if not isinstance(direct_path, str) or not direct_path.startswith("/") or direct_path.startswith("//"):
            raise MediaRefused("no_media", "The message's media reference has no usable path.")
        if ref.length is not None and ref.length > max_bytes:
            raise MediaRefused("media_too_large", f"The file is over the limit of {max_bytes} bytes.")
        if self.credentials() is None:
            raise EngineUnavailable("the slot is not linked")
        try:
            response = requests.get(self.base_url + direct_path, stream=True, timeout=(5, 30), allow_redirects=False)
        except requests.RequestException as err:
            raise EngineUnavailable(f"WhatsApp's media server unreachable ({type(err).__name__})") from None
        if response.status_code != 200:
            response.close()
            if response.status_code in (404, 410):
                raise MediaRefused("media_gone", "WhatsApp no longer holds this file.")
            raise EngineUnavailable(f"WhatsApp's media server answered {response.status_code}")
        return Download(size=ref.length, chunks=self._decrypted(response, decryptor, max_bytes))

    @staticmethod
    def _decrypted(response, decryptor: Decryptor, max_bytes: int):
        """The file's plain bytes as they arrive; the last ones only once the MAC and hashes passed."""
        held = b""
        try:
            for chunk in response.iter_content(DOWNLOAD_CHUNK):
                plain = decryptor.update(chunk)
                if decryptor.size > max_bytes:
                    raise MediaRefused("media_too_large", f"The file is over the limit of {max_bytes} bytes.")
                if plain:
                    if held:
                        yield held
                    held = plain
            held += decryptor.finish()
        except MediaCorrupt:
            raise MediaRefused("media_corrupt", "The file fails its integrity checks.") from None
        except requests.RequestException as err:
            raise EngineUnavailable(f"the download broke off ({type(err).__name__})") from None
        finally:
            response.close()
        if decryptor.size > max_bytes:
            raise MediaRefused("media_too_large", f"The file is over the limit of {max_bytes} bytes.")
        if held:
            yield held

    def phone_for_lid(self, lid_user: str) -> str | None:
        """The number behind a LID, from the network's LID store; a number once known is kept (a LID
        never changes hands), so a busy group chat asks once per member."""
        if lid_user in self._lid_phones:
            return self._lid_phones[lid_user]
        creds = self.credentials()
        if creds is None or not lid_user.isdigit():
            return None
        try:
            response = requests.get(self._device_url(creds, f"lid/{lid_user}"), headers=self._auth(creds), timeout=2)
            phone = response.json().get("phone") if response.status_code == 200 else None
        except (requests.RequestException, ValueError, AttributeError):
            return None
        if isinstance(phone, str) and len(self._lid_phones) < LID_CACHE_SIZE:
            self._lid_phones[lid_user] = phone
        return phone

    @staticmethod
    def _json(response) -> dict:
        try:
            data = response.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

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
