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
            relay = _Relay(self, command)
            try:
                message = self.sealer.unseal(command.sealed).get("message")
                relay.stream(self.engine.download(message, self.max_bytes))
            except MediaRefused as err:
                relay.fail(protocol.Failure(err.code, err.detail))
            except EngineUnavailable as err:
                relay.fail(protocol.Failure(protocol.WHATSAPP_UNREACHABLE, str(err)))
            except Exception as err:  # a bug must not kill the slot; its kind only, never the content
                log.error("slot %s: a media download failed (%s)", self.slot_id, type(err).__name__)
                relay.fail(protocol.Failure("download_failed", "The slot could not download the media."))

    def push(self, command: protocol.Download, part, as_frame: bool) -> bool:
        """One answer: JSON (the header, or a failure before it) or a binary frame; False if Redis
        stayed away too long."""
        if as_frame:
            def push():
                self.store.push_frame(command.reply, protocol.media_frame(part))
        else:
            def push():
                self.store.push_reply(command.reply, part.to_dict())
        outcome = self.patience.retry("a media part", push, until=time.time() + PART_WAIT_SECONDS)
        if outcome is GAVE_UP:
            log.warning("slot %s: a media download was abandoned: Redis was unreachable", self.slot_id)
            return False
        return True


class _Relay:
    """One download's answers: the JSON header (or a JSON failure instead of it), then binary frames."""

    def __init__(self, downloads: Downloads, command: protocol.Download):
        self.downloads = downloads
        self.command = command
        self.header_sent = False

    def stream(self, download) -> None:
        header = protocol.MediaHeader(download.mimetype, download.filename, download.size)
        if not self.downloads.push(self.command, header, as_frame=False):
            return
        self.header_sent = True
        size, max_bytes, sealer = 0, self.downloads.max_bytes, self.downloads.sealer
        for index, chunk in enumerate(download.chunks):
            size += len(chunk)
            if size > max_bytes:
                raise MediaRefused("media_too_large", f"The media is larger than {max_bytes} bytes.")
            sealed = sealer.seal_chunk(chunk, protocol.chunk_context(self.command.reply, index))
            if not self.downloads.push(self.command, protocol.MediaChunk(sealed), as_frame=True):
                return
        self.downloads.push(self.command, protocol.MediaEnd(size), as_frame=True)

    def fail(self, failure: protocol.Failure) -> None:
        self.downloads.push(self.command, failure, as_frame=self.header_sent)
