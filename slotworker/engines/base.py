"""The small interface every engine implements, after waha's session core without its 100 methods.

An engine runs its network I/O on threads of its own and reports through ``EngineEvents``; its
callbacks must return quickly (they run on the engine's event thread). Optional capabilities that
an engine lacks raise ``NotSupported``, which the API turns into a 422.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from controlplane.core import event_types, sessions


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


class MediaRefused(Exception):
    """The media of a message cannot be had; ``code`` is the API's: ``no_media`` (the message has none,
    or its reference is unusable), ``media_gone`` (WhatsApp no longer holds the file; HTTP 404/410 from
    its media server), ``media_too_large`` (over WHIN_MEDIA_MAX_BYTES), ``media_corrupt`` (the file
    fails its MAC or hash checks)."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Download:
    """A message's media, decrypted. ``chunks`` yields the bytes in order (a generator may raise
    MediaRefused or EngineUnavailable midway); the last chunk comes only after the file passed its
    checks, so whoever relays the chunks never completes a file that failed them."""

    size: int | None  # the plain size when known before the bytes (the message's fileLength)
    chunks: Iterable[bytes]


@dataclass(frozen=True)
class OutboundMedia:
    """A file to send; its kind (image, video, audio, document) follows ``mimetype``. The control
    plane has checked and, for a voice note, converted it: ``ptt`` audio is OGG/Opus."""

    data: bytes
    mimetype: str
    filename: str | None = None
    caption: str | None = None
    ptt: bool = False  # audio shown as a voice note
    seconds: int | None = None  # audio or video length, when the control plane measured it
    thumbnail: bytes | None = None  # a JPEG preview of a video, when the control plane made one


@dataclass(frozen=True)
class Quote:
    """The message a reply quotes. The gateway keeps no copy of messages: ``message`` is the quoted
    ``Message`` JSON object when the caller gave it (the phone then shows its text)."""

    message_id: str
    sender: str | None = None  # the quoted message's author (a phone number); None: the chat's contact
    message: dict | None = None


@dataclass(frozen=True)
class Location:
    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None


@dataclass(frozen=True)
class Contact:
    name: str
    vcard: str  # a vCard 3.0 the control plane built (or was given)


@dataclass(frozen=True)
class Reaction:
    message_id: str
    emoji: str  # "" removes the line's reaction
    from_me: bool  # the reacted message is the line's own
    sender: str | None = None  # its author when not the line (a phone number); None: the chat's contact


@dataclass(frozen=True)
class Existence:
    exists: bool
    jid: str | None  # "34611…@s.whatsapp.net" when it exists


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
    # Everything the network delivers to the line, as whatsmeow's event: ``source`` is its name
    # (event_types.SOURCES: "Message", "Receipt", "CallOffer", …) and ``payload`` the event as lossless
    # JSON (json_format.MessageToDict, proto field names).
    def on_event(self, source: str, payload: dict) -> None: ...
    # The network refuses the connection of a linked device that is still linked: ``reason`` is
    # ``temporary_ban`` (details: ``expires_in`` seconds, ``ban_code``), ``stream_replaced`` (another
    # client took the session; the engine does not fight it) or ``client_outdated``. A later
    # on_connected means the line is back.
    def on_offline(self, reason: str, details: dict) -> None: ...


class Engine(ABC):
    name = "base"

    def __init__(self, slot_id: str, slot_dir: Path, settings, events: EngineEvents):
        self.slot_id = slot_id
        self.slot_dir = slot_dir
        self.settings = settings
        self.events = events
        # The session record: the slot's folder, or PostgreSQL (WHIN_SESSION_DB) for slots that can move.
        self.session = sessions.for_slot(settings, slot_id, slot_dir)
        # The whatsmeow events to subscribe to (WHIN_EVENTS): the others are never asked for.
        self.sources = event_types.sources_for(getattr(settings, "events", event_types.DEFAULT))

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

    # --- a conversation. ``to``/``chat`` is a phone number or a group JID ("120363…@g.us"). Each
    # raises EngineUnavailable (not connected) or SendRefused (WhatsApp, or the engine, refused it;
    # e.g. ``not_in_group`` for a group the line is not in). ---

    @abstractmethod
    def send(self, to: str, text: str | None = None, media: OutboundMedia | None = None,
             reply: Quote | None = None) -> SendResult:
        """Send a text or a media message, quoting ``reply`` when given."""

    @abstractmethod
    def send_location(self, to: str, location: Location, reply: Quote | None = None) -> SendResult:
        """Send a location pin."""

    @abstractmethod
    def send_contact(self, to: str, contact: Contact, reply: Quote | None = None) -> SendResult:
        """Send a contact card."""

    @abstractmethod
    def react(self, to: str, reaction: Reaction) -> SendResult:
        """React to a message of the chat (an empty emoji removes the reaction)."""

    @abstractmethod
    def mark_read(self, chat: str, message_ids: list[str], sender: str | None = None) -> None:
        """Mark received messages of the chat as read; ``sender`` is their author in a group."""

    @abstractmethod
    def send_presence(self, to: str, state: str) -> None:
        """Show "composing", "recording" or "paused" in the chat."""

    @abstractmethod
    def revoke(self, to: str, message_id: str) -> SendResult:
        """Delete a message the line sent, for everyone."""

    @abstractmethod
    def edit(self, to: str, message_id: str, text: str) -> SendResult:
        """Replace the text of a message the line sent."""

    @abstractmethod
    def exists(self, number: str) -> Existence:
        """Whether the phone number is on WhatsApp."""

    @abstractmethod
    def download(self, message: dict, max_bytes: int) -> Download:
        """The decrypted media of a ``Message`` JSON object as an event delivered it; raises
        MediaRefused (before or while yielding chunks) or EngineUnavailable."""

    def phone_for_lid(self, lid_user: str) -> str | None:
        """The phone number behind a ``@lid`` user id, when the network has told us (None otherwise).
        Called on the engine's event thread, only while connected."""
        return None

    def pair_code(self, line: str) -> str:
        raise NotSupported(f"The {self.name} engine cannot pair by code.")
