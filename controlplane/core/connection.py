"""The gateway's Redis client, and the store's transactions: WATCH/MULTI/EXEC with a mark that tells a lost
EXEC reply from a transaction that never ran."""

import uuid

import redis
import redis_sentinel_url
from redis.backoff import NoBackoff
from redis.retry import Retry

from controlplane.core import scripts
from controlplane.core.config import SENTINEL_SCHEME
from controlplane.core.keys import txn_key

# redis-py 8 times out every read after 5 s by default, blocking pops included: ours (and rq's) block
# for up to WHIN_SEND_TIMEOUT or rq's dequeue timeout, so reads get a minute before calling Redis dead.
SOCKET_TIMEOUT = 60
CONNECT_TIMEOUT = 5


def connect(url: str, decode_responses: bool = True) -> redis.Redis:
    """A client for the gateway's Redis; rq needs decode_responses=False (it stores bytes).

    ``redis+sentinel://host:26379[,host2:26379…]/<service>[/db]`` asks those Sentinels for the
    service's master, and again whenever a connection to it fails: after a failover, the next try
    reaches the new master. It is the URL format rq-dashboard reads too (redis_sentinel_url)."""
    options = {"decode_responses": decode_responses, "socket_timeout": SOCKET_TIMEOUT,
               "socket_connect_timeout": CONNECT_TIMEOUT, "health_check_interval": 30}
    if url.startswith(SENTINEL_SCHEME):
        sentinel = {"socket_timeout": CONNECT_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT}
        _, client = redis_sentinel_url.connect(url, client_class=redis.Redis, client_options=options,
                                               sentinel_options=sentinel)
        return client  # the service is named: config.py refuses a URL without one
    return redis.Redis.from_url(url, **options)


def twin(client: redis.Redis, **changes) -> redis.Redis:
    """A client of the same server and database as ``client``, its connections made with ``changes``
    (decode_responses, timeouts…), in a pool of its own. A plain pool of the same connection class, as
    rq's scheduler makes one: a Sentinel's connections find the master through the pool in their
    kwargs, whatever pool holds them."""
    pool = client.connection_pool
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class,
                                                            **{**pool.connection_kwargs, **changes}))


def bounded(client: redis.Redis, seconds: float) -> redis.Redis:
    """``client``'s twin whose every call answers or fails within ``seconds``, once (no retry by
    redis-py): for a caller that must know within a bound that Redis does not answer (a slot's lease).
    Behind Sentinel, finding the master again after a failure also asks the Sentinels, on their own
    (longer) timeouts: the lease's watchdog keeps its deadline whatever a call takes."""
    return twin(client, socket_timeout=seconds, socket_connect_timeout=seconds, retry=Retry(NoBackoff(), 0))


def mark_transaction(pipe, token: str) -> None:
    """Inside MULTI: leave a mark that this transaction committed (checked by committed_despite)."""
    pipe.set(txn_key(token), 1, ex=60)


def committed_despite(err: redis.WatchError, client: redis.Redis, token: str) -> bool:
    """Whether a transaction that raised ``err`` committed after all.

    redis-py raises WatchError also when the connection fails while keys are WATCHed, and that
    includes losing EXEC's reply after Redis ran it. Retrying such a transaction would decide again
    on the state it produced (refusing a kill that was done, numbering an event twice); its mark
    says whether it ran. A real WatchError (a watched key changed) never committed."""
    if "occurred while watching" not in str(err):
        return False
    return bool(client.exists(txn_key(token)))


def watched_transaction(client: redis.Redis, stage):
    """WATCH, read, MULTI, write, EXEC, again from the start whenever a WATCHed key changed meanwhile.

    ``stage(pipe)`` WATCHes and reads (before MULTI) and returns (result, write); ``write(pipe)``
    queues the commands after MULTI. Returns the result of the attempt that committed, also when only
    its EXEC reply was lost (committed_despite)."""
    with client.pipeline(transaction=True) as pipe:
        while True:
            token, result = uuid.uuid4().hex, None
            try:
                result, write = stage(pipe)
                pipe.multi()
                write(pipe)
                mark_transaction(pipe, token)
                pipe.execute()
                return result
            except redis.WatchError as err:
                if committed_despite(err, client, token):
                    return result
                continue


def transition(client: redis.Redis, watched: list[str], decide, outbox):
    """Run a store script, and queue the events it causes (with an outbox, events.Outbox), in one MULTI/EXEC.

    ``decide(pipe)`` reads the WATCHed keys, raises the script's refusal if it would refuse, and
    returns (result, events, script, keys, args): what the script will do and which
    (slot, line, status, reason) events report it. WATCH makes the script, run at EXEC, meet the
    state decide read; if any of those keys changed meanwhile, nothing is written and we read again."""

    def stage(pipe):
        pipe.watch(*watched)
        result, events, script, keys, args = decide(pipe)
        events = [outbox.status(*e) for e in events] if outbox is not None else []
        if events:
            outbox.stage(pipe, events)

        def write(pipe):
            script(keys=keys, args=args, client=pipe)
            if events:
                outbox.write(pipe)

        return result, write

    try:
        return watched_transaction(client, stage)
    except redis.ResponseError as err:
        raise scripts.refusal(err) from None  # what decide did not foresee
