"""POST /send: validate, rate-limit, fetch media, hand the message to the slot's worker, await its answer.

The message travels to the worker sealed (see sealed.py) on the slot's command list, as the slot
protocol's ``send`` command (protocol.py). If the worker does not answer within WHIN_SEND_TIMEOUT
the command is withdrawn when still unread, so a 504 does not turn into a late send that the
integrator's retry would double.
"""

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import urlparse

from controlplane.core import ids, protocol
from controlplane.core.errors import EngineTimeout, GatewayError, Refused, ServiceUnavailable
from controlplane.core.ids import InvalidIdentifier
from controlplane.core.sealed import Sealer
from controlplane.messaging.media_fetch import MediaAllow, MediaFetcher
from controlplane.messaging.ratelimit import RateLimiter

MAX_TEXT = 65536  # WhatsApp's own limit for a text message
MAX_CAPTION = 1024


class RateLimited(GatewayError):
    status = 429

    def __init__(self, retry_after: float):
        super().__init__("rate_limited", f"Too many messages from this line; retry in {retry_after:.0f} s.")
        self.retry_after = retry_after


@dataclass(frozen=True)
class SendRequest:
    line: str | None
    slot: str | None
    to: str
    text: str | None
    media: dict | None  # {"url" | "data", "mimetype", "filename", "caption"} as given


def parse_send_request(body) -> SendRequest:
    if not isinstance(body, dict):
        raise Refused("invalid_json", 'Send a JSON object such as {"line": "34666123456", "to": "…", "text": "…"}.')
    if ("line" in body) == ("slot" in body):
        raise Refused("invalid_target", "Give either 'line' or 'slot' (not both) to say who sends.")
    line = ids.parse_line(_string(body, "line")) if "line" in body else None
    slot = ids.parse_slot_id(_string(body, "slot")) if "slot" in body else None
    try:
        to = ids.parse_line(_string(body, "to"))
    except ids.InvalidIdentifier as err:
        raise Refused("invalid_number", f"'to': {err.detail}") from None
    text, media = body.get("text"), body.get("media")
    if text is None and media is None:
        raise Refused("missing_content", "Give 'text', or 'media' (with an optional caption).")
    if text is not None and media is not None:
        raise Refused("invalid_content", "Give 'text' or 'media', not both: a media message's text is its caption.")
    if text is not None and (not isinstance(text, str) or not text or len(text) > MAX_TEXT):
        raise Refused("invalid_text", f"'text' is a non-empty string of at most {MAX_TEXT} characters.")
    if media is not None:
        _check_media(media)
    return SendRequest(line, slot, to, text, media)


def _string(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise Refused(f"invalid_{'number' if name == 'to' else name}", f"'{name}' must be a string.")
    return value


def _check_media(media) -> None:
    if not isinstance(media, dict) or ("url" in media) == ("data" in media):
        raise Refused("invalid_media", "'media' is an object with either 'url' or base64 'data'.")
    for name in ("url", "data"):  # the one given is the media itself: null is not an answer
        if name in media and not isinstance(media[name], str):
            raise Refused("invalid_media", f"'media.{name}' must be a string.")
    for name in ("mimetype", "filename", "caption"):  # optional: null means not given
        if name in media and media[name] is not None and not isinstance(media[name], str):
            raise Refused("invalid_media", f"'media.{name}' must be a string.")
    if "data" in media and not media.get("mimetype"):
        raise Refused("invalid_media", "'media.mimetype' is needed with 'data', e.g. image/jpeg.")
    if len(media.get("caption") or "") > MAX_CAPTION:
        raise Refused("invalid_media", f"'media.caption' has at most {MAX_CAPTION} characters.")
    if "url" in media and urlparse(media["url"]).scheme not in ("http", "https"):
        raise Refused("invalid_media", "'media.url' must be an http or https URL.")


class Outbound:
    def __init__(self, settings, lifecycle):
        self.settings = settings
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.sealer = Sealer(settings.queue_key)
        self.limiter = RateLimiter(self.store.redis, settings.send_rate_per_minute, settings.send_burst)
        # media.url: public addresses and WHIN_MEDIA_ALLOW only, bounded in time and size (media_fetch.py).
        self.media_fetcher = MediaFetcher(MediaAllow(settings.media_allow), settings.media_max_bytes,
                                          settings.media_timeout)

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
        wait = self.limiter.acquire(slot.line)
        if wait > 0:
            raise RateLimited(wait)
        message = {"to": request.to}
        if request.text is not None:
            message["text"] = request.text
        else:
            message["media"] = self._media(request.media)
        answer = self._ask_worker(slot.id, message)
        if isinstance(answer, protocol.Sent):
            return {"id": answer.id, "timestamp": answer.timestamp}
        if answer.error == protocol.WHATSAPP_UNREACHABLE:
            raise ServiceUnavailable("whatsapp_unreachable", f"Slot {slot.id} cannot reach WhatsApp right now.")
        if answer.error == protocol.ENGINE_TIMEOUT:
            raise EngineTimeout(answer.detail)
        raise Refused(answer.error, answer.detail or "WhatsApp refused the message.")

    def _ask_worker(self, slot_id: str, message: dict) -> protocol.Sent | protocol.Failure:
        command = protocol.Send(sealed=self.sealer.seal(message))
        answer, taken = protocol.ask(self.store, slot_id, command, timeout=self.settings.send_timeout)
        if answer is None:
            if not taken:
                raise EngineTimeout(f"Slot {slot_id} did not take the message within {self.settings.send_timeout:g} s;"
                                    " nothing was sent.")
            # Taken but unanswered: the worker drops a command whose deadline has passed before it sends,
            # so the message went out just now or never; it is never sent later.
            raise EngineTimeout(f"Slot {slot_id} did not confirm the message within {self.settings.send_timeout:g} s;"
                                " it was sent by now or never will be.")
        return answer

    def _media(self, media: dict) -> dict:
        if "data" in media:
            try:
                data = base64.b64decode(media["data"], validate=True)
            except (binascii.Error, ValueError):
                raise Refused("invalid_media", "'media.data' is not valid base64.") from None
            mimetype = media["mimetype"]
        else:
            data, fetched_type = self.media_fetcher.fetch(media["url"])
            mimetype = media.get("mimetype") or fetched_type
        if not data:
            raise Refused("invalid_media", "The media is empty.")
        if len(data) > self.settings.media_max_bytes:
            raise Refused("media_too_large", f"The media is larger than {self.settings.media_max_bytes} bytes.")
        return {"data": base64.b64encode(data).decode("ascii"), "mimetype": mimetype,
                "filename": media.get("filename"), "caption": media.get("caption")}
