"""controlplane.core.hosts: the pure choice of a host, and the registry against a real Redis."""

import time

import pytest

from controlplane.core.hosts import Host, HostRegistry, NameTaken, choose_host

NOW = 1_000_000.0


def host(name, capacity=10, age=1.0, draining=False):
    return Host(name, NOW - age, capacity, draining)


def test_the_live_host_with_most_free_places_wins_and_the_name_breaks_ties():
    hosts = [host("a"), host("b"), host("c", capacity=20)]
    assert choose_host(hosts, {"c": 15}, NOW, 30) == "a"  # a, b: 10 free; c: 5
    assert choose_host(hosts, {"a": 1}, NOW, 30) == "c"  # c: 20 free
    assert choose_host(hosts, {"a": 3, "c": 13}, NOW, 30) == "b"


def test_dead_draining_full_and_excluded_hosts_are_never_chosen():
    assert choose_host([host("old", age=31)], {}, NOW, 30) is None
    assert choose_host([host("d", draining=True), host("e")], {}, NOW, 30) == "e"
    assert choose_host([host("f", capacity=2)], {"f": 2}, NOW, 30) is None
    assert choose_host([host("g"), host("h", capacity=1)], {}, NOW, 30, exclude=("g",)) == "h"
    assert choose_host([], {}, NOW, 30) is None


def test_the_registry_reads_back_beats_drains_and_a_start_ends_a_drain(redis_client):
    registry = HostRegistry(redis_client, dead_after=30)
    registry.beat("h1", 50, started=True)
    registry.beat("h2", 70, started=True)
    registry.set_draining("h2", True)
    registry.beat("h2", 70)  # a routine beat keeps the drain
    found = {h.name: h for h in registry.all()}
    assert (found["h1"].capacity, found["h1"].draining, found["h2"].draining) == (50, False, True)
    assert abs(found["h1"].heartbeat - time.time()) < 5 and registry.alive("h1")
    registry.beat("h2", 70, started=True)  # its agent started again: back in service
    assert not registry.get("h2").draining
    assert registry.get("nowhere") is None and not registry.alive("nowhere")


def test_a_host_name_is_one_launcher_runs_while_it_beats_and_free_once_released_or_dead(redis_client):
    hosts = HostRegistry(redis_client, dead_after=1)
    assert hosts.claim("h1", "run-a") is None
    hosts.beat("h1", 10, instance="run-a")
    age = hosts.claim("h1", "run-b")  # a second machine under the same name
    assert age is not None and age < 1
    with pytest.raises(NameTaken):
        hosts.beat("h1", 10, instance="run-b")
    assert hosts.claim("h1", "run-a") is None  # its own run again: fine
    hosts.release("h1", "run-b")  # not the holder: nothing
    assert hosts.claim("h1", "run-b") is not None
    hosts.release("h1", "run-a")  # a graceful stop gives it back
    assert hosts.claim("h1", "run-b") is None
    hosts.beat("h1", 10, instance="run-b")
    time.sleep(1.2)  # run-b's machine dies: after the dead time the name is free again
    assert hosts.claim("h1", "run-c") is None
    with pytest.raises(NameTaken):
        hosts.beat("h1", 10, instance="run-b")  # and the old run, back, learns it lost it


def test_a_restart_of_the_same_machine_and_folder_takes_its_name_back_at_once(redis_client):
    hosts = HostRegistry(redis_client, dead_after=30)
    crashed, restarted, elsewhere = "a1b2c3:run1", "a1b2c3:run2", "d4e5f6:run3"
    assert hosts.claim("h1", crashed) is None
    hosts.beat("h1", 10, instance=crashed)  # then kill -9: no release, a fresh heartbeat
    assert hosts.claim("h1", elsewhere) is not None  # another machine: refused for the dead time
    assert hosts.claim("h1", restarted) is None  # its own folder's next run: at once
    hosts.beat("h1", 10, instance=restarted)
    with pytest.raises(NameTaken):
        hosts.beat("h1", 10, instance=elsewhere)


def test_a_run_that_could_not_claim_at_start_claims_at_its_first_beat_and_takes_a_dead_holders_name(redis_client):
    hosts = HostRegistry(redis_client, dead_after=1)
    hosts.beat("h1", 10, instance="a1:run1")  # its launcher found Redis away: the beat claims it
    assert redis_client.hget("whin:host:h1", "instance") == "a1:run1"
    with pytest.raises(NameTaken):
        hosts.beat("h1", 10, instance="b2:run2")
    time.sleep(1.2)  # a1's machine dies
    hosts.beat("h1", 10, instance="b2:run2")
    assert redis_client.hget("whin:host:h1", "instance") == "b2:run2"
    hosts.beat("h1", 10)  # the embedded Redis' agents beat with no run: never refused
