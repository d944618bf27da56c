"""Logs as JSON lines on stderr (supervisord writes them to $WHIN_DATA_DIR/logs/<program>.log).

Each line: ts, level, logger, event (the message), and slot in a slot worker's log. Message content
never reaches a log: the code logs event ids, slot ids and outcomes, and masks phone numbers.
"""

import json
import logging
import re
import sys
import time

# A line in a URL path (/kill/34666123456): all but its last three digits are masked in logs.
_LINE_IN_PATH = re.compile(r"(?<=/)\d{4,12}(?=\d{3}\b)")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = record.getMessage()
        if record.name == "gunicorn.access":
            event = _LINE_IN_PATH.sub("…", event)
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": event,
        }
        slot = getattr(record, "slot", None)
        if slot:
            entry["slot"] = slot
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        # ASCII only: a raw U+0085 or U+2028 from a request path would split the line for many readers.
        return json.dumps(entry)


def configure(level: int = logging.INFO, slot: str | None = None) -> None:
    """JSON lines for this process; ``slot`` stamps every record of a slot worker with its id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    if slot:
        def stamp(record: logging.LogRecord) -> bool:
            record.slot = slot
            return True

        handler.addFilter(stamp)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
