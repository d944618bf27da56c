"""Rotating the API tokens and the webhook secret as the README tells it, on a running gateway: no restart.

The gateways here take their secrets from an env file (WHIN_ENV_FILE) or from secrets.env, not from
their environment, and the files are edited in place, as an editor does, while clients keep calling.
"""

import base64
import threading
import time

import pytest
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from controlplane.core.live_secrets import LOOK_EVERY, SETTLE
from tests.gateway import Gateway, wait_for
from tests.receiver import Receiver

ADMIN, OLD, NEW = "rotation-admin-token", "rotation-old-token", "rotation-new-token"
OLD_SECRET = "whsec_" + base64.b64encode(b"rotation-old-secret-of-32-bytes!").decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"rotation-new-secret-of-32-bytes!").decode()
SENDER = "34611000077"
# Every process takes a change this long after the file was written, at the latest (live_secrets).
PROPAGATION = LOOK_EVERY + SETTLE + 1.0


@pytest.fixture
def env_file(tmp_path):
    return tmp_path / "whin.env"


@pytest.fixture
def start_gateway(make_gateway, env_file):
    """Starts gateways that read ``env_file`` as their .env (make_gateway stops every one)."""
    return lambda **overrides: make_gateway(WHIN_ENV_FILE=str(env_file), **overrides)


def edit(path, text: str) -> float:
    """Rewrite the file in place (truncate, write), as an editor does; returns when, on the monotonic clock."""
    path.write_text(text)
    return time.monotonic()


def settle(changed: float) -> None:
    """Wait until every process of the gateway has taken a change made at ``changed``."""
    time.sleep(max(0.0, changed + PROPAGATION - time.monotonic()))


def status(gw: Gateway, token: str):
    """The status of an authenticated read, or None for anything that is not an answer yet."""
    try:
        return gw.api("GET", "/slots", token=token).status_code
    except requests.RequestException:
        return None


class Client(threading.Thread):
    """A client calling the API with one token in a loop, recording every answer (or failure)."""

    def __init__(self, gw: Gateway, token: str):
        super().__init__(daemon=True)
        self.url, self.token = gw.url + "/slots", token
        self.answers: list[tuple[float, object]] = []  # (when the request was sent, status or error)
        self.until: float | None = None

    def run(self):
        with requests.Session() as http:
            while True:
                sent = time.monotonic()
                if self.until is not None and sent > self.until:
                    return
                try:
                    answer = http.get(self.url, headers={"Authorization": f"Bearer {self.token}"},
                                      timeout=60).status_code
                except requests.RequestException as err:
                    answer = type(err).__name__
                self.answers.append((sent, answer))

    def __enter__(self) -> "Client":
        self.start()
        return self

    def __exit__(self, *exc):
        # Stop after a request sent from now on has been answered, however slow the machine.
        self.until = time.monotonic()
        self.join(120)
        assert not self.is_alive(), "the client loop did not end"

    @property
    def failures(self) -> list:
        return [answer for _, answer in self.answers if answer != 200]

    def sent_between(self, start: float, end: float) -> int:
        return sum(1 for sent, _ in self.answers if start <= sent <= end)


def always(gw: Gateway, token: str, expected: int, times: int = 20) -> None:
    answers = [status(gw, token) for _ in range(times)]
    assert answers == [expected] * times


def test_tokens_rotate_in_the_env_file_without_a_restart_or_a_refused_request(start_gateway, env_file):
    env_file.write_text(f"WHIN_PORT=1\nWHIN_API_TOKENS={ADMIN},{OLD}\n")  # the environment's WHIN_PORT wins
    gw = start_gateway(WHIN_API_TOKENS="")
    gw.admin_token = ADMIN
    assert status(gw, OLD) == 200
    assert status(gw, NEW) == 401

    # 1. Add the new token: it works within a couple of seconds; a client of the old one never notices.
    with Client(gw, OLD) as old_client:
        changed = edit(env_file, f"WHIN_PORT=1\nWHIN_API_TOKENS={ADMIN},{OLD},{NEW}\n")
        wait_for(lambda: status(gw, NEW) == 200, timeout=30, what="the api to accept the new token")
        settle(changed)
        always(gw, NEW, 200)
    assert old_client.failures == []
    assert old_client.sent_between(changed, changed + PROPAGATION) > 0

    # 2. Drop the old token: refused from then on, while the new one never fails.
    with Client(gw, NEW) as new_client:
        changed = edit(env_file, f"WHIN_PORT=1\nWHIN_API_TOKENS={ADMIN},{NEW}\n")
        wait_for(lambda: status(gw, OLD) == 401, timeout=30, what="the api to refuse the old token")
        settle(changed)
        always(gw, OLD, 401)

        # 3. A botched edit (the value emptied) locks nobody out: the last good tokens stay, and the log says so.
        changed = edit(env_file, "WHIN_PORT=1\nWHIN_API_TOKENS=\n")
        settle(changed)
        always(gw, NEW, 200)
        assert gw.api("POST", "/slots", json={"count": 1}).status_code == 200  # still the admin
    assert new_client.failures == []
    assert new_client.sent_between(changed, changed + PROPAGATION) > 0
    log = (gw.data_dir / "logs" / "api.log").read_text()
    assert "WHIN_API_TOKENS is set in neither" in log and "keeping the current value" in log
    assert NEW not in log and ADMIN not in log


def test_tokens_rotate_in_secrets_env_and_the_env_file_takes_precedence(start_gateway, env_file):
    gw = start_gateway(WHIN_API_TOKENS="")  # no env file: the launcher generates the token into secrets.env
    secrets_env = gw.data_dir / "secrets.env"
    lines = secrets_env.read_text().splitlines()
    (generated,) = [line.split("=", 1)[1] for line in lines if line.startswith("WHIN_API_TOKENS=")]
    gw.admin_token = generated
    assert status(gw, generated) == 200

    rest = [line for line in lines if not line.startswith("WHIN_API_TOKENS=")]
    edit(secrets_env, "\n".join([*rest, f"WHIN_API_TOKENS={generated},{NEW}"]) + "\n")
    wait_for(lambda: status(gw, NEW) == 200, timeout=30, what="the api to accept the token added to secrets.env")
    assert status(gw, generated) == 200

    # The env file comes before secrets.env, as at a start.
    changed = edit(env_file, f"WHIN_API_TOKENS={ADMIN}\n")
    wait_for(lambda: status(gw, ADMIN) == 200, timeout=30, what="the api to take the env file's token")
    settle(changed)
    always(gw, generated, 401)
    always(gw, NEW, 401)


class AcceptAnySignature:
    """The receiver records every attempt; the test checks each against both secrets itself."""

    def verify(self, body, headers):
        return None


def signed_with(attempt, secret: str) -> bool:
    headers = {"webhook-id": attempt.webhook_id, "webhook-timestamp": attempt.timestamp,
               "webhook-signature": attempt.signature}
    try:
        Webhook(secret).verify(attempt.body, headers)
    except WebhookVerificationError:
        return False
    return True


def attempts_of(receiver: Receiver, line: str, text: str) -> list:
    with receiver.lock:
        return [a for a in receiver.attempts
                if a.event.get("type") == "message" and a.event.get("line") == line
                and a.event["payload"]["Message"].get("conversation") == text]


def test_a_new_webhook_secret_signs_the_next_delivery_and_a_bad_one_is_not_taken(
        start_gateway, env_file, new_line):
    receiver = Receiver(OLD_SECRET).start()
    receiver.verifier = AcceptAnySignature()
    try:
        env_file.write_text(f"WHIN_WEBHOOK_SECRET={OLD_SECRET}\nWHIN_API_TOKENS={OLD}\n")
        gw = start_gateway(WHIN_WEBHOOK_SECRET="", WHIN_WEBHOOK_URL=receiver.url)
        # The tokens come from the gateway's real environment: they win over the file's, for good.
        assert status(gw, gw.admin_token) == 200
        assert status(gw, OLD) == 401

        line = new_line()
        gw.enrolled_slot(line)
        gw.phone_sends(SENDER, line, "antes")
        (before,) = wait_for(lambda: attempts_of(receiver, line, "antes"), timeout=30, what="the first delivery")
        assert signed_with(before, OLD_SECRET) and not signed_with(before, NEW_SECRET)

        changed = edit(env_file, f"WHIN_WEBHOOK_SECRET={NEW_SECRET}\nWHIN_API_TOKENS={OLD}\n")
        settle(changed)
        gw.phone_sends(SENDER, line, "después")
        (after,) = wait_for(lambda: attempts_of(receiver, line, "después"), timeout=30, what="the next delivery")
        assert signed_with(after, NEW_SECRET) and not signed_with(after, OLD_SECRET)

        # A secret that is not whsec_ and base64 is not taken: deliveries stay signed with the last good one.
        changed = edit(env_file, "WHIN_WEBHOOK_SECRET=whsec_not*base64\n")
        settle(changed)
        gw.phone_sends(SENDER, line, "luego")
        (later,) = wait_for(lambda: attempts_of(receiver, line, "luego"), timeout=30, what="a later delivery")
        assert signed_with(later, NEW_SECRET)
        logs = "".join(p.read_text() for p in (gw.data_dir / "logs").glob("delivery-*.log"))
        assert "WHIN_WEBHOOK_SECRET in" in logs and "is not valid" in logs
        assert "not*base64" not in logs and NEW_SECRET.removeprefix("whsec_") not in logs
    finally:
        receiver.stop()
