"""controlplane.placement against a real Redis: placing is a compare-and-set, a dead host's slot moves only
when its session can, and the one machine of a single-host gateway is its own host before its first beat."""

import time

from controlplane.core.config import Settings
from controlplane.core.hosts import HostRegistry
from controlplane.core.states import SlotStatus
from controlplane.core.store import SlotStore
from controlplane.placement import Occupancy, Placement


def setup(redis_client, **env):
    settings = Settings.from_env({"WHIN_REDIS_URL": "redis://x", "WHIN_ROLE": "api", **env})
    store = SlotStore(redis_client)
    hosts = HostRegistry(redis_client, settings.host_dead_after)
    return settings, store, hosts, Placement(settings, store, hosts)


def active(store, slot_id):
    store.redis.hset(f"whin:slot:{slot_id}", mapping={"status": SlotStatus.ACTIVE.value, "line": "34600000001"})
    return store.get(slot_id)


def test_a_slot_goes_to_the_emptiest_host_and_stays_there(redis_client):
    _, store, hosts, placement = setup(redis_client, WHIN_SESSION_DB="postgresql://x")
    first, second, third = store.create_slots(3)
    for name in ("h1", "h2"):
        hosts.beat(name, 10)
    assert placement.place(active(store, first)) == "h1"
    assert placement.place(active(store, second)) == "h2"  # h1 has one running now
    assert placement.place(store.get(first)) == "h1"  # placed: it keeps its host
    assert placement.place(active(store, third)) == "h1"


def test_occupancy_lists_every_placed_slot_and_counts_those_whose_worker_runs(redis_client):
    _, store, hosts, placement = setup(redis_client, WHIN_SESSION_DB="postgresql://x")
    running, pairing, expired, sleeping, nowhere = store.create_slots(5)
    now = time.time()
    active(store, running)
    store.redis.hset(f"whin:slot:{pairing}", mapping={"pairing": "1", "pair_deadline": now + 60})
    store.redis.hset(f"whin:slot:{expired}", mapping={"pairing": "1", "pair_deadline": now - 1})
    store.redis.hset(f"whin:slot:{sleeping}", mapping={"status": SlotStatus.SLEEPING.value})
    for slot_id in (running, pairing, expired, sleeping):
        assert store.place(slot_id, "h1", None)
    occupancy = Occupancy.read(store, now)
    assert sorted(occupancy.placed["h1"]) == sorted([running, pairing, expired, sleeping])
    assert occupancy.taken["h1"] == 2  # the active one and the one pairing; not `nowhere`, never placed
    assert nowhere not in sum(occupancy.placed.values(), [])


def test_two_placers_of_one_slot_agree_on_one_host(redis_client):
    _, store, hosts, placement = setup(redis_client, WHIN_SESSION_DB="postgresql://x")
    (slot_id,) = store.create_slots(1)
    stale = active(store, slot_id)
    hosts.beat("h1", 10)
    assert placement.place(stale) == "h1"
    hosts.beat("h2", 1000)  # now the emptiest: a placer with the stale read would pick it
    assert placement.place(stale) == "h1"  # the compare-and-set fails: the winner's host
    assert store.get(slot_id).host == "h1"


def test_a_dead_hosts_slot_moves_only_if_its_session_can(redis_client):
    _, store, hosts, movable = setup(redis_client, WHIN_SESSION_DB="postgresql://x", WHIN_HOST_DEAD_AFTER="5")
    pinned = Placement(Settings.from_env({"WHIN_REDIS_URL": "redis://x", "WHIN_ROLE": "api",
                                          "WHIN_HOST_DEAD_AFTER": "5"}), store, hosts)
    (slot_id,) = store.create_slots(1)
    redis_client.hset("whin:host:dead", mapping={"heartbeat": "1", "capacity": 10})
    redis_client.sadd("whin:hosts", "dead")
    hosts.beat("alive", 10)
    slot = active(store, slot_id)
    store.place(slot_id, "dead", None)
    assert pinned.place(store.get(slot_id)) == "dead"  # its files are on that disk: it waits for it
    assert movable.place(store.get(slot_id)) == "alive"
    assert slot.id == slot_id


def test_a_slot_moved_off_its_host_is_not_connected_until_its_new_worker_says_so(redis_client):
    _, store, hosts, placement = setup(redis_client, WHIN_SESSION_DB="postgresql://x", WHIN_HOST_DEAD_AFTER="5")
    (slot_id,) = store.create_slots(1)
    active(store, slot_id)
    assert store.place(slot_id, "dead", None)
    store.set_connected(slot_id, True)  # the dead host's worker said so, and never will say otherwise
    redis_client.hset("whin:host:dead", mapping={"heartbeat": "1", "capacity": 10})
    hosts.beat("alive", 10)
    assert placement.place(store.get(slot_id)) == "alive"
    assert not store.get(slot_id).connected
    store.set_connected(slot_id, True)
    assert placement.place(store.get(slot_id)) == "alive" and store.get(slot_id).connected  # kept: not moved


def test_a_single_machine_is_its_own_host_before_its_agent_beats(redis_client):
    settings, store, hosts, _ = setup(redis_client)
    single = Placement(Settings.from_env({"WHIN_HOST_NAME": "solo"}), store, hosts)
    (slot_id,) = store.create_slots(1)
    assert single.place(active(store, slot_id)) == "solo"
    api_only = Placement(settings, store, hosts)
    (other,) = store.create_slots(1)
    assert api_only.place(active(store, other)) is None  # no host at all: nowhere to go
