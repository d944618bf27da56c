"""The slot runner against a real Redis, with an engine that echoes its own logout as the network may:
a kill or an eviction ends the enrollment with one event, and the phone's unlink with one logged_out."""

import subprocess
import threading
import time
import uuid

import pytest
import redis

from controlplane.core import protocol
from controlplane.core.config import Settings
from controlplane.core.sealed import Sealer
from controlplane.core.states import SlotStatus
from controlplane.core.store import Slot, SlotStore
from controlplane.messaging.events import EventPublisher, bytes_connection
from slotworker import outage as outage_module
from slotworker import start
from slotworker.engines import handoff
from slotworker.engines.base import SendResult
from slotworker.runner import PAIRING_GRACE_SECONDS as PAIRING_GRACE
from slotworker.runner import SlotRunner
from tests.gateway import QUEUE_KEY, wait_for
from tests.helpers import queued_envelopes

LINE = "34666123456"
ALLOWED = ("active", "sleeping", "pairing")


class EchoingEngine:
    """Reports the network's "logged out" for our own logout, on another thread, before logout returns."""

    def __init__(self, slot_id, slot_dir, settings, events):
        self.events = events
        self.calls: list[str] = []

    def has_credentials(self) -> bool:
        return True

    def connect(self) -> None:
        self.calls.append("connect")

    def logout(self) -> None:
        self.calls.append("logout")
        echo = threading.Thread(target=self.events.on_logged_out, args=("logged_out",))
        echo.start()
        echo.join(timeout=5)
        assert not echo.is_alive(), "the echo's handler blocked on the teardown"

    def stop(self) -> None:
        self.calls.append("stop")

    def phone_for_lid(self, lid_user: str) -> None:
        return None


@pytest.fixture
def store(redis_client):
    return SlotStore(redis_client)


@pytest.fixture
def publisher(redis_client):
    kwargs = redis_client.connection_pool.connection_kwargs
    connection = redis.Redis(unix_socket_path=kwargs["path"], db=kwargs["db"])
    yield EventPublisher(Settings.from_env({"WHIN_QUEUE_KEY": QUEUE_KEY}), connection)
    connection.close()


@pytest.fixture
def make_runner(store, publisher, tmp_path):
    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_QUEUE_KEY": QUEUE_KEY})
    return lambda slot_id: SlotRunner(slot_id, settings, store, EchoingEngine, publisher)


def statuses(publisher) -> list[tuple[str, str, int]]:
    return [(e["slot"], e["status"], e["seq"]) for e in queued_envelopes(publisher.connection, QUEUE_KEY)]


def paired(store, make_runner):
    (slot_id,) = store.create_slots(1)
    store.begin_pairing(slot_id, time.time() + 60)
    runner = make_runner(slot_id)
    runner.on_paired(LINE)
    return slot_id, runner


def test_a_kill_whose_logout_echoes_sends_killed_only(store, publisher, make_runner):
    slot_id, runner = paired(store, make_runner)
    store.release(slot_id, "killed", ALLOWED, outbox=publisher.outbox())  # what the API's kill does
    runner.commands.handle(store.wait_command(slot_id, timeout=1))  # the worker takes the logout command
    assert runner.engine.calls == ["logout", "stop"]
    assert statuses(publisher) == [(slot_id, "enrolled", 1), (slot_id, "killed", 2)]
    assert not store.get(slot_id).teardown


def test_a_late_logged_out_for_a_killed_enrollment_is_dropped_by_the_store(store, publisher, make_runner):
    """Not the teardown flag of this process: a restarted worker that hears it late is refused by Redis."""
    slot_id, runner = paired(store, make_runner)
    store.release(slot_id, "killed", ALLOWED, outbox=publisher.outbox())
    restarted = make_runner(slot_id)
    restarted.line, restarted.enrollment = LINE, runner.enrollment
    restarted.on_logged_out("logged_out")
    assert statuses(publisher) == [(slot_id, "enrolled", 1), (slot_id, "killed", 2)]
    assert restarted.engine.calls == ["stop"]  # wiped all the same, without a logout


def test_an_eviction_sends_evicted_once_and_the_old_workers_echo_nothing(store, publisher, make_runner):
    old, old_runner = paired(store, make_runner)
    new, _ = paired(store, make_runner)
    old_runner.commands.handle(store.wait_command(old, timeout=1))
    assert statuses(publisher) == [(old, "enrolled", 1), (old, "evicted", 2), (new, "enrolled", 3)]


def test_the_phones_unlink_sends_logged_out_once(store, publisher, make_runner):
    slot_id, runner = paired(store, make_runner)
    runner.on_logged_out("logged_out")
    runner.on_logged_out("logged_out")  # said again, as a reconnect would
    assert statuses(publisher) == [(slot_id, "enrolled", 1), (slot_id, "logged_out", 2)]
    slot = store.get(slot_id)
    assert (slot.status.value, slot.line, slot.teardown) == ("available", None, False)


class SessionlessEngine(EchoingEngine):
    """Its session files are gone (a disk restored without them, a hand-deleted folder)."""

    def has_credentials(self) -> bool:
        return False


def test_an_active_slot_whose_session_is_gone_ends_with_one_logged_out(store, publisher, make_runner, tmp_path):
    slot_id, _ = paired(store, make_runner)
    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_QUEUE_KEY": QUEUE_KEY})
    restarted = SlotRunner(slot_id, settings, store, SessionlessEngine, publisher)
    assert restarted.run() == 0
    assert statuses(publisher) == [(slot_id, "enrolled", 1), (slot_id, "logged_out", 2)]
    slot = store.get(slot_id)
    assert (slot.status.value, slot.line, slot.teardown) == ("available", None, False)


# --- Redis going away under a running worker (issue 10, item 2) ---


class StoppableRedis:
    """A redis-server of the test's own that it can stop and start again; its append-only file keeps
    the data across, as the embedded Redis's does."""

    def __init__(self, folder):
        self.folder = folder
        self.sock = folder / "redis.sock"
        self.url = f"unix://{self.sock}"
        self.process = None

    def start(self) -> None:
        from controlplane.launch import redis_server_binary

        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", "0", "--unixsocket", str(self.sock), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        probe = redis.Redis(unix_socket_path=str(self.sock))
        wait_for(lambda: self.sock.exists() and _pings(probe), timeout=30, what="redis-server to start")
        probe.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


class SendingEngine(EchoingEngine):
    def __init__(self, *args):
        super().__init__(*args)
        self.sent: list[str] = []

    def send(self, to, text=None, media=None, reply=None):
        self.sent.append(to)
        return SendResult(id="3EB0SENT", timestamp=int(time.time()))


@pytest.fixture
def outage(tmp_path):
    """A linked slot whose runner talks to a Redis the test stops and starts."""
    server = StoppableRedis(tmp_path)
    server.start()
    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_QUEUE_KEY": QUEUE_KEY,
                                  "WHIN_REDIS_URL": server.url})
    store = SlotStore.from_url(server.url)
    publisher = EventPublisher(settings, bytes_connection(settings))
    (slot_id,) = store.create_slots(1)
    store.begin_pairing(slot_id, time.time() + 60)
    SlotRunner(slot_id, settings, store, SendingEngine, publisher).on_paired(LINE)
    runner = SlotRunner(slot_id, settings, store, SendingEngine, publisher)  # the worker, (re)started
    yield server, store, publisher, runner
    runner.request_stop()
    if server.process.poll() is None:
        server.stop()


def message_payload(message_id: str, text: str) -> dict:
    """A message from 34611122233 as the engines deliver it: whatsmeow's MessageEv as JSON."""
    return {"Info": {"ID": message_id, "MessageSource": {
        "Chat": {"User": "34611122233", "Server": "s.whatsapp.net"},
        "Sender": {"User": "34611122233", "Server": "s.whatsapp.net"}}}, "Message": {"conversation": text}}


def in_thread(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def message_queued(publisher, message_id) -> bool:
    try:
        return message_id in [e.get("message_id") for e in queued_envelopes(publisher.connection, QUEUE_KEY)]
    except redis.RedisError:
        return False


def test_the_command_loop_rides_out_a_redis_outage_and_the_message_waits_in_the_worker(outage):
    server, store, publisher, runner = outage
    worker = in_thread(runner.run)
    wait_for(lambda: runner.engine.calls == ["connect"], what="the worker to connect")
    server.stop()
    engine_thread = in_thread(runner.on_event, "Message", message_payload("3EB0OUTAGE1", "hola"))
    time.sleep(2)  # Redis's end breaks the command loop's wait: it meets the outage, retrying
    assert worker.is_alive(), "the command loop ended with Redis"
    assert engine_thread.is_alive()  # still trying: the message is not queued, and not dropped
    server.start()
    wait_for(lambda: message_queued(publisher, "3EB0OUTAGE1"), timeout=30, what="the message to be queued")
    engine_thread.join(10)
    assert not engine_thread.is_alive()
    runner.request_stop()
    worker.join(10)
    assert not worker.is_alive()


def test_the_connected_flag_said_during_an_outage_reaches_redis_once_it_is_back(outage):
    server, store, publisher, runner = outage
    worker = in_thread(runner.run)
    wait_for(lambda: runner.engine.calls == ["connect"], what="the worker to connect")
    server.stop()
    runner.on_connected()  # on the engine's thread: must not raise, nor block
    server.start()
    wait_for(lambda: store.get(runner.slot_id).connected, timeout=30, what="the connected flag")
    runner.request_stop()
    worker.join(10)
    assert not worker.is_alive() and not store.get(runner.slot_id).connected


def test_a_stop_during_an_outage_still_queues_the_message_if_redis_is_back_in_time(outage):
    server, store, publisher, runner = outage
    worker = in_thread(runner.run)
    wait_for(lambda: runner.engine.calls == ["connect"], what="the worker to connect")
    server.stop()
    in_thread(runner.on_event, "Message", message_payload("3EB0OUTAGE2", "hola"))
    time.sleep(0.5)
    runner.request_stop()  # supervisord's SIGTERM
    time.sleep(1)
    assert worker.is_alive(), "stopped with a message it had not queued"
    server.start()
    worker.join(30)
    assert not worker.is_alive()
    assert message_queued(publisher, "3EB0OUTAGE2")


def test_a_stop_during_a_long_outage_gives_the_message_up_after_its_budget_and_says_so(outage, monkeypatch,
                                                                                     caplog):
    monkeypatch.setattr(outage_module, "STOP_BUDGET_SECONDS", 1.5)
    server, store, publisher, runner = outage
    worker = in_thread(runner.run)
    wait_for(lambda: runner.engine.calls == ["connect"], what="the worker to connect")
    server.stop()
    handler = in_thread(runner.on_event, "Message", message_payload("3EB0OUTAGE3", "secreto"))
    time.sleep(0.5)
    stopped = time.monotonic()
    runner.request_stop()
    worker.join(30)
    assert not worker.is_alive()
    assert time.monotonic() - stopped >= 1.5  # it kept trying for the whole budget
    given_up = [r for r in caplog.records if r.levelname == "ERROR" and "they are lost" in r.getMessage()]
    assert len(given_up) == 1 and "1 inbound event(s)" in given_up[0].getMessage()
    assert not [r for r in caplog.records if "secreto" in r.getMessage() or "34611122233" in r.getMessage()]
    # In a real worker the process ends here, and the handler's thread with it; in this one it would
    # retry for as long as the test process lives, logging every 5 s into other tests' output.
    server.start()
    handler.join(15)
    assert not handler.is_alive()


def test_a_send_whose_deadline_passed_while_redis_was_away_is_not_sent_late(outage):
    server, store, publisher, runner = outage
    reply = uuid.uuid4().hex
    store.push_command(runner.slot_id, protocol.Send(
        sealed=Sealer(QUEUE_KEY).seal({"to": "34611122233", "text": "tarde"}), reply=reply,
        deadline=time.time() + 1).to_dict())
    server.stop()
    worker = in_thread(runner.run)  # started during the outage: it waits for its slot's state
    time.sleep(2)
    assert worker.is_alive()
    server.start()
    answer = store.wait_reply(reply, timeout=20)
    assert answer is not None and answer["error"] == "engine_timeout"
    assert runner.engine.sent == []
    runner.request_stop()
    worker.join(10)


# --- the start plan and the command dispatch (issue 11) ---


@pytest.mark.parametrize(("fields", "credentials", "expected"), [
    (None, True, "not_provisioned"),
    ({"status": SlotStatus.ACTIVE, "teardown": True}, True, "wipe"),
    ({"status": SlotStatus.AVAILABLE, "teardown": True, "pairing": True}, True, "wipe"),
    ({"status": SlotStatus.ACTIVE}, True, "reconnect"),
    ({"status": SlotStatus.ACTIVE}, False, "release_lost_credentials"),
    ({"status": SlotStatus.AVAILABLE, "pairing": True}, False, "pair"),
    ({"status": SlotStatus.AVAILABLE}, False, "nothing"),
    ({"status": SlotStatus.SLEEPING}, True, "nothing"),
])
def test_what_a_worker_does_at_start_follows_its_slots_state(fields, credentials, expected):
    slot = None if fields is None else Slot(id="AB12CD34", **fields)
    assert start.plan(slot, lambda: credentials) == expected


def test_every_op_of_the_protocol_has_a_handler(store, make_runner):
    (slot_id,) = store.create_slots(1)
    assert set(make_runner(slot_id).commands.handlers) == set(protocol.Op)


class CodingEngine(SendingEngine):
    def pair_code(self, line):
        return "ABCD-EFGH"


@pytest.fixture
def linked_runner(store, publisher, tmp_path):
    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_QUEUE_KEY": QUEUE_KEY})
    (slot_id,) = store.create_slots(1)
    return SlotRunner(slot_id, settings, store, CodingEngine, publisher)


def test_a_send_command_is_sent_and_answered_through_the_protocol(store, linked_runner):
    sealed = Sealer(QUEUE_KEY).seal({"to": "34611122233", "text": "hola"})
    command = protocol.Send(sealed=sealed, reply=uuid.uuid4().hex, deadline=time.time() + 30)
    linked_runner.commands.handle(command.to_dict())
    assert linked_runner.engine.sent == ["34611122233"]
    answer = command.read_reply(store.wait_reply(command.reply, timeout=5))
    assert answer.id == "3EB0SENT" and isinstance(answer, protocol.Sent)


def test_a_paircode_command_answers_the_engines_code(store, linked_runner):
    command = protocol.PairCode(line=LINE, reply=uuid.uuid4().hex, deadline=time.time() + 30)
    linked_runner.commands.handle(command.to_dict())
    assert command.read_reply(store.wait_reply(command.reply, timeout=5)) == protocol.PairingCode("ABCD-EFGH")


def test_a_paircode_on_an_engine_without_it_answers_not_supported(store, publisher, tmp_path):
    from slotworker.engines.base import Engine

    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_QUEUE_KEY": QUEUE_KEY})
    (slot_id,) = store.create_slots(1)
    runner = SlotRunner(slot_id, settings, store, SendingEngine, publisher)
    runner.engine.pair_code = lambda line: Engine.pair_code(runner.engine, line)
    runner.engine.name = "echo"
    command = protocol.PairCode(line=LINE, reply=uuid.uuid4().hex, deadline=time.time() + 30)
    runner.commands.handle(command.to_dict())
    answer = command.read_reply(store.wait_reply(command.reply, timeout=5))
    assert isinstance(answer, protocol.Failure) and answer.error == protocol.NOT_SUPPORTED


def test_an_expired_send_is_answered_engine_timeout_and_not_sent(store, linked_runner):
    sealed = Sealer(QUEUE_KEY).seal({"to": "34611122233", "text": "tarde"})
    command = protocol.Send(sealed=sealed, reply=uuid.uuid4().hex, deadline=time.time() - 1)
    linked_runner.commands.handle(command.to_dict())
    answer = command.read_reply(store.wait_reply(command.reply, timeout=5))
    assert answer == protocol.Failure(protocol.ENGINE_TIMEOUT, "The request expired before the slot took it.")
    assert linked_runner.engine.sent == []


def test_a_send_taken_in_time_whose_engine_is_slow_past_the_deadline_is_not_sent(store, linked_runner,
                                                                                   monkeypatch):
    """Taken just before its deadline; the engine hands messages over as the real ones do (handoff.check
    once its slow part is done, test_contract and test_whatsmeow_send show both engines do)."""
    engine = linked_runner.engine

    def slow_send(to, text=None, media=None, reply=None):
        time.sleep(0.5)  # an upload, say
        handoff.check()
        engine.sent.append((to, text))

    monkeypatch.setattr(engine, "send", slow_send)
    sealed = Sealer(QUEUE_KEY).seal({"to": "34611122233", "text": "tarde"})
    command = protocol.Send(sealed=sealed, reply=uuid.uuid4().hex, deadline=time.time() + 0.2)
    linked_runner.commands.handle(command.to_dict())
    answer = command.read_reply(store.wait_reply(command.reply, timeout=5))
    assert answer == protocol.Failure(protocol.ENGINE_TIMEOUT, "The request expired before it reached WhatsApp; "
                                                               "nothing was sent.")
    assert engine.sent == []


@pytest.mark.parametrize("raw", [{"op": "reboot"}, {"op": "send"}, {"op": "send", "sealed": 7}, {}])
def test_an_unknown_or_unreadable_command_is_logged_by_its_op_and_dropped(linked_runner, raw, caplog):
    linked_runner.commands.handle(raw)
    assert linked_runner.engine.calls == [] and linked_runner.engine.sent == []
    assert any("ignored" in r.getMessage() for r in caplog.records)


def test_a_logout_command_tears_the_slot_down_and_ends_the_loop(linked_runner):
    linked_runner.commands.handle(protocol.Logout(reason="killed").to_dict())
    assert linked_runner.engine.calls == ["logout", "stop"]
    assert linked_runner.exit_reason == "torn_down"


def test_a_pairing_past_its_deadline_ends_the_loop_and_stops_the_engine(store, linked_runner):
    """No os._exit: the loop ends with its reason, and the engine's stop runs (issue 11)."""
    store.begin_pairing(linked_runner.slot_id, time.time() - PAIRING_GRACE - 1)
    linked_runner.engine.start_pairing = lambda: linked_runner.engine.calls.append("pair")
    worker = in_thread(linked_runner.run)
    worker.join(20)
    assert not worker.is_alive()
    assert linked_runner.exit_reason == "pairing_deadline"
    assert linked_runner.engine.calls == ["pair", "stop"]
    assert not store.get(linked_runner.slot_id).pairing


# --- a long wait for commands that a stop ends at once (issue 14) ---

PROMPT_SECONDS = 2.0  # a stop's reach into the wait, with room for a loaded machine: the 25 s wait misses it


def serving(runner) -> threading.Thread:
    """The runner's loop, once in its wait for a command (its engine connected, the loop waiting)."""
    worker = in_thread(runner.run)
    wait_for(lambda: runner._loop_thread is not None, what="the command loop")
    time.sleep(0.3)  # into the BLPOP: a stop before it would prove nothing
    return worker


def stop_time(worker: threading.Thread, stop) -> float:
    started = time.monotonic()
    stop()
    worker.join(30)
    assert not worker.is_alive()
    return time.monotonic() - started


def test_the_wait_for_a_command_is_long(store, make_runner):
    from slotworker import runner as runner_module

    assert runner_module.COMMAND_POLL_SECONDS >= 20  # what makes the tests below fail without the wake


def test_a_sigterm_ends_the_wait_for_a_command_at_once(store, make_runner):
    slot_id, _ = paired(store, make_runner)
    runner = make_runner(slot_id)
    worker = serving(runner)
    took = stop_time(worker, lambda: runner.request_stop(15))  # what main's signal handler's thread does
    assert took < PROMPT_SECONDS, f"the stop waited {took:.2f} s for the command loop"
    assert runner.exit_reason == "stopped" and runner.engine.calls == ["connect", "stop"]


def test_an_end_on_the_engines_thread_ends_the_wait_at_once(store, make_runner):
    """The codes ran out, said on the engine's thread while the loop waits for a command."""
    (slot_id,) = store.create_slots(1)
    store.begin_pairing(slot_id, time.time() + 120)  # the pairing deadline's tick is far away
    runner = make_runner(slot_id)
    runner.engine.start_pairing = lambda: runner.engine.calls.append("pair")
    worker = serving(runner)
    took = stop_time(worker, lambda: in_thread(runner.on_pairing_ended, "codes_exhausted"))
    assert took < PROMPT_SECONDS, f"the end waited {took:.2f} s for the command loop"
    assert runner.exit_reason == "pairing_over"


def test_a_stale_poke_does_not_end_the_next_runs_loop(store, make_runner):
    """A poke its worker never read (it had already ended) does not end the next run's loop."""
    slot_id, _ = paired(store, make_runner)
    store.wake_worker(slot_id)
    runner = make_runner(slot_id)
    worker = serving(runner)
    assert worker.is_alive() and runner.exit_reason is None
    runner.request_stop()
    worker.join(10)


def test_a_stop_while_redis_is_away_still_ends_the_loop_promptly(outage):
    server, store, publisher, runner = outage
    worker = serving(runner)
    server.stop()
    time.sleep(0.5)  # the loop has met the outage: it backs off, Redis refusing every call
    took = stop_time(worker, runner.request_stop)
    assert took < 1.0, f"the stop took {took:.2f} s with Redis away"
    assert runner.exit_reason == "stopped"


def commands_served(client: redis.Redis) -> int:
    """Every command Redis ran since the last CONFIG RESETSTAT, but this probe's own."""
    stats = client.info("commandstats")
    return sum(entry["calls"] for name, entry in stats.items() if name not in ("cmdstat_info", "cmdstat_config"))


def test_an_idle_worker_barely_calls_redis(outage):
    """Its Redis of its own (the fixture's): nothing else's calls in the count."""
    server, store, publisher, runner = outage
    worker = serving(runner)
    probe = redis.Redis(unix_socket_path=str(server.sock))
    probe.config_resetstat()
    time.sleep(3)
    calls = commands_served(probe)
    probe.close()
    # Its wait, and perhaps its clearing of a stale poke if the loop was slow to start: the 0.5 s poll made 6.
    assert calls <= 2, f"{calls} Redis calls in 3 s from an idle worker"
    runner.request_stop()
    worker.join(10)


def test_a_connected_flag_left_by_a_worker_that_died_is_cleared_when_the_next_one_starts(store, make_runner):
    slot_id, _ = paired(store, make_runner)
    store.set_connected(slot_id, True)  # the last worker was SIGKILLed while connected
    runner = make_runner(slot_id)
    runner.engine.connect = lambda: runner.engine.calls.append("connect")  # this one does not connect (yet)
    worker = serving(runner)
    assert not store.get(slot_id).connected
    runner.request_stop()
    worker.join(10)
