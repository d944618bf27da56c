"""Relaying a received message's media to the API: the engine's decrypted chunks, sealed, on the
command's reply list (the slot protocol's ``download``), one download per thread.

The bytes pass through memory only: a chunk is sealed (sealed.py) before it enters Redis, and the
API pops each one as it sends it on, so Redis never holds the file in the clear and holds its sealed
chunks only until they are read (or, if nobody reads them, until the reply list's TTL). Nothing of
the content reaches a log: failures are logged by their kind alone.
"""

import logging
import threading
import time

from controlplane.core import protocol
from controlplane.core.sealed import Sealer
from slotworker.engines.base import EngineUnavailable, MediaRefused
from slotworker.outage import GAVE_UP, Patience

log = logging.getLogger(__name__)

CONCURRENT_DOWNLOADS = 2  # per slot: a third waits, so a burst cannot hold many files in memory at once
PART_WAIT_SECONDS = 30  # how long each part is retried through a Redis outage before the download gives up


class Downloads:
    def __init__(self, slot_id: str, store, engine, sealer: Sealer, patience: Patience, max_bytes: int):
        self.slot_id = slot_id
        self.store = store
        self.engine = engine
        self.sealer = sealer
        self.patience = patience
        self.max_bytes = max_bytes
        self._slots = threading.BoundedSemaphore(CONCURRENT_DOWNLOADS)

    def start(self, command: protocol.Download) -> None:
        """Answer ``command`` on a thread of its own: the command loop goes on meanwhile."""
        threading.Thread(target=self._relay, args=(command,), name=f"download-{self.slot_id}", daemon=True).start()

    def _relay(self, command: protocol.Download) -> None:
        with self._slots:
            if command.deadline is not None and time.time() > command.deadline:
                return  # its caller stopped waiting while it queued behind others
            try:
                message = self.sealer.unseal(command.sealed).get("message")
                self._stream(command, self.engine.download(message, self.max_bytes))
            except MediaRefused as err:
                self._push(command, protocol.Failure(err.code, err.detail))
            except EngineUnavailable as err:
                self._push(command, protocol.Failure(protocol.WHATSAPP_UNREACHABLE, str(err)))
            except Exception as err:  # a bug must not kill the slot; its kind only, never the content
                log.error("slot %s: a media download failed (%s)", self.slot_id, type(err).__name__)
                self._push(command, protocol.Failure("download_failed", "The slot could not download the media."))

    def _stream(self, command: protocol.Download, download) -> None:
        header = protocol.MediaHeader(download.mimetype, download.filename, download.size)
        if not self._push(command, header):
            return
        size = 0
        for chunk in download.chunks:
            size += len(chunk)
            if size > self.max_bytes:
                raise MediaRefused("media_too_large", f"The media is larger than {self.max_bytes} bytes.")
            if not self._push(command, protocol.MediaChunk(self.sealer.seal_bytes(chunk))):
                return
        self._push(command, protocol.MediaEnd(size))

    def _push(self, command: protocol.Download, part) -> bool:
        outcome = self.patience.retry("a media part", lambda: self.store.push_reply(command.reply, part.to_dict()),
                                      until=time.time() + PART_WAIT_SECONDS)
        if outcome is GAVE_UP:
            log.warning("slot %s: a media download was abandoned: Redis was unreachable", self.slot_id)
            return False
        return True
