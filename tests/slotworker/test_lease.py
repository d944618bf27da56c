"""slotworker.lease against a real Redis: one holder at a time, a same-host restart takes over at once,
and a worker that cannot renew lets go before its lease can expire in Redis."""

import threading
import time

import pytest
import redis

from slotworker.lease import CALL_TIMEOUT, STOP_AT, Lease, lease_client


def lease(client, host="h1", seconds=1.5, on_lost=lambda: None, solo=False):
    return Lease(client, "SLOT0001", host, seconds, on_lost, solo=solo)


def test_a_lease_held_by_another_host_is_waited_for_until_it_expires(redis_client):
    first = lease(redis_client, "h1")
    assert first.acquire(threading.Event())
    first._stopped.set()  # its host dies: no more renewals, no release
    other = lease(redis_client, "h2")
    began = time.monotonic()
    assert other.acquire(threading.Event())
    assert 0.5 < time.monotonic() - began < 5  # only once h1's lease ran out
    assert redis_client.get("whin:lease:SLOT0001").startswith("h2 ")
    other.release()
    assert redis_client.get("whin:lease:SLOT0001") is None


def test_the_same_hosts_next_worker_takes_over_at_once(redis_client):
    crashed = lease(redis_client, "h1", seconds=30)
    assert crashed.acquire(threading.Event())
    crashed._stopped.set()
    began = time.monotonic()
    successor = lease(redis_client, "h1", seconds=30)
    assert successor.acquire(threading.Event()) and time.monotonic() - began < 1
    crashed.release()  # the old one's release never takes the new one's lease
    assert redis_client.get("whin:lease:SLOT0001") == successor.token
    successor.release()


def test_a_wait_ends_when_stopped_or_moved_away(redis_client):
    holder = lease(redis_client, "h1", seconds=30)
    holder.acquire(threading.Event())
    stop = threading.Event()
    stop.set()
    assert not lease(redis_client, "h2").acquire(stop)
    assert not lease(redis_client, "h2").acquire(threading.Event(), still_wanted=lambda: False)
    holder.release()


def test_a_renewed_lease_outlives_its_ttl_and_a_cut_off_worker_lets_go_before_it_expires(redis_server):
    client = redis.Redis(unix_socket_path=str(redis_server), db=5, decode_responses=True, socket_timeout=0.5)
    client.delete("whin:lease:SLOT0001")
    lost = threading.Event()
    held = lease(client, "h1", seconds=1.5, on_lost=lost.set)
    assert held.acquire(threading.Event())
    time.sleep(2.5)  # longer than its TTL: renewed meanwhile
    assert client.get("whin:lease:SLOT0001") == held.token and not lost.is_set()

    def unreachable(*args, **kwargs):
        raise redis.ConnectionError("cut")

    held._renew = unreachable  # the host's Redis connection is cut from now on
    assert lost.wait(3)
    let_go = time.monotonic()
    # From its last renewal, read now: one may have succeeded just as the connection was cut (a
    # fresh-clone run saw it), and Redis counts the TTL from that one.
    renewed_at = held._renewed_at
    assert let_go - renewed_at <= 1.5 * STOP_AT + 0.3  # before the TTL (1.5 s) counted from that renewal
    assert let_go - renewed_at < 1.5
    held.release()


def test_a_lease_taken_by_someone_else_is_lost_at_the_next_renewal(redis_client):
    lost = threading.Event()
    held = lease(redis_client, "h1", seconds=1.5, on_lost=lost.set)
    held.acquire(threading.Event())
    redis_client.set("whin:lease:SLOT0001", "h2 someone-else", px=10000)
    assert lost.wait(2)
    held.release()
    assert redis_client.get("whin:lease:SLOT0001") == "h2 someone-else"  # not ours: left alone


def test_on_one_machine_with_its_own_redis_an_outage_is_waited_out_and_the_lease_taken_again(redis_client):
    lost = threading.Event()
    held = lease(redis_client, "h1", seconds=0.6, on_lost=lost.set, solo=True)
    assert held.acquire(threading.Event())
    renew = held._renew

    def unreachable(*args, **kwargs):
        raise redis.ConnectionError("restarting")

    held._renew = unreachable  # Redis away for twice the lease
    time.sleep(1.2)
    assert not lost.is_set()
    assert redis_client.get("whin:lease:SLOT0001") is None  # it ran out meanwhile
    held._renew = renew
    wait_for = time.monotonic() + 2
    while redis_client.get("whin:lease:SLOT0001") != held.token and time.monotonic() < wait_for:
        time.sleep(0.05)
    assert redis_client.get("whin:lease:SLOT0001") == held.token and not lost.is_set()
    held.release()


def test_a_renewal_that_hangs_still_lets_go_at_the_give_up_point(redis_client):
    lost = threading.Event()
    held = lease(redis_client, "h1", seconds=1.5, on_lost=lost.set)
    assert held.acquire(threading.Event())

    def silent(*args, **kwargs):  # a partition that drops packets: the call waits, nothing comes back
        time.sleep(5)
        return 1

    held._renew = silent
    assert lost.wait(3)
    assert time.monotonic() - held._renewed_at < 1.5  # before the TTL counted from its last renewal
    held.release()


def test_the_lease_client_answers_within_a_fraction_of_the_ttl_when_redis_is_silent(redis_client):
    client = lease_client(redis_client, 2.0)
    pauser = redis.Redis(connection_pool=redis_client.connection_pool)
    pauser.execute_command("CLIENT", "PAUSE", 2000)  # every client's next command waits 2 s
    began = time.monotonic()
    try:
        with pytest.raises(redis.TimeoutError):
            client.get("whin:lease:SLOT0001")
    finally:
        took = time.monotonic() - began
        time.sleep(max(0.0, 2.1 - took))  # the pause ends by itself
    assert took < 2.0 * CALL_TIMEOUT + 0.2  # one try: redis-py does not retry it


def test_a_slot_placed_on_another_host_loses_its_lease_at_the_next_renewal(redis_client):
    lost = threading.Event()
    held = lease(redis_client, "h1", seconds=1.5, on_lost=lost.set)
    redis_client.hset("whin:slot:SLOT0001", "host", "h1")
    assert held.acquire(threading.Event())
    time.sleep(0.7)
    assert not lost.is_set()  # renewed while it is placed here
    redis_client.hset("whin:slot:SLOT0001", "host", "h2")  # a host agent moved it (its host died, or a drain)
    assert lost.wait(1)
    held.release()
    redis_client.delete("whin:slot:SLOT0001")


def test_nothing_is_begun_after_the_lease_is_lost_and_the_loss_waits_for_what_was_begun(redis_client):
    order = []
    held = lease(redis_client, "h1", seconds=30, on_lost=lambda: order.append("disconnected"))
    assert held.acquire(threading.Event())
    with held.held() as ours:
        assert ours
        loser = threading.Thread(target=held._lose, args=("test",))
        loser.start()
        time.sleep(0.2)
        order.append("connected")  # the loss waits for the block: it cannot disconnect first
    loser.join(5)
    assert order == ["connected", "disconnected"]
    with held.held() as ours:
        assert not ours
    held.release()


def test_a_disconnection_stuck_past_the_hard_stop_ends_the_process(redis_client, monkeypatch):
    ended = threading.Event()
    monkeypatch.setattr(Lease, "_exit_now", lambda self: ended.set())
    held = lease(redis_client, "h1", seconds=1.0, on_lost=lambda: time.sleep(3))  # the engine hangs
    assert held.acquire(threading.Event())
    began = held._renewed_at
    threading.Thread(target=held._lose, args=("test",), daemon=True).start()
    assert ended.wait(2)
    assert time.monotonic() - began < 1.0  # before the TTL
    held.release()


def test_a_lease_of_an_earlier_run_of_the_same_host_is_waited_for_and_a_new_run_of_its_name_ends_it(redis_client):
    lost = threading.Event()
    earlier = Lease(redis_client, "SLOT0001", "h1", 30, lost.set, run="run-a")
    assert earlier.acquire(threading.Event())
    later = Lease(redis_client, "SLOT0001", "h1", 1.5, lambda: None, run="run-b")
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    assert not later.acquire(stop)  # not taken over: it may be another machine under the same name
    # Another run claims the name (the earlier one was away longer than the dead time): the earlier
    # run's worker cannot renew any more.
    fast = Lease(redis_client, "SLOT0002", "h1", 1.5, lost.set, run="run-a")
    assert fast.acquire(threading.Event())
    redis_client.hset("whin:host:h1", "instance", "run-b")
    assert lost.wait(2)
    earlier.release()
    fast.release()
    redis_client.delete("whin:host:h1", "whin:lease:SLOT0001", "whin:lease:SLOT0002")


def test_a_lease_of_an_earlier_run_of_the_same_machine_and_folder_is_taken_over_at_once(redis_client):
    crashed = Lease(redis_client, "SLOT0001", "h1", 30, lambda: None, run="a1b2:run1")
    assert crashed.acquire(threading.Event())
    crashed._stopped.set()  # kill -9 of the whole host: no release
    began = time.monotonic()
    restarted = Lease(redis_client, "SLOT0001", "h1", 30, lambda: None, run="a1b2:run2")
    assert restarted.acquire(threading.Event()) and time.monotonic() - began < 1
    elsewhere = Lease(redis_client, "SLOT0001", "h1", 30, lambda: None, run="c3d4:run3")
    stop = threading.Event()
    threading.Timer(0.8, stop.set).start()
    assert not elsewhere.acquire(stop)  # another machine under the name: waits for it
    restarted.release()


def test_a_lease_lost_because_the_slot_moved_is_given_back_for_the_next_host(redis_client):
    lost = threading.Event()
    held = lease(redis_client, "h1", seconds=1.5, on_lost=lost.set)
    redis_client.hset("whin:slot:SLOT0001", "host", "h1")
    assert held.acquire(threading.Event())
    redis_client.hset("whin:slot:SLOT0001", "host", "h2")  # drained away
    assert lost.wait(1.5)
    wait_until = time.monotonic() + 1
    while redis_client.exists("whin:lease:SLOT0001") and time.monotonic() < wait_until:
        time.sleep(0.02)
    assert not redis_client.exists("whin:lease:SLOT0001")  # not left to expire
    held.release()
    redis_client.delete("whin:slot:SLOT0001")
