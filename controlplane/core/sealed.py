"""Message content is sealed (Fernet: AES-128-CBC + HMAC) before it enters Redis.

Redis may write to disk (AOF/RDB, replicas, backups) and an append-only file keeps old commands
until it is rewritten, so plaintext in Redis would outlive its delivery. Sealed with WHIN_QUEUE_KEY,
which lives only in the gateway's environment and never in Redis, those files hold ciphertext only.
"""

import json

from cryptography.fernet import Fernet, InvalidToken

from controlplane.core.config import ConfigError


class Sealer:
    def __init__(self, key: str):
        if not key:
            raise ConfigError("WHIN_QUEUE_KEY is empty; make run generates one (a Fernet key).")
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise ConfigError("WHIN_QUEUE_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes).") from None

    def seal(self, data: dict) -> str:
        """Seal ``data`` as compact JSON; unseal_text gives back exactly that JSON text."""
        return self.seal_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False))

    def unseal(self, token: str) -> dict:
        return json.loads(self.unseal_text(token))

    def seal_bytes(self, data: bytes) -> str:
        return self._fernet.encrypt(data).decode("ascii")

    def unseal_bytes(self, token: str) -> bytes:
        try:
            return self._fernet.decrypt(token.encode("ascii"))
        except InvalidToken:
            raise ValueError("sealed data does not open with this WHIN_QUEUE_KEY") from None

    def seal_text(self, text: str) -> str:
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def unseal_text(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise ValueError("sealed data does not open with this WHIN_QUEUE_KEY") from None
