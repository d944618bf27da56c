"""The secrets that rotate (API tokens, webhook secret), read live from the files that set them.

The launcher exports every setting to supervisord's programs once, at start, so editing a file later
changes nothing in their environment. These two must change without a restart: the api checks each
request against the current tokens and each delivery attempt is signed with the current secret.

Precedence is the launcher's: a variable of the real environment wins (it cannot change under a
running process: changing it means restarting the gateway), then the env file (WHIN_ENV_FILE,
default ./.env), then $WHIN_DATA_DIR/secrets.env. At start the launcher records, in
WHIN_SECRETS_FROM_FILES, which of the two came from files (record_sources); only those are re-read.

A process looks at the files' stat at most once a LOOK_EVERY seconds (when asked for the value, and
from a watcher thread when idle) and reads them only when they changed, so a request pays a clock
read. A file modified less than SETTLE seconds ago may be
half-written (an editor truncates, then writes): it is read on a later look. A value that is
missing from both files or malformed never replaces the current one: it is logged (never shown) and
the last good value stays, so a bad edit cannot lock every client out.
"""

import base64
import binascii
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from controlplane.core import config

log = logging.getLogger("controlplane.secrets")

API_TOKENS = "WHIN_API_TOKENS"
WEBHOOK_SECRET = "WHIN_WEBHOOK_SECRET"
ROTATING = (API_TOKENS, WEBHOOK_SECRET)
FROM_FILES = "WHIN_SECRETS_FROM_FILES"  # the rotating names the launcher took from files
ENV_FILE = "WHIN_ENV_FILE"

LOOK_EVERY = 1.0
SETTLE = 0.5
# An mtime set from a float time (os.utime, touch -d) reads back in nanoseconds up to a float's
# precision (~0.2 µs now) past it: the same instant, not a file from the future (read at once).
STAMP_ROUNDING = 1e-6

_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def env_file(environ) -> Path:
    return Path(environ.get(ENV_FILE) or ".env")


def secrets_file(data_dir: Path) -> Path:
    return Path(data_dir) / "secrets.env"


# --- what a good value is ---

def parse_tokens(raw: str) -> tuple[str, ...]:
    """WHIN_API_TOKENS as Settings reads it; ValueError (naming no token) if no usable token is left."""
    tokens = tuple(t.strip() for t in raw.split(",") if t.strip())
    if not tokens:
        raise ValueError("it holds no token")
    if not all(_VISIBLE_ASCII.fullmatch(t) for t in tokens):
        raise ValueError("a token holds a space or a character that is not printable ASCII")
    return tokens


def parse_webhook_secret(raw: str) -> str:
    """A Standard Webhooks secret: whsec_ and base64 (padded or not) of at least one byte."""
    raw = raw.strip()
    if not raw.startswith("whsec_"):
        raise ValueError("it does not start with whsec_")
    body = raw[len("whsec_"):]
    if not _BASE64.fullmatch(body):
        raise ValueError("what follows whsec_ is not base64")
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error:
        raise ValueError("what follows whsec_ is not base64") from None
    if not key:
        raise ValueError("the key after whsec_ is empty")
    return raw


# --- the launcher's side ---

def record_sources(environ) -> None:
    """Called by the launcher before secrets.env fills the gaps: note which rotating names come from files.

    A name comes from a file when the real environment leaves it empty, or when load_dotenv_file set
    it from the env file (which it may have done to os.environ only). The env file's non-empty value
    is put in ``environ`` where the real environment had an empty one (python-dotenv keeps an empty
    variable), so the start and the live look-ups agree on the value. WHIN_ENV_FILE is made absolute.
    """
    from_dotenv = config.names_set_by_dotenv() if environ is os.environ else frozenset()
    names = [n for n in ROTATING if n in from_dotenv or not environ.get(n, "").strip()]
    path = env_file(environ).resolve()
    environ[ENV_FILE] = str(path)
    environ[FROM_FILES] = ",".join(names)
    values = _read(path) or {}
    for name in names:
        value = (values.get(name) or "").strip()
        if value and not environ.get(name, "").strip():
            environ[name] = value


def _read(path: Path) -> dict | None:
    """The file's variables; {} when it does not exist; None (logged) when it cannot be read."""
    try:
        if not path.exists():
            return {}
        return dotenv_values(path)
    except (OSError, UnicodeDecodeError) as err:
        log.error("cannot read %s (%s)", path, getattr(err, "strerror", None) or type(err).__name__)
        return None


def _stamp(path: Path) -> tuple[int, int, int, int] | None:
    """What tells a change: mtime first (SETTLE reads it), ctime for a chmod, inode for a replace."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino


# --- the processes' side ---

class LiveSecret:
    """One rotating secret's current (parsed) value; get() is cheap and safe from any thread."""

    def __init__(self, name: str, parse: Callable[[str], Any], initial: Any, data_dir: Path, environ=None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 watch: bool = True):
        environ = os.environ if environ is None else environ
        self.name = name
        self.parse = parse
        # Outside a gateway started by the launcher (tests, a hand-run gunicorn) nothing is recorded:
        # the value is the one given, for good.
        self.live = name in environ.get(FROM_FILES, "").split(",")
        self.paths = (env_file(environ), secrets_file(data_dir))
        self._value = initial
        self._clock = clock
        self._wall = wall
        self._seen: tuple | None = None  # the files' stamps when last read
        self._next_look = float("-inf")
        self._lock = threading.Lock()
        if self.live and watch:
            self._watch()
            os.register_at_fork(after_in_child=self._watch)  # threads and held locks stay behind in a fork

    def _watch(self) -> None:
        """Look in the background too, so that an idle process (an api worker no request reached, a
        delivery worker without work) follows every good value: otherwise a later malformed one would
        leave it on a value older than its peers' "last good"."""
        self._lock = threading.Lock()
        threading.Thread(target=self._keep_looking, name=f"watch-{self.name}", daemon=True).start()

    def _keep_looking(self) -> None:
        while True:
            time.sleep(LOOK_EVERY)
            try:
                self.get()
            except Exception:  # never let the watcher die: get() from requests would still look
                log.exception("%s: looking at the files failed", self.name)

    def get(self) -> Any:
        if self.live and self._clock() >= self._next_look:
            self._look()
        return self._value

    def _look(self) -> None:
        with self._lock:
            now = self._clock()
            if now < self._next_look:
                return  # another thread just looked
            self._next_look = now + LOOK_EVERY
            stamps = tuple(_stamp(p) for p in self.paths)
            if stamps == self._seen:
                return
            wall = self._wall()
            if any(s is not None and -STAMP_ROUNDING <= wall - s[0] / 1e9 < SETTLE for s in stamps):
                return  # written a moment ago, perhaps not finished: read it on a later look
            self._seen = stamps
            self._load()

    def _load(self) -> None:
        found = None
        for path in self.paths:
            values = _read(path)
            if values is None:
                log.error("%s: keeping the current value", self.name)
                return
            raw = (values.get(self.name) or "").strip()
            if raw:
                found = raw, path
                break
        if found is None:
            log.error("%s is set in neither %s nor %s; keeping the current value", self.name, *self.paths)
            return
        raw, path = found
        try:
            value = self.parse(raw)
        except ValueError as err:  # the reason never quotes the value
            log.error("%s in %s is not valid (%s); keeping the current value", self.name, path, err)
            return
        if value != self._value:
            log.info("%s changed: now the value in %s", self.name, path)
            self._value = value


def api_tokens(settings: config.Settings, environ=None) -> LiveSecret:
    return LiveSecret(API_TOKENS, parse_tokens, settings.api_tokens, settings.data_dir, environ)


def webhook_secret(settings: config.Settings, environ=None) -> LiveSecret:
    return LiveSecret(WEBHOOK_SECRET, parse_webhook_secret, settings.webhook_secret, settings.data_dir, environ)
