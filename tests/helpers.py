"""Helpers shared by test modules (a test module imports from here, never from another test module)."""

import itertools
from pathlib import Path

from rq.job import Job
from rq.registry import FailedJobRegistry

from controlplane.messaging.backlog import QUEUE_NAME
from tests.gateway import wait_for

SENDER = "34611000001"  # the phone that writes to the lines under test

_databases = itertools.count(1)


def redis_url(sock: Path) -> str:
    """A Redis database of its own on the suite's server (see the redis_server fixture)."""
    return f"unix://{sock}?db={next(_databases)}"


def delivered_message(receiver, line, text, timeout=15):
    """The message event with ``text`` on ``line``, once the receiver has it."""
    def find():
        return [e for e in receiver.delivered(type="message", line=line)
                if e["payload"]["Message"].get("conversation") == text]
    return wait_for(find, timeout=timeout, what=f"the message to reach the webhook on line {line}")[0]


def openapi_document() -> dict:
    """The OpenAPI document the app generates (the gateway serves exactly this one: test_openapi)."""
    from controlplane.api.app import create_app
    from controlplane.core.config import Settings
    from tests.gateway import QUEUE_KEY

    app = create_app(Settings.from_env({"WHIN_API_TOKENS": "x", "WHIN_DATA_DIR": "/nonexistent",
                                        "WHIN_QUEUE_KEY": QUEUE_KEY}))
    with app.test_request_context():
        return app.spec


def webhook_problems(document: dict, event: dict) -> list[str]:
    """What is wrong with a delivered event by the document's ``webhooks`` section: schema errors,
    and fields the document does not name."""
    import jsonschema_rs

    schema = document["webhooks"][event["type"]]["post"]["requestBody"]["content"]["application/json"]["schema"]
    validator = jsonschema_rs.Draft202012Validator({"$ref": schema["$ref"], "components": document["components"]})
    documented = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]["properties"]
    undocumented = [f"undocumented {name}" for name in set(event) - set(documented)]
    return [e.message for e in validator.iter_errors(event)] + undocumented


def active_slot(store, line: str) -> str:
    """A slot of ``store`` with ``line`` enrolled, made through the store's own steps (no worker)."""
    import time

    from controlplane.core.states import SlotStatus

    (slot_id,) = store.create_slots(1)
    assert store.begin_pairing(slot_id, time.time() + 60)
    store.pair_success(slot_id, line)
    assert store.require(slot_id).status is SlotStatus.ACTIVE
    return slot_id


def failed_deliveries(client) -> int:
    """How many delivery jobs rq keeps as failed (the FailedJobRegistry of every delivery queue)."""
    keys = [k.decode() if isinstance(k, bytes) else k for k in client.smembers("rq:queues")]
    names = {QUEUE_NAME} | {k.removeprefix("rq:queue:") for k in keys if k.startswith(f"rq:queue:{QUEUE_NAME}")}
    return sum(client.zcard(FailedJobRegistry(name, connection=client).key) for name in names)


def queued_envelopes(client, queue_key: str) -> list[dict]:
    """Every event waiting in a backlog (messaging/backlog.py), unsealed: each backlog in its order,
    all of them by the time they were sealed (the order they were queued in, within one process)."""
    from controlplane.core.keys import BACKLOG_PATTERN
    from controlplane.core.sealed import Sealer
    from controlplane.messaging import backlog

    sealer = Sealer(queue_key)
    found = [sealer.unseal(backlog.parse(item)[1]) for key in sorted(client.scan_iter(match=BACKLOG_PATTERN))
             for item in client.lrange(key, 0, -1)]
    return sorted(found, key=lambda envelope: envelope["received_at"])


def rq_job_keys(client) -> list:
    """Every rq job hash left in Redis (a delivered or given-up job leaves none: result_ttl=0)."""
    return client.keys(Job.redis_job_namespace_prefix + "*")


class SlotLoop:
    """A slot worker's command loop, reduced to ``handle``: each command popped from the slot's real
    list is handed to it, in a thread, for as long as the ``with`` block lasts."""

    def __init__(self, store, slot_id: str, handle):
        import threading

        self.store, self.slot_id, self.handle = store, slot_id, handle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        while not self._stop.is_set():
            raw = self.store.wait_command(self.slot_id, timeout=0.05)
            if raw:
                self.handle(raw)


class AppClient:
    """The API in this process (create_app's Flask test client) on a real Redis database, with no
    supervisord, simnet or slot worker behind it: for routes that answer from validation and Redis alone.

    ``api()`` is Gateway.api's twin, so a test reads the same on either; its answers have requests'
    ``json()``, ``text`` and ``headers``.
    """

    admin_token, user_token = "test-admin-token", "test-user-token"

    def __init__(self, redis_url: str, data_dir: Path):
        from controlplane.api.app import create_app
        from controlplane.core.config import Settings
        from tests.gateway import QUEUE_KEY, WEBHOOK_SECRET

        self.settings = Settings.from_env({
            "WHIN_API_TOKENS": f"{self.admin_token},{self.user_token}", "WHIN_DATA_DIR": str(data_dir),
            "WHIN_REDIS_URL": redis_url, "WHIN_QUEUE_KEY": QUEUE_KEY, "WHIN_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "WHIN_ENGINE": "sim"})
        self.app = create_app(self.settings)
        self.client = self.app.test_client()

    def api(self, method: str, path: str, token: str | None = "admin", **kwargs):
        headers = kwargs.pop("headers", {})
        if token == "admin":
            token = self.admin_token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        follow = kwargs.pop("allow_redirects", True)  # as requests does
        return _Answer(self.client.open(path, method=method, headers=headers, follow_redirects=follow, **kwargs))


class _Answer:
    """A Flask test response read as requests reads one: ``json()`` is a method."""

    def __init__(self, response):
        self._response = response
        self.status_code, self.headers, self.text = response.status_code, response.headers, response.text

    def json(self):
        return self._response.get_json(force=True)
