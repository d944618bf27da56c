"""python -m controlplane.redis_keeper GRACE redis-server ARGS…: the embedded Redis, ended with its supervisord.

Every other program ends on supervisord's death by the parent-death signal (core/lifeline.py). Redis
cannot simply do the same: dying in the same instant as its clients, it would take with it what they
still write while they stop (a slot drains its inbound events into Redis, a delivery acknowledges
its last POST). So supervisord runs this keeper instead, with redis-server as its only child:

- a stop while supervisord is alive (its normal stop, Redis last of all) is passed on at once:
  supervisord has already stopped every client;
- a stop once supervisord is gone (the parent-death signal, or the launcher ending leftovers) waits
  until Redis has no client but the keeper's own, or GRACE seconds at most (the longest stop of a
  client), then ends Redis with SIGTERM, which writes its append-only file out before it exits.

Idle it costs nothing: it sleeps in sigwait, with no timer.
"""

import contextlib
import signal
import subprocess
import sys
import time

from controlplane.core import lifeline

STOPS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT}
CLIENTS_POLL_SECONDS = 0.1
REDIS_EXIT_SECONDS = 30.0  # Redis's own shutdown (an fsync); then SIGKILL


def main(argv: list[str]) -> int:
    grace, command = float(argv[0]), argv[1:]
    # Blocked before anything else: a stop that comes early waits in the queue for sigwait below.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS | {signal.SIGCHLD})
    lifeline.end_with_supervisord()  # SIGTERM on supervisord's death (at once if it is gone already)
    redis = subprocess.Popen(command, preexec_fn=_unblock)  # no threads: preexec_fn is safe
    while True:
        sig = signal.sigwait(STOPS | {signal.SIGCHLD})
        if redis.poll() is not None:  # it ended by itself (a crash): supervisord decides what next
            return _exit_code(redis.returncode)
        if sig in STOPS:
            if not lifeline.parent_is_supervisord():  # orphaned: its clients are stopping too
                wait_for_clients(_socket(command), grace, redis)
            return _end(redis)


def _unblock() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def wait_for_clients(socket_path: str | None, grace: float, redis: subprocess.Popen) -> float:
    """Until Redis has no client but this one, or ``grace`` seconds; returns how long it waited."""
    started = time.monotonic()
    if not socket_path:
        return 0.0
    import redis as redis_client  # only on this path: an idle keeper holds no client library

    client = redis_client.Redis(unix_socket_path=socket_path, socket_timeout=1)
    try:
        while time.monotonic() - started < grace and redis.poll() is None:
            try:
                if int(client.info("clients")["connected_clients"]) <= 1:
                    break
            except redis_client.RedisError:  # not listening (yet, or any more): nobody to wait for
                break
            time.sleep(CLIENTS_POLL_SECONDS)
    finally:
        client.close()
    return time.monotonic() - started


def _end(redis: subprocess.Popen) -> int:
    with contextlib.suppress(ProcessLookupError):
        redis.send_signal(signal.SIGTERM)
    try:
        redis.wait(REDIS_EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        redis.kill()
        redis.wait()
    return _exit_code(redis.returncode)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _socket(command: list[str]) -> str | None:
    with contextlib.suppress(ValueError, IndexError):
        return command[command.index("--unixsocket") + 1]
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
