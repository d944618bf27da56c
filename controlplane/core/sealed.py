"""Message content is sealed (Fernet: AES-128-CBC + HMAC) before it enters Redis; media on its way
to POST /media in binary chunks (AES-256-GCM, a key derived from the same WHIN_QUEUE_KEY), which
costs a tenth of Fernet's base64 and two passes over a file of megabytes.

Redis may write to disk (AOF/RDB, replicas, backups) and an append-only file keeps old commands
until it is rewritten, so plaintext in Redis would outlive its delivery. Sealed with WHIN_QUEUE_KEY,
which lives only in the gateway's environment and never in Redis, those files hold ciphertext only.
"""

import base64
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from controlplane.core.config import ConfigError


class Sealer:
    def __init__(self, key: str):
        if not key:
            raise ConfigError("WHIN_QUEUE_KEY is empty; make run generates one (a Fernet key).")
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise ConfigError("WHIN_QUEUE_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes).") from None
        chunk_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                         info=b"whinmovilla media chunks").derive(base64.urlsafe_b64decode(key))
        self._aead = AESGCM(chunk_key)

    def seal(self, data: dict) -> str:
        """Seal ``data`` as compact JSON; unseal_text gives back exactly that JSON text."""
        return self.seal_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False))

    def unseal(self, token: str) -> dict:
        return json.loads(self.unseal_text(token))

    def seal_chunk(self, data: bytes, context: bytes) -> bytes:
        """Binary: a 12-byte nonce and the ciphertext with its tag. ``context`` (the reply list and the
        chunk's place in it) is authenticated, so a chunk cannot be replayed elsewhere or reordered."""
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, context)

    def unseal_chunk(self, sealed: bytes, context: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], context)
        except (InvalidTag, ValueError):
            raise ValueError("a sealed chunk does not open with this WHIN_QUEUE_KEY here") from None

    def seal_text(self, text: str) -> str:
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def unseal_text(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise ValueError("sealed data does not open with this WHIN_QUEUE_KEY") from None
