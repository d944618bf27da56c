"""Settings from WHIN_* environment variables (a .env file may set them; see load_dotenv_file).

Every process of the gateway (api, reconciler, slot workers, simnet, whinctl) reads the same
variables, so one environment describes one gateway. Paths are made absolute once, here.
"""

import ipaddress
import math
import os
import re
import socket
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from controlplane.core import engine_names, event_types


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message says which and how to fix it."""


def _number(environ, name: str, default: float) -> float:
    raw = environ.get(name, "")
    if raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:  # inf and nan read as floats, and break what counts with them
        raise ConfigError(f"{name} must be a number greater than zero, got {raw!r}")
    return value


def _count(environ, name: str, default: int) -> int:
    """A whole number of at least one (a count of things), or ``default`` when unset."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {raw!r}")
    return value


class Role(StrEnum):
    """What a `make run` starts (WHIN_ROLE): see the README's "More than one host"."""
    ALL = "all"  # everything on one machine, as a single host has always run
    HOST = "host"  # a slot host: supervisord, its slot programs and its host agent, on a shared Redis
    API = "api"  # the API and the delivery workers, no slots


HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def _host_name(environ) -> str:
    name = (environ.get("WHIN_HOST_NAME") or socket.gethostname()).strip()
    if not HOST_NAME.fullmatch(name):
        raise ConfigError(f"WHIN_HOST_NAME must be letters, digits, '.', '_' or '-' (at most 63), got {name!r}")
    return name


SENTINEL_SCHEME = "redis+sentinel://"  # connection.connect asks the Sentinels for the master
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", SENTINEL_SCHEME)


def _redis_url(environ) -> str:
    url = environ.get("WHIN_REDIS_URL", "").strip()
    if url and not url.startswith(REDIS_SCHEMES):
        raise ConfigError("WHIN_REDIS_URL must start with redis://, rediss://, unix:// or redis+sentinel:// "
                          f"(got {url.split('://')[0] + '://' if '://' in url else 'no scheme'})")
    if url.startswith(SENTINEL_SCHEME) and not urlsplit(url).path.strip("/"):
        raise ConfigError("WHIN_REDIS_URL=redis+sentinel://… names the service its Sentinels watch: "
                          "redis+sentinel://sentinel-1:26379,sentinel-2:26379/<service>/0")
    return url


def _role(environ, external_redis: bool) -> Role:
    raw = environ.get("WHIN_ROLE", "").strip() or Role.ALL.value
    try:
        role = Role(raw)
    except ValueError:
        raise ConfigError(f"WHIN_ROLE must be 'all', 'host' or 'api', got {raw!r}") from None
    if role is not Role.ALL and not external_redis:
        raise ConfigError(f"WHIN_ROLE={role.value} joins the Redis its other hosts share: set WHIN_REDIS_URL")
    return role


def default_start_concurrency() -> int:
    """Two slot starts per core, at least two: a worker's start is mostly CPU (Python imports, the
    engine's own start), with a little waiting on the network, so two per core keep the cores busy
    without the load a start of every slot at once brings (issue 14: 200 at once, load 27)."""
    return max(2, 2 * (os.cpu_count() or 1))


def _numbers(environ, name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        values = tuple(float(v) for v in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated numbers of seconds, got {raw!r}") from None
    if any(v <= 0 for v in values):
        raise ConfigError(f"{name} must hold only positive numbers, got {raw!r}")
    return values


_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def parse_media_allow(raw: str) -> tuple:
    """WHIN_MEDIA_ALLOW: comma-separated networks (10.0.0.0/8, 192.168.1.20, fd12::/16) and host names
    (files.inmovilla.local, *.inmovilla.local) that media.url may reach although they are not public."""
    entries = []
    for item in (i.strip() for i in raw.split(",")):
        if not item:
            continue
        try:
            entries.append(ipaddress.ip_network(item, strict=False))
            continue
        except ValueError:
            pass
        name = item.lower().rstrip(".")
        if not _HOST_NAME.fullmatch(name) or (name.replace(".", "").isdigit()):
            raise ConfigError(f"WHIN_MEDIA_ALLOW holds networks (10.0.0.0/8) and host names (files.example.local),"
                              f" separated by commas; {item!r} is neither")
        entries.append(name)
    return tuple(entries)


def _events(environ) -> frozenset:
    try:
        return event_types.parse_events(environ.get("WHIN_EVENTS", ""))
    except ValueError as err:
        raise ConfigError(f"WHIN_EVENTS is comma-separated event types: {err}") from None


def data_dir_from_env(environ=None) -> Path:
    """WHIN_DATA_DIR (default ./var), absolute: the launcher, whinctl and Settings read it alike."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("WHIN_DATA_DIR") or "./var").resolve()


def _rotating_secrets(environ) -> tuple[tuple[str, ...], str]:
    """The API tokens and webhook secret, held to the same rules at start as on a live edit
    (live_secrets), so that a value the gateway starts with can also be rotated."""
    from controlplane.core.live_secrets import parse_tokens, parse_webhook_secret

    raw_tokens, raw_secret = environ.get("WHIN_API_TOKENS", ""), environ.get("WHIN_WEBHOOK_SECRET", "").strip()
    try:
        tokens = parse_tokens(raw_tokens) if raw_tokens.strip(", ") else ()
    except ValueError as err:
        raise ConfigError(f"WHIN_API_TOKENS is not usable: {err}") from None
    try:
        secret = parse_webhook_secret(raw_secret) if raw_secret else ""
    except ValueError as err:
        raise ConfigError(f"WHIN_WEBHOOK_SECRET is not usable: {err} (it looks like whsec_ and base64)") from None
    return tokens, secret


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    port: int = 8080
    api_tokens: tuple[str, ...] = ()
    engine: str = "whatsmeow"
    redis_url: str = ""
    embedded_redis: bool = True
    # More than one host: what this machine runs, its name, how many slots it may run, when a silent
    # host counts as dead, and how long a slot's lease lasts unrenewed (core/hosts.py, slotworker/lease.py).
    role: Role = Role.ALL
    host_name: str = "localhost"
    host_capacity: int = 500
    host_dead_after: float = 30.0
    host_instance: str = ""  # this launcher run's id (WHIN_HOST_INSTANCE, set by the launcher): hosts.claim
    lease_seconds: float = 15.0
    session_db: str = ""  # where slot sessions live (both engines): a PostgreSQL URL, or empty for the slot folders
    simnet_port: int = 8090
    supervisor_socket: Path = field(default=None)
    supervisor_user: str = "whin"
    supervisor_password: str = ""
    supervisor_conf_dir: Path = field(default=None)
    webhook_url: str = ""
    webhook_secret: str = ""
    # How long the API waits for a worker: the first QR, a reconnect, a logout.
    enroll_timeout: float = 15.0
    connect_timeout: float = 15.0
    kill_timeout: float = 10.0
    # A pairing worker ends itself after this long even if the engine hangs (ENGINE-NOTES: FetchMe).
    pairing_timeout: float = 180.0
    reconcile_interval: float = 2.0
    # How many slot workers the reconciler lets start at once (WHIN_START_CONCURRENCY): after a restart,
    # hundreds of active slots come back in a ramp, not a stampede.
    start_concurrency: int = field(default_factory=default_start_concurrency)
    # Inbound delivery: POST timeout, workers, and how long an event is retried before giving up.
    webhook_timeout: float = 15.0
    delivery_workers: int = 2
    delivery_max_age: float = 3 * 24 * 3600.0
    delivery_backoff: tuple[float, ...] = (1, 2, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200)
    # Key (Fernet) for message content queued in Redis, so Redis's files only ever hold ciphertext.
    queue_key: str = ""
    # Outbound: wait for the slot's answer, per-line rate limit, media fetched by URL.
    send_timeout: float = 15.0
    send_rate_per_minute: float = 30.0
    send_burst: int = 10
    media_max_bytes: int = 16 * 1024 * 1024
    media_timeout: float = 20.0
    # Networks and host names media.url may reach although not public (config.parse_media_allow).
    media_allow: tuple = ()
    # How long the message index (messaging/message_index.py) remembers a message's metadata.
    message_index_ttl: float = 7 * 24 * 3600.0
    # ffmpeg, to turn a voice note into OGG/Opus and measure audio and video (WHIN_FFMPEG; "" = none).
    ffmpeg: str = "ffmpeg"
    # The webhook event types delivered (WHIN_EVENTS); the others are not even subscribed to.
    events: frozenset = event_types.DEFAULT

    @property
    def admin_token(self) -> str | None:
        return self.api_tokens[0] if self.api_tokens else None

    @property
    def simnet_url(self) -> str:
        return f"http://127.0.0.1:{self.simnet_port}"

    @property
    def slots_dir(self) -> Path:
        return self.data_dir / "slots"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    def slot_dir(self, slot_id: str) -> Path:
        return self.slots_dir / slot_id

    @classmethod
    def from_env(cls, environ=None) -> "Settings":
        environ = os.environ if environ is None else environ
        data_dir = data_dir_from_env(environ)
        run_dir = data_dir / "run"
        redis_url = _redis_url(environ)
        engine = environ.get("WHIN_ENGINE", "whatsmeow").strip() or "whatsmeow"
        if engine not in engine_names.REQUIRES:
            raise ConfigError(f"WHIN_ENGINE must be 'whatsmeow' or 'sim', got {engine!r}")
        tokens, webhook_secret = _rotating_secrets(environ)
        return cls(
            data_dir=data_dir,
            port=int(_number(environ, "WHIN_PORT", 8080)),
            api_tokens=tokens,
            engine=engine,
            redis_url=redis_url or f"unix://{run_dir / 'redis.sock'}",
            embedded_redis=not redis_url,
            role=_role(environ, external_redis=bool(redis_url)),
            host_name=_host_name(environ),
            host_capacity=_count(environ, "WHIN_HOST_CAPACITY", 500),
            host_dead_after=_number(environ, "WHIN_HOST_DEAD_AFTER", 30.0),
            host_instance=environ.get("WHIN_HOST_INSTANCE", "").strip(),
            lease_seconds=_number(environ, "WHIN_SLOT_LEASE", 15.0),
            session_db=environ.get("WHIN_SESSION_DB", "").strip(),
            simnet_port=int(_number(environ, "WHIN_SIMNET_PORT", 8090)),
            supervisor_socket=Path(environ.get("WHIN_SUPERVISOR_SOCKET") or run_dir / "supervisor.sock"),
            supervisor_user=environ.get("WHIN_SUPERVISOR_USER") or "whin",
            supervisor_password=environ.get("WHIN_SUPERVISOR_PASSWORD", ""),
            supervisor_conf_dir=Path(
                environ.get("WHIN_SUPERVISOR_CONF_DIR") or data_dir / "supervisor" / "conf.d"
            ),
            webhook_url=environ.get("WHIN_WEBHOOK_URL", "").strip(),
            webhook_secret=webhook_secret,
            enroll_timeout=_number(environ, "WHIN_ENROLL_TIMEOUT", 15.0),
            connect_timeout=_number(environ, "WHIN_CONNECT_TIMEOUT", 15.0),
            kill_timeout=_number(environ, "WHIN_KILL_TIMEOUT", 10.0),
            pairing_timeout=_number(environ, "WHIN_PAIRING_TIMEOUT", 180.0),
            reconcile_interval=_number(environ, "WHIN_RECONCILE_INTERVAL", 2.0),
            start_concurrency=_count(environ, "WHIN_START_CONCURRENCY", default_start_concurrency()),
            webhook_timeout=_number(environ, "WHIN_WEBHOOK_TIMEOUT", 15.0),
            delivery_workers=int(_number(environ, "WHIN_DELIVERY_WORKERS", 2)),
            delivery_max_age=_number(environ, "WHIN_DELIVERY_MAX_AGE", 3 * 24 * 3600.0),
            delivery_backoff=_numbers(environ, "WHIN_DELIVERY_BACKOFF", cls.delivery_backoff),
            queue_key=environ.get("WHIN_QUEUE_KEY", "").strip(),
            send_timeout=_number(environ, "WHIN_SEND_TIMEOUT", 15.0),
            send_rate_per_minute=_number(environ, "WHIN_SEND_RATE", 30.0),
            send_burst=int(_number(environ, "WHIN_SEND_BURST", 10)),
            media_max_bytes=int(_number(environ, "WHIN_MEDIA_MAX_BYTES", 16 * 1024 * 1024)),
            media_timeout=_number(environ, "WHIN_MEDIA_TIMEOUT", 20.0),
            media_allow=parse_media_allow(environ.get("WHIN_MEDIA_ALLOW", "")),
            message_index_ttl=_number(environ, "WHIN_MESSAGE_INDEX_TTL", 7 * 24 * 3600.0),
            ffmpeg=environ.get("WHIN_FFMPEG", "ffmpeg").strip(),
            events=_events(environ),
        )


_set_by_dotenv: frozenset[str] = frozenset()


def load_dotenv_file(path: str | os.PathLike | None = None) -> None:
    """Let a .env file (WHIN_ENV_FILE, default ./.env) set variables the real environment does not set."""
    from dotenv import dotenv_values, load_dotenv

    global _set_by_dotenv
    path = path or os.environ.get("WHIN_ENV_FILE") or ".env"
    before = set(os.environ)
    load_dotenv(path, override=False)
    # Remembered for the launcher (live_secrets.record_sources): these came from a file, not the
    # real environment, so a running gateway re-reads them when they rotate.
    _set_by_dotenv = frozenset(n for n in dotenv_values(path) if n in os.environ and n not in before)


def names_set_by_dotenv() -> frozenset[str]:
    """The variables the last load_dotenv_file() of this process put in os.environ."""
    return _set_by_dotenv
