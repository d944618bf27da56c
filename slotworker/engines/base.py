"""The small interface every engine implements, after waha's session core without its 100 methods.

An engine runs its network I/O on threads of its own and reports through ``EngineEvents``; its
callbacks must return quickly (they run on the engine's event thread). Optional capabilities that
an engine lacks raise ``NotSupported``, which the API turns into a 422.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class NotSupported(Exception):
    """This engine cannot do that (e.g. pairing by code on an engine without it)."""


class EngineUnavailable(Exception):
    """The engine cannot reach WhatsApp right now (not connected, network down)."""


class SendRefused(Exception):
    """WhatsApp refused the message (e.g. the number is not on WhatsApp); ``code`` says why."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class OutboundMedia:
    data: bytes
    mimetype: str
    filename: str | None = None
    caption: str | None = None


@dataclass(frozen=True)
class SendResult:
    id: str
    timestamp: int  # unix seconds, as WhatsApp's SendResponse


class EngineEvents(Protocol):
    def on_qr(self, code: str, expires_in: float) -> None: ...
    def on_paired(self, line: str) -> None: ...
    def on_pairing_ended(self, reason: str) -> None: ...
    def on_connected(self) -> None: ...
    def on_disconnected(self) -> None: ...
    def on_logged_out(self, reason: str) -> None: ...
    def on_message(self, payload: dict, message_id: str, sender: str | None) -> None: ...


class Engine(ABC):
    name = "base"

    def __init__(self, slot_id: str, slot_dir: Path, settings, events: EngineEvents):
        self.slot_id = slot_id
        self.slot_dir = slot_dir
        self.settings = settings
        self.events = events

    @abstractmethod
    def has_credentials(self) -> bool:
        """True when the slot holds a linked session it can reconnect with."""

    @abstractmethod
    def start_pairing(self) -> None:
        """Begin showing QR codes (non-blocking); ends in on_paired or on_pairing_ended."""

    @abstractmethod
    def connect(self) -> None:
        """Reconnect with the stored credentials (non-blocking); reports on_connected."""

    @abstractmethod
    def stop(self) -> None:
        """Disconnect and stop the engine's threads, keeping the credentials."""

    @abstractmethod
    def logout(self) -> None:
        """Tell the network to unlink this device (best effort); the caller wipes the files."""

    @abstractmethod
    def send(self, to: str, text: str | None = None, media: OutboundMedia | None = None) -> SendResult:
        """Send a text or a media message; raises EngineUnavailable or SendRefused."""

    def pair_code(self, line: str) -> str:
        raise NotSupported(f"The {self.name} engine cannot pair by code.")
