"""The small interface every engine implements, after waha's session core without its 100 methods.

An engine runs its network I/O on threads of its own and reports through ``EngineEvents``; its
callbacks must return quickly (they run on the engine's event thread). Optional capabilities that
an engine lacks raise ``NotSupported``, which the API turns into a 422.
"""

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Protocol


class NotSupported(Exception):
    """This engine cannot do that (e.g. pairing by code on an engine without it)."""


class EngineEvents(Protocol):
    def on_qr(self, code: str, expires_in: float) -> None: ...
    def on_paired(self, line: str) -> None: ...
    def on_pairing_ended(self, reason: str) -> None: ...
    def on_connected(self) -> None: ...
    def on_disconnected(self) -> None: ...
    def on_logged_out(self, reason: str) -> None: ...
    def on_message(self, payload: dict) -> None: ...


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

    def pair_code(self, line: str) -> str:
        raise NotSupported(f"The {self.name} engine cannot pair by code.")
