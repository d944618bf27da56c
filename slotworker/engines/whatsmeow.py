"""The real WhatsApp engine: whatsmeow through neonize 0.5.2 (ENGINE-NOTES.md has the facts it relies on).

One neonize client per slot. Its session store is a sqlite file in the slot's folder, or the
PostgreSQL database named by WHIN_SESSION_DB (each slot then finds its own device by its JID).
neonize's quirks handled here:
  - handlers must be registered before connect() (Go receives the list of subscribed events then);
  - an exception in a handler is swallowed by ctypes, so every handler logs its own failure;
  - get_me()/get_pn_from_lid() before a connection abort the process (Go panic): only once connected;
  - only the selected events (WHIN_EVENTS) are subscribed, so Go never forwards the others; history
    sync is never subscribed (the gateway forwards no past chats);
  - after TemporaryBan, StreamReplaced and ClientOutdated whatsmeow does not reconnect (it marks the
    disconnect as expected, connectionevents.go): we reconnect once a ban expires, never otherwise;
  - a plain str is sent as extendedTextMessage: texts are sent as Message(conversation=...), and
    every outbound message is built by whatsmeow_send (neonize's send_audio/send_video need ffmpeg);
  - the default QR handler draws on stdout and Go prints there too: stdout is a log, never data;
  - whatsmeow wants one SendPresence after connecting (else recipients see "-" for the name): the
    line announces itself unavailable, which sets the name and leaves the owner's phone its
    notifications; it is available only while it shows typing or recording.
"""

import logging
import threading
import time
from contextlib import contextmanager

from google.protobuf import json_format

from controlplane.core import sessions, slotfiles
from slotworker.engines import handoff, whatsmeow_groups, whatsmeow_media, whatsmeow_send
from slotworker.engines.base import (
    Contact,
    Download,
    Engine,
    EngineUnavailable,
    Existence,
    Location,
    OutboundMedia,
    Quote,
    Reaction,
    SendRefused,
    SendResult,
)

log = logging.getLogger(__name__)

DEVICE_RECORD = "device"  # the paired JID: which device of the store is this slot's
SESSION_FILE = "session.sqlite3"
FIRST_QR_SECONDS = 60  # whatsmeow shows the first code for 60 s, the following ones for 20 s
NEXT_QR_SECONDS = 20
CONNECTED_WAIT_FOR_LOGOUT = 10.0
# neonize's Go side buffers events (a 100-slot channel) that whatsmeow has already acknowledged to
# WhatsApp: after disconnecting, give them this long to reach the queue before the client stops.
DRAIN_SECONDS = 0.5
CODES_GONE_GRACE = 5.0
BAN_RETRY_SECONDS = 3600  # a ban without a stated expiry: try again after this long
RESTART_JOIN_SECONDS = 10.0


class WhatsmeowEngine(Engine):
    name = "whatsmeow"

    def __init__(self, slot_id, slot_dir, settings, events):
        super().__init__(slot_id, slot_dir, settings, events)
        self.client = None
        self._pairing = False
        self._qr_shown = 0
        self._stopping = threading.Event()
        self._logging_out = threading.Event()  # set before we tell WhatsApp: a LoggedOut then is our own
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._ban_timer: threading.Timer | None = None
        self._groups = whatsmeow_groups.Groups()  # how each group addresses its members, for the engine's life

    # --- the slot's files ---

    @property
    def session_name(self) -> str:
        return getattr(self.settings, "session_db", "") or str(self.slot_dir / SESSION_FILE)

    def has_credentials(self) -> bool:
        return self.session.read(DEVICE_RECORD) is not None

    def _stored_jid(self):
        from neonize.proto.Neonize_pb2 import JID

        device = self.session.read(DEVICE_RECORD)
        return json_format.ParseDict(device["jid"], JID()) if device else None

    # --- lifecycle ---

    def start_pairing(self) -> None:
        self._pairing = True
        slotfiles.private_dir(self.slot_dir)
        self.client = self._new_client(jid=None)
        self._spawn(self._run)

    def connect(self) -> None:
        self.client = self._new_client(jid=self._stored_jid())
        self._spawn(self._run_with_retries)

    def stop(self) -> None:
        if self._stopping.is_set() or self.client is None:
            self._stopping.set()
            return
        self._stopping.set()
        self._connected.clear()
        if self._ban_timer is not None:
            self._ban_timer.cancel()
        try:
            self.client.disconnect()  # no new events from WhatsApp...
            time.sleep(DRAIN_SECONDS)  # ...and those neonize has buffered reach our handlers first
            self.client.stop()  # cancels Go's context: connect() returns
        except Exception as err:  # stopping must not fail the caller
            log.warning("slot %s: stopping the engine: %s", self.slot_id, type(err).__name__)

    def logout(self) -> None:
        """Unlink this device on WhatsApp. A sleeping slot has no connection: make one first."""
        from neonize.exc import LogoutError

        if not self.has_credentials():
            return
        if self.client is None or not self._connected.is_set():
            self._stopping.clear()
            self._replace_client()  # asleep, banned or replaced: a live connection is needed to unlink
            self._connected.wait(CONNECTED_WAIT_FOR_LOGOUT)
        self._logging_out.set()  # whatsmeow may report our own logout as a LoggedOut event while it runs
        try:
            self.client.logout()
        except LogoutError as err:
            log.warning("slot %s: WhatsApp logout failed (%s); wiping credentials anyway", self.slot_id, err)
        finally:
            self.stop()

    # --- the client ---

    def _new_client(self, jid):
        from neonize import events
        from neonize.client import NewClient

        client = NewClient(self.session_name, jid=jid, uuid=self.slot_id, new_device=jid is None)
        # All handlers before connect(): neonize tells Go which events to forward only then.
        client.event(events.PairStatusEv)(self._guarded(self._on_pair_status))
        client.event(events.ConnectedEv)(self._guarded(self._on_connected))
        client.event(events.DisconnectedEv)(self._guarded(self._on_disconnected))
        client.event(events.LoggedOutEv)(self._guarded(self._on_logged_out))
        client.event(events.TemporaryBanEv)(self._guarded(self._on_temporary_ban))
        client.event(events.StreamReplacedEv)(self._guarded(self._offline("stream_replaced")))
        client.event(events.ClientOutdatedEv)(self._guarded(self._offline("client_outdated")))
        for source in sorted(self.sources):  # "Message" -> MessageEv, "GroupInfo" -> GroupInfoEv, ...
            client.event(getattr(events, f"{source}Ev"))(self._guarded(self._forward(source)))
        client.qr(self._guarded(self._on_qr))  # ours: neonize's default draws on stdout
        return client

    def _spawn(self, target) -> None:
        self._thread = threading.Thread(target=target, name=f"whatsmeow-{self.slot_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """One connect(); it blocks for the session's life. Before the first login it never retries."""
        from neonize.exc import NeonizeError

        try:
            self.client.connect()
        except NeonizeError as err:
            if self._stopping.is_set():
                return
            log.warning("slot %s: WhatsApp unreachable: %s", self.slot_id, str(err)[:200])
            if self._pairing:
                self.events.on_pairing_ended("network_unreachable")
            else:
                raise

    def _run_with_retries(self) -> None:
        """A linked device: whatsmeow reconnects by itself once connected; a failed first connect is ours."""
        from neonize.exc import NeonizeError

        failures = 0
        while not self._stopping.is_set():
            try:
                self._run()
                return
            except NeonizeError:
                failures += 1
                self._connected.clear()
                self.events.on_disconnected()
                self._stopping.wait(min(2 * failures, 30))  # as whatsmeow: 2 s x the number of failures

    def _guarded(self, handler):
        """ctypes swallows a handler's exception silently: log it instead, with the event's type only."""

        def call(*args):
            try:
                handler(*args)
            except Exception:
                log.exception("slot %s: handler %s failed", self.slot_id, handler.__name__)

        call.__name__ = handler.__name__
        return call

    # --- events (on neonize's thread: quick) ---

    def _on_qr(self, _client, data: bytes) -> None:
        self._qr_shown += 1
        lifetime = FIRST_QR_SECONDS if self._qr_shown == 1 else NEXT_QR_SECONDS
        self.events.on_qr(data.decode(), lifetime)
        # whatsmeow does not tell neonize's Python side when its codes run out: if no new code comes
        # and no phone pairs shortly after this one expires, the pairing is over.
        shown = self._qr_shown
        timer = threading.Timer(lifetime + CODES_GONE_GRACE, self._codes_ran_out, args=(shown,))
        timer.daemon = True
        timer.start()

    def _codes_ran_out(self, shown: int) -> None:
        if self._pairing and self._qr_shown == shown and not self._stopping.is_set():
            self.events.on_pairing_ended("codes_exhausted")

    def _on_pair_status(self, _client, ev) -> None:
        from neonize.events import PairStatusEv

        if ev.Status != PairStatusEv.PStatus.SUCCESS:
            log.warning("slot %s: pairing failed on the phone's side", self.slot_id)
            self.events.on_pairing_ended("pair_error")
            return
        from neonize.utils.jid import Jid2String

        # STORE_JID: the row of whatsmeow's store a wipe deletes, should the logout not have.
        self.session.write(DEVICE_RECORD, {"jid": json_format.MessageToDict(ev.ID),
                                           sessions.STORE_JID: Jid2String(ev.ID)})
        self._pairing = False
        self.events.on_paired(ev.ID.User)

    def _on_connected(self, _client, _ev) -> None:
        from neonize.utils.enum import Presence

        self._connected.set()
        try:
            self.client.send_presence(Presence.UNAVAILABLE)  # whatsmeow: the server then has the push name
        except Exception as err:  # e.g. no push name yet: the line still works
            log.warning("slot %s: announcing the line's presence failed: %s", self.slot_id, type(err).__name__)
        self.events.on_connected()

    def _on_disconnected(self, _client, _ev) -> None:
        self._connected.clear()
        self.events.on_disconnected()

    def _on_logged_out(self, _client, ev) -> None:
        from neonize.proto.Neonize_pb2 import ConnectFailureReason

        self._connected.clear()
        reason = ConnectFailureReason.Name(ev.Reason).lower()
        if self._logging_out.is_set() or self._stopping.is_set():
            log.info("slot %s: logged out (%s) after our own logout or stop; not the phone's unlink",
                     self.slot_id, reason)
            return
        self.events.on_logged_out(reason)

    def _forward(self, source: str):
        def forward(_client, ev) -> None:
            # Lossless: the protobuf as JSON that json_format.ParseDict turns back into the same event.
            self.events.on_event(source, json_format.MessageToDict(ev, preserving_proto_field_name=True))
            self._groups.on_event(source, ev)  # a group joined or changed: how it addresses its members

        forward.__name__ = f"_on_{source}"
        return forward

    def _offline(self, reason: str):
        def offline(_client, _ev) -> None:
            self._connected.clear()  # whatsmeow sends no Disconnected after these
            self.events.on_offline(reason, {})

        offline.__name__ = f"_on_{reason}"
        return offline

    def _on_temporary_ban(self, _client, ev) -> None:
        from neonize.events import TemporaryBanEv

        self._connected.clear()
        expires_in = max(int(ev.Expire), 0)  # seconds: neonize's encoder sends Expire.Seconds()
        code = TemporaryBanEv.TempBanReason.Name(ev.Code).lower() if ev.HasField("Code") else "unknown"
        self.events.on_offline("temporary_ban", {"expires_in": expires_in, "ban_code": code})
        if self._ban_timer is not None:
            self._ban_timer.cancel()
        self._ban_timer = threading.Timer(expires_in or BAN_RETRY_SECONDS, self._reconnect_after_ban)
        self._ban_timer.daemon = True
        self._ban_timer.start()

    def _reconnect_after_ban(self) -> None:
        """whatsmeow gave up on this connection for good: end that client and start a new one."""
        if self._stopping.is_set() or self._connected.is_set():
            return
        log.info("slot %s: the temporary ban is over; reconnecting", self.slot_id)
        self._replace_client()

    def _replace_client(self) -> None:
        """End the client whatsmeow gave up on (if any), then connect a new one. Go holds one client
        per slot id, and its Stop forgets it by that id: the old must end before the new takes it."""
        old, thread = self.client, self._thread
        if old is not None:
            try:
                old.stop()
            except Exception as err:
                log.warning("slot %s: ending the old client: %s", self.slot_id, type(err).__name__)
        if thread is not None and thread is not threading.current_thread():
            thread.join(RESTART_JOIN_SECONDS)
        if not self._stopping.is_set():
            self.connect()

    # --- media and LIDs ---

    def download(self, message: dict, max_bytes: int) -> Download:
        if self.client is None or not self._connected.is_set():
            raise EngineUnavailable("not connected to WhatsApp")
        return whatsmeow_media.download(self.client, message, max_bytes)

    def phone_for_lid(self, lid_user: str) -> str | None:
        from neonize.utils.jid import build_jid

        if self.client is None or not self._connected.is_set():
            return None  # Go panics on a store lookup before a connection
        try:
            jid = self.client.get_pn_from_lid(build_jid(lid_user, server="lid"))
        except Exception as err:
            log.warning("slot %s: no phone number for a LID: %s", self.slot_id, type(err).__name__)
            return None
        return jid.User or None

    # --- sending (whatsmeow_send builds the messages; every failure is EngineUnavailable or SendRefused) ---

    def send(self, to: str, text: str | None = None, media: OutboundMedia | None = None,
             reply: Quote | None = None) -> SendResult:
        chat = whatsmeow_send.jid(to)
        with self._refusals():
            if (text is None) == (media is None):
                raise SendRefused("send_failed", "A message carries exactly one of text or media.")
            context = whatsmeow_send.context_info(reply, self._quote_author(chat, to, reply))
            if text is not None:
                return self._sent(chat, whatsmeow_send.text_message(text, context))
            kind = whatsmeow_send.kind_of(media)
            preview = whatsmeow_send.image_preview(media.data) if kind == "image" else None
            uploaded = self.client.upload(media.data, whatsmeow_send.media_type(kind))
            return self._sent(chat, whatsmeow_send.media_message(media, kind, uploaded, preview, context))

    def send_location(self, to: str, location: Location, reply: Quote | None = None) -> SendResult:
        chat = whatsmeow_send.jid(to)
        with self._refusals():
            context = whatsmeow_send.context_info(reply, self._quote_author(chat, to, reply))
            return self._sent(chat, whatsmeow_send.location_message(location, context))

    def send_contact(self, to: str, contact: Contact, reply: Quote | None = None) -> SendResult:
        chat = whatsmeow_send.jid(to)
        with self._refusals():
            context = whatsmeow_send.context_info(reply, self._quote_author(chat, to, reply))
            return self._sent(chat, whatsmeow_send.contact_message(contact, context))

    def react(self, to: str, reaction: Reaction) -> SendResult:
        chat = whatsmeow_send.jid(to)
        with self._refusals():
            author = None
            if whatsmeow_send.names_author(chat, reaction.from_me) and reaction.sender:
                author = self._groups.member_address(self.client, chat, reaction.sender)
            return self._sent(chat, whatsmeow_send.reaction_message(chat, reaction, author))

    def revoke(self, to: str, message_id: str) -> SendResult:
        chat = whatsmeow_send.jid(to)
        with self._refusals():
            return self._sent(chat, whatsmeow_send.revoke_message(chat, message_id, self._own_jid()))

    def edit(self, to: str, message_id: str, text: str) -> SendResult:
        chat = whatsmeow_send.jid(to)
        with self._refusals():
            return self._sent(chat, whatsmeow_send.edit_message(chat, message_id, text))

    def mark_read(self, chat: str, message_ids: list[str], sender: str | None = None) -> None:
        """In a group: one group-info IQ each time (whatsmeow_groups says why), the author by LID
        in a LID-addressed group."""
        from neonize.utils.enum import ReceiptType

        where = whatsmeow_send.jid(chat)
        with self._refusals():
            if whatsmeow_send.is_group(chat):
                if not sender:  # whatsmeow would send a receipt without its participant, which WhatsApp ignores
                    raise SendRefused("send_failed", "In a group, a read receipt names the messages' author "
                                                     "(sender).")
                self._groups.check_member(self.client, where)
                author = whatsmeow_send.jid(self._groups.member_address(self.client, where, sender))
            else:  # whatsmeow names the author (participant) only in a group; in a chat it is the phone
                author = whatsmeow_send.jid(sender) if sender else where
            handoff.check()
            self.client.mark_read(*message_ids, chat=where, sender=author, receipt=ReceiptType.READ)

    def send_presence(self, to: str, state: str) -> None:
        """Typing or recording makes the line available for as long (chat states are widely seen to
        show only then), paused unavailable again. In a group: one group-info IQ each time."""
        from neonize.utils.enum import Presence

        where = whatsmeow_send.jid(to)
        with self._refusals():
            presence, media = whatsmeow_send.presence_of(state)
            if whatsmeow_send.is_group(to):
                self._groups.check_member(self.client, where)
            if state != "paused":
                self.client.send_presence(Presence.AVAILABLE)
            self.client.send_chat_presence(where, presence, media)
            if state == "paused":
                self.client.send_presence(Presence.UNAVAILABLE)

    def exists(self, number: str) -> Existence:
        from neonize.utils.jid import Jid2String

        number = number.lstrip("+")
        with self._refusals():
            try:
                answers = self.client.is_on_whatsapp("+" + number)  # whatsmeow: international, with the +
            except Exception as err:
                if "function returned nothing" in str(err).lower():  # neonize's Go: an empty answer
                    return Existence(exists=False, jid=None)
                raise
        found = next((a for a in answers if a.IsIn), None)
        if found is None:
            return Existence(exists=False, jid=None)
        # whatsmeow may answer with the number's LID (addressing_mode=lid), its phone number in a field
        # neonize 0.5.2 drops: the JID is then the number's own
        if found.JID.Server != whatsmeow_send.USER_SERVER or not found.JID.User:
            return Existence(exists=True, jid=whatsmeow_send.address(number))
        return Existence(exists=True, jid=Jid2String(whatsmeow_send.jid(found.JID.User)))

    def _quote_author(self, chat, to: str, quote: Quote | None) -> str | None:
        """The quoted message's author as the chat names it: in a chat with a phone, that phone
        unless the quote says otherwise (the line itself); in a group, the member (None: unknown)."""
        if quote is None:
            return None
        if whatsmeow_send.is_group(to):
            return self._groups.member_address(self.client, chat, quote.sender) if quote.sender else None
        return whatsmeow_send.address(quote.sender or chat.User)

    def _own_jid(self):
        """The line's own JID: the paired one from device.json (get_me() is a Go call that aborts the
        process before a connection)."""
        stored = self._stored_jid()
        if stored is not None and stored.User:
            return whatsmeow_send.jid(stored.User)
        return whatsmeow_send.jid(self.client.get_me().JID.User)

    def _sent(self, chat, message) -> SendResult:
        handoff.check()  # after the upload, which may have taken longer than the caller waits
        response = self.client.send_message(chat, message)
        return SendResult(id=response.ID, timestamp=int(response.Timestamp))

    @contextmanager
    def _refusals(self):
        """Connected, or EngineUnavailable; any failure on the way as EngineUnavailable or SendRefused."""
        from google.protobuf.message import DecodeError, EncodeError
        from neonize.exc import NeonizeError

        if self.client is None or not self._connected.is_set():
            raise EngineUnavailable("not connected to WhatsApp")
        try:
            yield
        except (EngineUnavailable, SendRefused, handoff.HandoffExpired):
            raise
        except NeonizeError as err:  # whatsmeow's text names JIDs: the type only, in the log and the answer
            log.warning("slot %s: WhatsApp refused a request: %s", self.slot_id, type(err).__name__)
            raise whatsmeow_send.refusal(str(err), self._connected.is_set(), type(err).__name__) from None
        except (EncodeError, DecodeError) as err:  # proto2 required fields missing, an unreadable answer
            raise SendRefused("send_failed", f"The message could not be encoded: {type(err).__name__}") from None
        except Exception as err:  # never a crash of the slot for one message; the type only (no content)
            log.warning("slot %s: sending failed: %s", self.slot_id, type(err).__name__)
            if not self._connected.is_set():
                raise EngineUnavailable("the connection to WhatsApp dropped") from None
            raise SendRefused("send_failed", f"The message could not be sent ({type(err).__name__}).") from None

    def pair_code(self, line: str) -> str:
        from neonize.exc import PairPhoneError

        if self.client is None or not self._pairing:
            raise EngineUnavailable("the slot is not pairing")
        try:
            return self.client.PairPhone(line, show_push_notification=True)
        except PairPhoneError as err:
            raise EngineUnavailable(f"WhatsApp refused a pairing code: {str(err)[:200]}") from None
