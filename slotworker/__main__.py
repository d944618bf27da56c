"""python -m slotworker <ID>: one slot, one engine, under supervisord.

Exit codes are what supervisord understands: 0 when the worker is done on purpose (not restarted:
``exitcodes=0``), anything else when it failed (restarted). Never writes data to stdout: an engine's
native side may print there (ENGINE-NOTES), so stdout is a log, not a channel.
"""

import logging
import os
import signal
import sys
import threading
import time

from slotworker import lean

# Owner-only for every file this process creates, whatsmeow's own session database (created by Go,
# with its -wal and -shm files) included: credentials are readable by the gateway's user alone.
os.umask(0o077)
lean.defer_unused(os.environ.get("WHIN_ENGINE", "whatsmeow"))  # before neonize is imported: see lean.py

from controlplane.core import ids, lifeline, logs  # noqa: E402 - after the deferral above, on purpose
from controlplane.core.config import Settings  # noqa: E402
from controlplane.core.store import SlotStore  # noqa: E402
from controlplane.messaging.events import EventPublisher  # noqa: E402
from slotworker.engines import engine_class  # noqa: E402
from slotworker.runner import SlotRunner  # noqa: E402

CRASH_PAUSE_SECONDS = 1  # startsecs=0 restarts a crash at once; this keeps a crash loop slow


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m slotworker <SLOT_ID>", file=sys.stderr)
        return 2
    lifeline.end_with_supervisord()  # first: a supervisord that dies while this one starts is a stop too
    slot_id = ids.parse_slot_id(argv[1])
    logs.configure(slot=slot_id)  # before neonize is imported: its basicConfig then leaves ours alone
    settings = Settings.from_env()
    runner = SlotRunner(slot_id, settings, SlotStore.from_url(settings.redis_url), engine_class(settings.engine),
                        EventPublisher(settings))

    def stop(signum, _frame):
        # On a thread of its own: the handler interrupts the main thread anywhere, possibly inside an
        # Event's wait holding the lock that request_stop's set() takes (threading's locks are not
        # reentrant), and logging from a handler can meet a lock held the same way.
        threading.Thread(target=runner.request_stop, args=(signum,), name="stop", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return runner.run()
    except Exception:
        logging.getLogger(__name__).exception("slot %s: worker failed", slot_id)
        # Even a crash waits for the inbound events the engine handed over (Redis away, say): whatsmeow
        # has acknowledged them, and exiting now would lose them. A stop request bounds the wait.
        runner.finish_inbound()
        time.sleep(CRASH_PAUSE_SECONDS)
        return 1


if __name__ == "__main__":
    code = main(sys.argv)
    logging.shutdown()
    # os._exit, not sys.exit: neonize runs Go's connect on a non-daemon thread that may never return
    # (ENGINE-NOTES: FetchMe loops), and the interpreter would wait for it forever.
    os._exit(code)
