"""Every Redis key of the gateway, spelled once: a constant or a function per concept, as rq does.

Keys (prefix ``whin:``):
  whin:slots             SET   every slot id ever provisioned (ids are never reused)
  whin:slot:<ID>         HASH  status, line, pairing, pair_deadline, qr, qr_expires_at, connected, teardown,
                               pair_error (why the last pairing ended without a phone), enrollment (an
                               id for the line's current link to this slot: set by pairing, gone once
                               it ends, so that an enrollment can end, and be reported ended, once)
  whin:lines             HASH  line -> slot id, for every enrolled line
  whin:cmd:<ID>          LIST  commands for the slot's worker (JSON), popped by the worker
  whin:wake:<ID>         LIST  the slot worker's own poke: ends its wait for a command at once (a stop, an
                               end from another thread); written by that worker only, expires in seconds
  whin:reconciler:nudge  LIST  a poke that wakes the reconciler before its next tick
  whin:seq:<line>        INT   the line's event counter (the envelope's "seq")
  whin:backlog:<hash>    LIST  a line's events waiting for delivery, in seq order ("<event id> <sealed
                               envelope>"); appended in the step that numbers them, each removed once
                               delivered or handed to a retry job of its own (messaging/backlog.py).
                               <hash> names the line (or a slot, for its events without one) without
                               spelling its number
  whin:drain:<hash>      STR   the id of the rq job queued to deliver that backlog, from its queueing
                               until that job starts (then new events queue the next one)
  whin:queued:<event id> STR   the event is in a backlog or a retry job: handed over again, it is not
                               queued twice (expires after WHIN_DELIVERY_MAX_AGE)
  whin:reply:<uuid>      LIST  a slot worker's answer to one command (send), expires in a minute
  whin:rate:<line>       STR   the line's send-rate state (GCRA: the theoretical arrival time)
  whin:msg:<line>:<hash> STR   the message index (messaging/message_index.py): one message of the line's
                               chats, sealed metadata (author, own or not, time, text or not), never its
                               content; <hash> hides the chat and the id; expires (WHIN_MESSAGE_INDEX_TTL)
  whin:stats             HASH  counters: delivered, retried, given_up, sent, ... (no content, no numbers)
  whin:stats:latency     HASH  delivery latency histogram: bucket upper bound -> count, plus "sum"
  whin:slotstats:<ID>    HASH  per-slot counters: worker starts, reconnects
  whin:webhook:hold      STR   unix time before which no delivery is attempted (the receiver's Retry-After)
  whin:lease:<ID>        STR   the slot's lease: "<host> <run> <random>" of the worker serving it, with a TTL it
                               renews (slotworker/lease.py): never two hosts at once for one slot
  whin:txn:<uuid>        STR   written by one MULTI/EXEC, for a minute: tells a lost EXEC reply from a
                               transaction that never ran (see store.committed_despite)

The delivery queues themselves live under rq's own keys (rq:queue:deliveries, rq:queue:deliveries-2, ...,
rq:job:<id>, ...).
The Lua scripts (scripts.py) never spell a key: every key they touch comes to them in KEYS.
Standard library only: the slot worker imports it.
"""

PREFIX = "whin:"

SLOTS = PREFIX + "slots"
LINES = PREFIX + "lines"
NUDGE = PREFIX + "reconciler:nudge"
STATS = PREFIX + "stats"
LATENCY = PREFIX + "stats:latency"
WEBHOOK_HOLD = PREFIX + "webhook:hold"


def slot_key(slot_id: str) -> str:
    return f"{PREFIX}slot:{slot_id}"


def lease_key(slot_id: str) -> str:
    return f"{PREFIX}lease:{slot_id}"


def lease_host(token: str | None) -> str | None:
    """The host whose worker holds a lease, from its token ("<host> <run> <random>"); None: nobody's."""
    return token.split(" ", 1)[0] if token else None


def command_key(slot_id: str) -> str:
    return f"{PREFIX}cmd:{slot_id}"


def wake_key(slot_id: str) -> str:
    return f"{PREFIX}wake:{slot_id}"


def slot_stats_key(slot_id: str) -> str:
    return f"{PREFIX}slotstats:{slot_id}"


def seq_key(line: str) -> str:
    return f"{PREFIX}seq:{line}"


def backlog_key(backlog: str) -> str:
    return f"{PREFIX}backlog:{backlog}"


BACKLOG_PATTERN = PREFIX + "backlog:*"


def token_of_backlog(key: str) -> str:
    return key.removeprefix(f"{PREFIX}backlog:")


def drain_key(backlog: str) -> str:
    return f"{PREFIX}drain:{backlog}"


def queued_key(event_id: str) -> str:
    return f"{PREFIX}queued:{event_id}"


def rate_key(line: str) -> str:
    return f"{PREFIX}rate:{line}"


def message_key(line: str, id_hash: str) -> str:
    return f"{PREFIX}msg:{line}:{id_hash}"


def reply_key(request_id: str) -> str:
    return f"{PREFIX}reply:{request_id}"


def reply_dropped_key(request_id: str) -> str:
    """Set when the reader of a reply list gave up on it: the writer stops sending."""
    return f"{PREFIX}reply-dropped:{request_id}"


def txn_key(token: str) -> str:
    return f"{PREFIX}txn:{token}"
