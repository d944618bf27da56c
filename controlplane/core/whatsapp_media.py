"""WhatsApp's media: which fields of a ``Message`` carry it, and how WhatsApp encrypts it.

A photo, voice note or document travels as a reference (``URL``/``directPath``, ``mediaKey``,
``fileSHA256``, ``fileEncSHA256``, ``fileLength``) to an encrypted file on WhatsApp's media servers.
The file is ``AES-256-CBC(plain) || HMAC-SHA256(iv || ciphertext)[:10]``, with the IV, cipher key and
MAC key expanded from the 32-byte ``mediaKey`` by HKDF-SHA256 under an ``info`` string per kind
(whatsmeow's ``download.go``). simnet encrypts its uploads this way, the sim engine decrypts them
this way, and the whatsmeow engine leaves both to whatsmeow. Field names are neonize's protobuf
names as ``json_format.MessageToDict(preserving_proto_field_name=True)`` writes them.
"""

import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# The Message fields that hold a downloadable file, and the key family each is encrypted under.
MEDIA_FIELDS = {
    "imageMessage": "image",
    "stickerMessage": "image",
    "videoMessage": "video",
    "ptvMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
}
# Messages that wrap another one in a ``message`` field (disappearing, view-once, captioned documents).
WRAPPERS = ("ephemeralMessage", "viewOnceMessage", "viewOnceMessageV2", "viewOnceMessageV2Extension",
            "documentWithCaptionMessage")
HKDF_INFO = {
    "image": b"WhatsApp Image Keys",
    "video": b"WhatsApp Video Keys",
    "audio": b"WhatsApp Audio Keys",
    "document": b"WhatsApp Document Keys",
}
MAC_LENGTH = 10
# type/subtype with optional parameters ("audio/ogg; codecs=opus"): nothing a header could be split by.
_MIMETYPE = re.compile(r'[\w.+-]+/[\w.+-]+([ \t]*;[ \t]*[\w.+-]+=("[ !#-~]*"|[\w.+-]+))*', re.ASCII)
DEFAULT_MIMETYPE = {"image": "image/jpeg", "video": "video/mp4", "audio": "audio/ogg",
                    "document": "application/octet-stream"}


class MediaCorrupt(ValueError):
    """The file does not match its reference (MAC, hash or padding): tampered with, or the wrong key."""


@dataclass(frozen=True)
class MediaRef:
    field: str  # "imageMessage", …
    kind: str  # the key family: image, video, audio, document
    fields: dict  # that field's JSON object, as delivered

    @property
    def mimetype(self) -> str:
        """The stated type when it is one (it becomes a Content-Type header); else the kind's default."""
        stated = self.fields.get("mimetype")
        if isinstance(stated, str) and _MIMETYPE.fullmatch(stated):
            return stated
        return DEFAULT_MIMETYPE[self.kind]

    @property
    def filename(self) -> str | None:
        stated = self.fields.get("fileName")
        return stated if isinstance(stated, str) and stated else None

    @property
    def length(self) -> int | None:
        """The plain file's size as the message states it (int64: a string in protobuf JSON)."""
        try:
            length = int(self.fields["fileLength"])
        except (KeyError, TypeError, ValueError, OverflowError):
            return None
        return length if length >= 0 else None


def media_of(message) -> MediaRef | None:
    """The downloadable media of a ``Message`` JSON object, through its wrappers; None when it has none."""
    for _ in range(len(WRAPPERS) + 1):  # wrappers nest at most a few deep; never loop on a crafted one
        if not isinstance(message, dict):
            return None
        for name, kind in MEDIA_FIELDS.items():
            if isinstance(message.get(name), dict):
                return MediaRef(name, kind, message[name])
        inner = next((message[w].get("message") for w in WRAPPERS if isinstance(message.get(w), dict)), None)
        if inner is None:
            return None
        message = inner
    return None


def _keys(media_key: bytes, kind: str) -> tuple[bytes, bytes, bytes]:
    """(iv, cipher key, mac key), as whatsmeow's getMediaKeys."""
    expanded = HKDF(algorithm=hashes.SHA256(), length=112, salt=None, info=HKDF_INFO[kind]).derive(media_key)
    return expanded[:16], expanded[16:48], expanded[48:80]


@dataclass(frozen=True)
class Encrypted:
    data: bytes  # what the media server holds: ciphertext || mac
    media_key: bytes
    file_sha256: bytes
    file_enc_sha256: bytes
    file_length: int


def encrypt(plain: bytes, kind: str, media_key: bytes | None = None) -> Encrypted:
    """Encrypt ``plain`` as a phone does before uploading it."""
    media_key = media_key or os.urandom(32)
    iv, cipher_key, mac_key = _keys(media_key, kind)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    mac = hmac.new(mac_key, iv + ciphertext, hashlib.sha256).digest()[:MAC_LENGTH]
    data = ciphertext + mac
    return Encrypted(data, media_key, hashlib.sha256(plain).digest(), hashlib.sha256(data).digest(), len(plain))


class Decryptor:
    """Decrypts a media file as it streams in, checking it as whatsmeow does: the MAC over the IV and
    ciphertext, the encrypted file's SHA-256 and the plain file's SHA-256 (when the reference has them).

    ``update`` returns plain bytes as soon as they are known; ``finish`` returns the last ones only if
    every check passes (it raises MediaCorrupt otherwise), so a caller that holds back what ``finish``
    returns never hands out a complete file that failed its checks.
    """

    def __init__(self, media_key: bytes, kind: str, file_sha256: bytes | None = None,
                 file_enc_sha256: bytes | None = None):
        if len(media_key) != 32:
            raise MediaCorrupt("a media key is 32 bytes")
        iv, cipher_key, mac_key = _keys(media_key, kind)
        self._mac = hmac.new(mac_key, iv, hashlib.sha256)
        self._decryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).decryptor()
        self._unpadder = padding.PKCS7(128).unpadder()
        self._enc_hash = hashlib.sha256()
        self._plain_hash = hashlib.sha256()
        self._expected = (file_sha256, file_enc_sha256)
        self._tail = b""  # the last MAC_LENGTH bytes seen: the MAC, once the file has ended
        self.size = 0

    def update(self, chunk: bytes) -> bytes:
        self._enc_hash.update(chunk)
        data = self._tail + chunk
        body, self._tail = data[:-MAC_LENGTH], data[-MAC_LENGTH:]
        if len(data) < MAC_LENGTH:
            body, self._tail = b"", data
        self._mac.update(body)
        return self._plain(self._unpadder.update(self._decryptor.update(body)))

    def finish(self) -> bytes:
        if len(self._tail) != MAC_LENGTH or not hmac.compare_digest(self._mac.digest()[:MAC_LENGTH], self._tail):
            raise MediaCorrupt("the media file's MAC does not match")
        try:
            last = self._plain(self._unpadder.update(self._decryptor.finalize()) + self._unpadder.finalize())
        except ValueError:
            raise MediaCorrupt("the media file's padding is invalid") from None
        file_sha256, file_enc_sha256 = self._expected
        if file_enc_sha256 and not hmac.compare_digest(self._enc_hash.digest(), file_enc_sha256):
            raise MediaCorrupt("the encrypted file's SHA-256 does not match the message")
        if file_sha256 and not hmac.compare_digest(self._plain_hash.digest(), file_sha256):
            raise MediaCorrupt("the file's SHA-256 does not match the message")
        return last

    def _plain(self, data: bytes) -> bytes:
        self._plain_hash.update(data)
        self.size += len(data)
        return data


def decrypt(data: bytes, media_key: bytes, kind: str, file_sha256: bytes | None = None,
            file_enc_sha256: bytes | None = None) -> bytes:
    """The whole file at once (see Decryptor for the checks)."""
    decryptor = Decryptor(media_key, kind, file_sha256, file_enc_sha256)
    return decryptor.update(data) + decryptor.finish()
