"""What a line does in a chat, carried out: /send of every kind, and /read, /presence, /revoke,
/edit, /exists. Each is: parse (asks.py), the serving slot, the facts the message index holds
about the message acted on (message_index.py), the line's rate limit at that kind's cost, the media
made ready (outbound_media.py), then one command of the slot protocol (protocol.py) and its answer.

The content travels to the worker sealed (see sealed.py) on the slot's command list. If the worker
does not answer within WHIN_SEND_TIMEOUT the command is withdrawn when still unread, so a 504 does
not turn into a late send that the integrator's retry would double.
"""

import logging
import math
import time

import redis

from controlplane.core import protocol
from controlplane.core.errors import EngineTimeout, GatewayError, Refused, ServiceUnavailable
from controlplane.core.ids import InvalidIdentifier
from controlplane.core.sealed import Sealer
from controlplane.messaging import asks
from controlplane.messaging.asks import SendRequest, parse_send_request
from controlplane.messaging.media_fetch import MediaAllow, MediaFetcher
from controlplane.messaging.message_index import IndexedMessage, MessageIndex, is_group
from controlplane.messaging.outbound_media import MediaPreparer, prepare_budget
from controlplane.messaging.ratelimit import RateLimiter
from controlplane.messaging.slot_failures import gateway_error
from controlplane.messaging.transcode import Transcoder

__all__ = ["COSTS", "EDIT_WINDOW", "MAX_READ_AUTHORS", "REVOKE_WINDOW", "Outbound", "RateLimited"]

# What each kind takes from the line's rate limit (WHIN_SEND_RATE messages a minute): a message is
# one; what shows less on WhatsApp's side costs less, but a burst of anything still flags a number.
COSTS = {"text": 1.0, "media": 1.0, "location": 1.0, "contact": 1.0, "reaction": 0.25, "edit": 0.5,
         "revoke": 0.5, "exists": 1.0, "read": 0.1, "presence": 0.1}
EDIT_WINDOW = 20 * 60  # whatsmeow.EditWindow: WhatsApp refuses an edit after 20 minutes
# WhatsApp's "delete for everyone" works for about two days (its help pages); past that the phones go on
# showing the message, so an OK would lie.
REVOKE_WINDOW = 48 * 3600
# /read in a group is one command per author, each waiting up to WHIN_SEND_TIMEOUT: a few per call
# keeps the call within one proxy timeout.
MAX_READ_AUTHORS = 5

log = logging.getLogger(__name__)

_SEND_OPS = {"text": protocol.Send, "media": protocol.Send, "location": protocol.SendLocation,
             "contact": protocol.SendContact, "reaction": protocol.React}


class RateLimited(GatewayError):
    status = 429

    def __init__(self, retry_after: float):
        seconds = max(1, math.ceil(retry_after))  # as the Retry-After header says it (api/errors.py)
        super().__init__("rate_limited", f"Too many messages from this line; retry in {seconds} s.")
        self.retry_after = retry_after


class Outbound:
    def __init__(self, settings, lifecycle):
        self.settings = settings
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.sealer = Sealer(settings.queue_key)
        self.limiter = RateLimiter(self.store.redis, settings.send_rate_per_minute, settings.send_burst)
        self.index = MessageIndex(self.store.redis, self.sealer, settings.message_index_ttl)
        # media.url: public addresses and WHIN_MEDIA_ALLOW only, bounded in time and size (media_fetch.py).
        # The fetch and ffmpeg share one budget that, with the slot's WHIN_SEND_TIMEOUT, fits the proxy's timeout.
        budget = prepare_budget(settings.send_timeout)
        fetcher = MediaFetcher(MediaAllow(settings.media_allow), settings.media_max_bytes,
                               min(settings.media_timeout, budget))
        self.media = MediaPreparer(fetcher, Transcoder(settings.ffmpeg), settings.media_max_bytes, budget)

    # --- POST /send ---

    def submit(self, body) -> dict:
        """POST /send's whole answer: parse, send, and count the outcome, whatever it is.

        Every outcome is counted here, refusals included ("invalid_media", "rate_limited",
        "engine_timeout"...), so whin_sends_total shows what integrators get, not only the successes.
        The label is the answer's machine code: a fixed set, never a number or a text.
        """
        try:
            result = self.send(parse_send_request(body))
        except (GatewayError, InvalidIdentifier) as err:
            self.store.count(f"send_{err.code}")
            raise
        self.store.count("sent")
        return result

    def send(self, request: SendRequest) -> dict:
        slot = self.lifecycle.serving_slot(request.line, request.slot, "send")
        message = {"to": request.to}
        if request.reply_to is not None:
            quoted = self._authored(self._known(slot.line, request.to, request.reply_to, "reply to"), request.to,
                                    request.reply_to)
            reply = {"message_id": request.reply_to}
            if quoted.sender:
                reply["sender"] = quoted.sender
            if request.quoted is not None:
                reply["message"] = request.quoted
            message["reply"] = reply
        if request.kind == "reaction":
            target = self._authored(self._known(slot.line, request.to, request.reaction["message_id"], "react to"),
                                    request.to, request.reaction["message_id"])
            reaction = {**request.reaction, "from_me": target.from_me}
            if not target.from_me and target.sender:
                reaction["sender"] = target.sender
            message["reaction"] = reaction
        self._take(slot.line, request.kind)
        if request.kind == "media":
            message["media"] = self.media.prepare(request.media)
        elif request.kind != "reaction":
            message[request.kind] = getattr(request, request.kind)
        answer = self._sent(slot, _SEND_OPS[request.kind], message)
        if request.kind != "reaction":  # a reaction is not a message one can act on
            self._indexing(lambda: self.index.record_sent(slot.line, request.to, answer.id, answer.timestamp,
                                                          text=request.kind == "text"))
        return {"id": answer.id, "timestamp": answer.timestamp}

    # --- the chat actions ---

    def act(self, action: str, *args):
        """A chat action's whole answer (read, presence, revoke, edit, exists), its outcome counted as
        /send's are: whin_actions_total{action, outcome} ("ok" or the refusal's code)."""
        try:
            result = getattr(self, action)(*args)
        except (GatewayError, InvalidIdentifier) as err:
            self.store.count(f"action_{action}_{err.code}")
            raise
        self.store.count(f"action_{action}_ok")
        return result

    def read(self, body) -> None:
        request = asks.parse_read(body)
        slot = self._slot(request.target, "mark messages as read")
        by_sender: dict[str | None, list[str]] = {}
        for message_id in request.message_ids:
            found = self._authored(self._known(slot.line, request.chat, message_id, "mark as read"), request.chat,
                                   message_id)
            if found.from_me:
                raise Refused("not_received", f"Message {message_id} is the line's own: only received messages "
                                              "are marked as read.")
            # whatsmeow's MarkRead takes one sender: in a group, one command per author.
            by_sender.setdefault(found.sender if is_group(request.chat) else None, []).append(message_id)
        if len(by_sender) > MAX_READ_AUTHORS:
            raise Refused("too_many_authors", f"These messages have {len(by_sender)} authors; WhatsApp marks one "
                                              f"author's messages at a time, so mark those of at most "
                                              f"{MAX_READ_AUTHORS} authors per call: split the ids into calls.")
        self._take(slot.line, "read")
        for sender, message_ids in by_sender.items():
            sealed = {"chat": request.chat, "message_ids": message_ids}
            if sender:
                sealed["sender"] = sender
            self._expect(self._ask(slot, protocol.Read, sealed), protocol.Done)

    def presence(self, body) -> None:
        request = asks.parse_presence(body)
        slot = self._slot(request.target, "show its presence")
        self._take(slot.line, "presence")
        self._expect(self._ask(slot, protocol.Presence, {"to": request.to, "state": request.state}), protocol.Done)

    def revoke(self, body) -> None:
        request = asks.parse_revoke(body)
        slot = self._slot(request.target, "delete a message")
        found = self._own(slot.line, request.to, request.message_id, "delete")
        if time.time() - found.timestamp > REVOKE_WINDOW:
            raise Refused("revoke_window_passed", f"Message {request.message_id} was sent over "
                                                  f"{REVOKE_WINDOW // 3600} hours ago: WhatsApp no longer deletes it "
                                                  "for everyone.")
        self._take(slot.line, "revoke")
        self._sent(slot, protocol.Revoke, {"to": request.to, "message_id": request.message_id})
        self._indexing(lambda: self.index.forget(slot.line, request.to, request.message_id))

    def edit(self, body) -> None:
        request = asks.parse_edit(body)
        slot = self._slot(request.target, "edit a message")
        found = self._own(slot.line, request.to, request.message_id, "edit")
        if not found.text:
            raise Refused("not_editable", f"Message {request.message_id} is not a text: WhatsApp edits texts only.")
        if time.time() - found.timestamp > EDIT_WINDOW:
            raise Refused("edit_window_passed", f"Message {request.message_id} was sent over {EDIT_WINDOW // 60} "
                                                "minutes ago: WhatsApp no longer lets it be edited.")
        self._take(slot.line, "edit")
        # The Sent reply's id is the edit's or the revoke's own protocol message: nothing one acts on, so
        # the API answers OK, as for /read and /presence.
        self._sent(slot, protocol.Edit, {"to": request.to, "message_id": request.message_id, "text": request.text})

    def exists(self, line_text: str, number_text: str) -> dict:
        number = asks.parse_number(number_text)  # a malformed request is refused before any lookup
        slot = self.lifecycle.serving_slot(line_text, None, "check a number")
        self._take(slot.line, "exists")
        answer = self._expect(self._ask(slot, protocol.Exists, {"number": number}), protocol.Existence)
        return {"number": number, "exists": answer.exists, "jid": answer.jid}

    # --- the steps they share ---

    def _slot(self, target: asks.Target, to_do: str):
        return self.lifecycle.serving_slot(target.line, target.slot, to_do)

    def _known(self, line: str, chat: str, message_id: str, to_do: str) -> IndexedMessage:
        found = self.index.find(line, chat, message_id)
        if found is None:
            raise Refused("unknown_message", f"The line has no message {message_id} in that chat to {to_do} (or it is "
                                             f"older than the gateway remembers: "
                                             f"{self.settings.message_index_ttl / 86400:g} days).")
        return found

    @staticmethod
    def _authored(found: IndexedMessage, chat: str, message_id: str) -> IndexedMessage:
        """In a group WhatsApp names a message by its author too: one whose author's number the slot
        never learnt (an unresolved @lid) cannot be named, rather than named wrong."""
        if is_group(chat) and not found.from_me and not found.sender:
            raise Refused("unknown_sender", f"The author of message {message_id} in that group is known only by "
                                            "a private id (@lid), not a number: WhatsApp cannot be told whose "
                                            "message it is.")
        return found

    def _own(self, line: str, chat: str, message_id: str, to_do: str) -> IndexedMessage:
        found = self._known(line, chat, message_id, to_do)
        if not found.from_me:
            raise Refused("not_own_message", f"Message {message_id} is not the line's own: WhatsApp lets only its "
                                             f"author {to_do} it.")
        return found

    @staticmethod
    def _indexing(change) -> None:
        """After WhatsApp took it: Redis failing now must not answer an error for what was done, or the
        integrator's retry would do it twice. The index then misses it (a later act on it is refused)."""
        try:
            change()
        except redis.RedisError as err:
            log.warning("the message index was not updated (%s)", type(err).__name__)

    def _take(self, line: str, kind: str) -> None:
        wait = self.limiter.acquire(line, COSTS[kind])
        if wait > 0:
            raise RateLimited(wait)

    def _sent(self, slot, op: type[protocol.Command], sealed: dict) -> protocol.Sent:
        return self._expect(self._ask(slot, op, sealed), protocol.Sent)

    def _ask(self, slot, op: type[protocol.Command], sealed: dict):
        command = op(sealed=self.sealer.seal(sealed))
        timeout = self.settings.send_timeout
        answer, taken = protocol.ask(self.store, slot.id, command, timeout=timeout)
        if answer is None:
            if not taken:
                raise EngineTimeout(f"Slot {slot.id} did not take the request within {timeout:g} s; nothing was sent.")
            # Taken but unanswered: the worker drops a command whose deadline has passed before it acts,
            # so it was done just now or never; it is never done later.
            raise EngineTimeout(f"Slot {slot.id} did not confirm the request within {timeout:g} s; it was sent by now "
                                "or never will be.")
        if isinstance(answer, protocol.Failure):
            raise gateway_error(slot.id, answer, "WhatsApp refused it.")
        return answer

    @staticmethod
    def _expect(answer, kind: type):
        if not isinstance(answer, kind):  # a reply of another op's shape: a worker of another version
            raise ServiceUnavailable("engine_mismatch", "The slot answered in a shape this gateway does not read.")
        return answer
