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
MAX_UNREAD_FRAMES = 8  # sealed chunks (256 KiB each) ahead of the API at most: Redis is no buffer for a slow client
READER_STALL_SECONDS = 30  # an API that takes no chunk for this long has gone (its reply list expires at 60)
READER_POLL_SECONDS = 0.02


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

    def push_header(self, command: protocol.Download, reply) -> bool:
        """The first answer (the header, or a failure instead of it); False if Redis stayed away."""
        return self._patiently(lambda: self.store.push_reply(command.reply, reply.to_dict())) is not GAVE_UP

    def push_frame(self, command: protocol.Download, part) -> bool:
        """A binary part after the header; False when the download is to stop: Redis stayed away,
        the API dropped the list (its client went away), or its reader stalled."""
        waiting = self._patiently(lambda: self.store.push_frame(command.reply, protocol.media_frame(part)))
        if waiting is GAVE_UP or waiting is None:
            return False
        return waiting <= MAX_UNREAD_FRAMES or self._wait_for_reader(command)

    def _wait_for_reader(self, command: protocol.Download) -> bool:
        """Hold the next chunk until the API caught up: a slow client's file waits in the engine, not Redis."""
        stalled_at = time.monotonic() + READER_STALL_SECONDS
        while time.monotonic() < stalled_at:
            time.sleep(READER_POLL_SECONDS)
            waiting = self._patiently(lambda: self.store.unread_frames(command.reply))
            if waiting is GAVE_UP or waiting is None:
                return False
            if waiting <= MAX_UNREAD_FRAMES // 2:
                return True
        log.info("slot %s: a media download was abandoned: its reader stopped reading", self.slot_id)
        return False

    def _patiently(self, call):
        outcome = self.patience.retry("a media part", call, until=time.time() + PART_WAIT_SECONDS)
        if outcome is GAVE_UP:
            log.warning("slot %s: a media download was abandoned: Redis was unreachable", self.slot_id)
        return outcome


class _Relay:
    """One download's answers: the JSON header (or a JSON failure instead of it), then binary frames."""

    def __init__(self, downloads: Downloads, command: protocol.Download):
        self.downloads = downloads
        self.command = command
        self.header_sent = False

    def stream(self, download) -> None:
        try:
            self._send(download)
        finally:
            close = getattr(download.chunks, "close", None)
            if close:  # stopped early: the engine's download (an open HTTP response) ends now
                close()

    def _send(self, download) -> None:
        if not self.downloads.push_header(self.command, protocol.MediaHeader(download.size)):
            return
        self.header_sent = True
        size, max_bytes, sealer = 0, self.downloads.max_bytes, self.downloads.sealer
        for index, chunk in enumerate(download.chunks):
            size += len(chunk)
            if size > max_bytes:
                raise MediaRefused("media_too_large", f"The media is larger than {max_bytes} bytes.")
            sealed = sealer.seal_chunk(chunk, protocol.chunk_context(self.command.reply, index))
            if not self.downloads.push_frame(self.command, protocol.MediaChunk(sealed)):
                return
        self.downloads.push_frame(self.command, protocol.MediaEnd(size))

    def fail(self, failure: protocol.Failure) -> None:
        if self.header_sent:
            self.downloads.push_frame(self.command, failure)
        else:
            self.downloads.push_header(self.command, failure)
