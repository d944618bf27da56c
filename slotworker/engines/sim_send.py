"""The sim engine's side of a conversation: what it asks simnet's device API to send or do.

``to``/``chat`` is a phone number or a group JID, passed as is. A reaction carries its key as
whatsmeow builds one (message id, ``from_me``, the author), and a reply its quoted author; simnet
checks them against who wrote that message and refuses a key that names no message of the chat, as
it would land nowhere on WhatsApp. Refusals become the engine's: EngineUnavailable when not
connected, simnet is unreachable or its answer is not understood, SendRefused ``not_in_group`` /
``invalid_media`` as simnet names them and ``send_failed`` for any other refusal.
"""

import base64
from urllib.parse import quote

import requests

from slotworker.engines import handoff
from slotworker.engines.base import (
    Contact,
    EngineUnavailable,
    Existence,
    Location,
    OutboundMedia,
    Quote,
    Reaction,
    SendRefused,
    SendResult,
)

ENGINE_CODES = ("not_in_group", "invalid_media")
TIMEOUT = 10


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data else None


def _present(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if v is not None}


def media_body(media: OutboundMedia) -> dict:
    return _present({"data": _b64(media.data) or "", "mimetype": media.mimetype, "filename": media.filename,
                     "caption": media.caption, "ptt": bool(media.ptt), "seconds": media.seconds,
                     "thumbnail": _b64(media.thumbnail)})


def reply_body(reply: Quote | None) -> dict:
    if reply is None:
        return {}
    return _present({"reply_to": reply.message_id, "quoted": reply.message, "quoted_sender": reply.sender})


class SimConversation:
    """Mixed into SimEngine. What it needs from it: ``credentials()`` (the device's id and secret, None
    when not enrolled), ``_connected`` (a threading.Event set while connected), ``_device_url(creds,
    action)`` (simnet's URL of that device call), ``_auth(creds)`` (its headers) and
    ``_json(response)`` (the answer's JSON object, {} when it is not one)."""

    def send(self, to: str, text: str | None = None, media: OutboundMedia | None = None,
             reply: Quote | None = None) -> SendResult:
        if (text is None) == (media is None):
            raise SendRefused("send_failed", "exactly one of text or media")
        content = {"text": text} if media is None else {"media": media_body(media)}
        return self._send({"to": to, **content, **reply_body(reply)})

    def send_location(self, to: str, location: Location, reply: Quote | None = None) -> SendResult:
        pin = _present({"latitude": location.latitude, "longitude": location.longitude, "name": location.name,
                        "address": location.address})
        return self._send({"to": to, "location": pin, **reply_body(reply)})

    def send_contact(self, to: str, contact: Contact, reply: Quote | None = None) -> SendResult:
        return self._send({"to": to, "contact": {"name": contact.name, "vcard": contact.vcard}, **reply_body(reply)})

    def react(self, to: str, reaction: Reaction) -> SendResult:
        key = _present({"message_id": reaction.message_id, "emoji": reaction.emoji, "from_me": bool(reaction.from_me),
                        "sender": reaction.sender})
        return self._send({"to": to, "reaction": key})

    def revoke(self, to: str, message_id: str) -> SendResult:
        return self._send({"to": to, "revoke": {"message_id": message_id}})

    def edit(self, to: str, message_id: str, text: str) -> SendResult:
        return self._send({"to": to, "edit": {"message_id": message_id, "text": text}})

    def mark_read(self, chat: str, message_ids: list[str], sender: str | None = None) -> None:
        self._device_call("POST", "read", _present({"chat": chat, "ids": list(message_ids), "sender": sender}))

    def send_presence(self, to: str, state: str) -> None:
        self._device_call("POST", "presence", {"to": to, "state": state})

    def exists(self, number: str) -> Existence:
        answer = self._device_call("GET", f"exists/{quote(number.lstrip('+'), safe='')}")
        return Existence(exists=answer.get("exists") is True, jid=answer.get("jid"))

    def _send(self, body: dict) -> SendResult:
        sent = self._device_call("POST", "send", body)
        message_id, timestamp = sent.get("id"), sent.get("timestamp")
        if not isinstance(message_id, str) or not message_id or isinstance(timestamp, bool) \
                or not isinstance(timestamp, int):
            raise EngineUnavailable("WhatsApp's answer was not understood")
        return SendResult(id=message_id, timestamp=timestamp)

    def _device_call(self, method: str, action: str, body: dict | None = None) -> dict:
        creds = self.credentials()
        if creds is None or not self._connected.is_set():
            raise EngineUnavailable("not connected to WhatsApp")
        if method == "POST":
            handoff.check()
        try:
            # A fresh connection: the session's pool is busy with the long poll on another thread.
            response = requests.request(method, self._device_url(creds, action), json=body,
                                        headers=self._auth(creds), timeout=TIMEOUT)
        except requests.RequestException as err:
            raise EngineUnavailable(f"WhatsApp unreachable ({type(err).__name__})") from None
        if response.status_code == 422:
            error = self._json(response)
            code = error.get("error") if error.get("error") in ENGINE_CODES else "send_failed"
            raise SendRefused(code, str(error.get("detail") or "WhatsApp refused it."))
        if response.status_code != 200:
            raise EngineUnavailable(f"WhatsApp answered {response.status_code}")
        answer = self._json(response)
        if not answer:
            raise EngineUnavailable("WhatsApp's answer was not understood")
        return answer
