"""The command queue: what the control plane asks of a slot's worker, its answers, and the reconciler's pokes.

A mixin of SlotStore (store.py), which gives it ``self.redis``: callers keep one store object.
The commands themselves (op names, fields) are the slot protocol's business, not this queue's.
"""

import json
import threading
import time
import uuid

import redis as redis_py  # not `redis`: the class's attribute of that name is the store's client

from controlplane.core.connection import twin
from controlplane.core.keys import NUDGE, command_key, reply_dropped_key, reply_key, wake_key

REPLY_TTL = 60  # seconds an answer nobody waits for any more stays in Redis
WAKE_TTL = 10  # a poke its worker never read (it had already ended) is gone by its next start
_BINARY_LOCK = threading.Lock()


class CommandQueue:
    redis = None  # set by SlotStore
    _binary = None  # _binary_redis(): the same server and database, answering bytes

    def push_command(self, slot_id: str, command: dict) -> str:
        """Queue a command; returns it as queued, for withdraw_command."""
        raw = json.dumps(command)
        self.redis.rpush(command_key(slot_id), raw)
        return raw

    def withdraw_command(self, slot_id: str, raw: str) -> bool:
        """Take back a command the worker has not popped yet; False when it already took it."""
        return bool(self.redis.lrem(command_key(slot_id), 1, raw))

    def wait_command(self, slot_id: str, timeout: float) -> dict | None:
        """The worker's wait: its next command, or None after ``timeout`` or when ``wake_worker`` poked
        it. The poke is listed first: a stop does not wait behind a backlog of commands."""
        item = self.redis.blpop([wake_key(slot_id), command_key(slot_id)], timeout=timeout)
        if item is None or item[0] == wake_key(slot_id):
            return None
        return json.loads(item[1])

    def wake_worker(self, slot_id: str) -> None:
        """End the worker's wait_command now (its own stop, from another of its threads). A poke that
        finds no wait is harmless: the worker only looks again at why it should go on."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(wake_key(slot_id), 1)
            pipe.expire(wake_key(slot_id), WAKE_TTL)
            pipe.execute()

    def clear_wake(self, slot_id: str) -> None:
        """A previous run's poke, if any: gone before the worker's first wait."""
        self.redis.delete(wake_key(slot_id))

    def ask(self, slot_id: str, command: dict, timeout: float) -> tuple[dict | None, bool]:
        """Send a command that expects an answer; wait for it. Returns (answer, taken): with no answer
        in time the command is withdrawn if still unread, and ``taken`` says whether the worker had it."""
        answer, taken, _ = self.ask_stream(slot_id, command, timeout)
        return answer, taken

    def ask_stream(self, slot_id: str, command: dict, timeout: float) -> tuple[dict | None, bool, str]:
        """``ask``, returning also the reply list's id: a command with several answers (a download's
        chunks) has the rest read from there, and the list dropped once done."""
        request_id = uuid.uuid4().hex
        raw = self.push_command(slot_id, {**command, "reply": request_id, "deadline": time.time() + timeout})
        answer = self.wait_reply(request_id, timeout=timeout)
        if answer is not None:
            return answer, True, request_id
        return None, not self.withdraw_command(slot_id, raw), request_id

    def drop_replies(self, request_id: str) -> None:
        """Answers nobody will read (a download whose client went away): gone now, not at their TTL,
        and marked so that their writer stops sending more (push_frame says so)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(reply_key(request_id))
            pipe.set(reply_dropped_key(request_id), 1, ex=REPLY_TTL)
            pipe.execute()

    def push_reply(self, request_id: str, reply: dict) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(reply_key(request_id), json.dumps(reply))
            pipe.expire(reply_key(request_id), REPLY_TTL)
            pipe.execute()

    def push_frame(self, request_id: str, frame: bytes) -> int | None:
        """A binary answer (a download's part, protocol.media_frame) after a JSON one. Returns how many
        answers now wait unread, or None when the reader dropped the list: send no more."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.exists(reply_dropped_key(request_id))
            pipe.rpush(reply_key(request_id), frame)
            pipe.expire(reply_key(request_id), REPLY_TTL)
            dropped, waiting, _ = pipe.execute()
        if dropped:
            self.redis.delete(reply_key(request_id))  # the frame pushed in the same breath
            return None
        return waiting

    def unread_frames(self, request_id: str) -> int | None:
        """What push_frame returns, without pushing: the writer's way to wait for a slow reader."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.exists(reply_dropped_key(request_id))
            pipe.llen(reply_key(request_id))
            dropped, waiting = pipe.execute()
        return None if dropped else waiting

    def wait_frame(self, request_id: str, timeout: float) -> bytes | None:
        item = self._binary_redis().blpop([reply_key(request_id)], timeout=timeout)
        return item[1] if item else None

    def _binary_redis(self) -> redis_py.Redis:
        """The store's Redis without decoding to str: frames are bytes (the same server and database)."""
        with _BINARY_LOCK:  # two first downloads at once must not each open a pool
            if self._binary is None:
                self._binary = twin(self.redis, decode_responses=False)
            return self._binary

    def wait_reply(self, request_id: str, timeout: float) -> dict | None:
        item = self.redis.blpop([reply_key(request_id)], timeout=timeout)
        return json.loads(item[1]) if item else None

    def wait_for_nudge(self, timeout: float, own: str | None = None) -> bool:
        """Until a poke or ``timeout``; ``own``: a host agent's own poke too (hosts.host_nudge_key)."""
        woke = self.redis.blpop([own, NUDGE] if own else [NUDGE], timeout=timeout)
        if woke:
            self.redis.delete(woke[0])  # several pokes mean one more pass, not several
        return bool(woke)
