"""simnet's media servers (WhatsApp's mmg.whatsapp.net): encrypted files by their direct path.

A phone that sends a photo encrypts it (controlplane.core.whatsapp_media, as WhatsApp does) and
uploads the ciphertext here; the message carries the key and ``directPath`` ``/mms/<kind>/<token>``.
Files live under simnet's own folder, never in memory, and ``forget`` drops them all, as WhatsApp's
expiry does. The folder is its own: no lock of the network is needed.
"""

import base64
import binascii
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from controlplane.core import whatsapp_media
from simnet.common import SimError

TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
CHUNK = 64 * 1024


def kind_of(mimetype: str) -> str:
    """The media family of a mimetype: image, video, audio, or else document."""
    family = mimetype.split("/", 1)[0]
    return family if family in ("image", "video", "audio") else "document"


def decoded(media) -> tuple[bytes, str]:
    """(the plain bytes, the mimetype) of a phone's ``media`` object, or a 422."""
    if not isinstance(media, dict):
        raise SimError(422, "invalid_media", "'media' is an object with 'data' (base64) and 'mimetype'.")
    mimetype = media.get("mimetype")
    if not isinstance(mimetype, str) or "/" not in mimetype:
        raise SimError(422, "invalid_media", "'media.mimetype' is a MIME type such as image/jpeg.")
    try:
        data = base64.b64decode(media.get("data") or "", validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise SimError(422, "invalid_media", "'media.data' is the file in base64.") from None
    if not data:
        raise SimError(422, "invalid_media", "'media.data' is the file in base64, not empty.")
    for name in ("filename", "caption"):
        if media.get(name) is not None and not isinstance(media[name], str):
            raise SimError(422, "invalid_media", f"'media.{name}' is a string.")
    return data, mimetype


class MediaServer:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def upload(self, plain: bytes, kind: str) -> tuple[whatsapp_media.Encrypted, str]:
        """Encrypt ``plain`` as a phone does and keep the ciphertext: (the encryption, its direct path)."""
        encrypted = whatsapp_media.encrypt(plain, kind)
        token = secrets.token_urlsafe(24)
        target = self.folder / kind / token
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        with os.fdopen(fd, "wb") as f:
            f.write(encrypted.data)
        os.replace(tmp, target)
        return encrypted, f"/mms/{kind}/{token}"

    def _path(self, kind: str, token: str) -> Path:
        if kind not in whatsapp_media.HKDF_INFO or not TOKEN.fullmatch(token):
            raise SimError(404, "media_gone", "No such media file.")
        path = self.folder / kind / token
        if not path.is_file():
            raise SimError(404, "media_gone", "No such media file (it expired, or never was).")
        return path

    def open(self, kind: str, token: str) -> tuple[int, Iterator[bytes]]:
        """(size, chunks) of a stored file, opened now (so a later ``forget`` does not cut it short)."""
        path = self._path(kind, token)
        f = path.open("rb")
        size = os.fstat(f.fileno()).st_size

        def chunks():
            with f:
                while chunk := f.read(CHUNK):
                    yield chunk

        return size, chunks()

    def forget(self) -> int:
        """Every stored file is gone (WhatsApp's media expiry); how many there were."""
        count = sum(1 for p in self.folder.glob("*/*") if p.is_file()) if self.folder.exists() else 0
        shutil.rmtree(self.folder, ignore_errors=True)
        return count
