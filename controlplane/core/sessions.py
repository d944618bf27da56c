"""Where a slot's session record lives: its folder on this host, or PostgreSQL so any host can resume it.

A session record is what an engine keeps to reconnect without a new QR: the sim engine's linked device
(its id, secret and line), or, for whatsmeow, which device of whatsmeow's own store is this slot's (its
JID; the keys themselves live in whatsmeow's store, a sqlite file in the folder or the same PostgreSQL).

- ``FolderSession``: ``WHIN_DATA_DIR/slots/<ID>/<name>.json``, owner-only (slotfiles). The slot is
  pinned to the host that holds the folder.
- ``DatabaseSession`` (``WHIN_SESSION_DB``, a PostgreSQL URL): one row per record in ``whin_slot_session``.
  Any host can read it, so a slot can move. A wipe deletes its rows, and whatsmeow's device row for the
  JID it names (whatsmeow's other tables cascade from it), even when the logout that should have
  deleted them failed: a kill leaves nothing behind.

An unreachable database raises ``SessionStoreUnavailable``: never taken for "no session", which would
release a line that still has one.
"""

import contextlib
import json
from pathlib import Path

from controlplane.core import slotfiles

TABLE = "whin_slot_session"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    slot_id text NOT NULL,
    name text NOT NULL,
    record jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_id, name)
)"""
CONNECT_TIMEOUT_SECONDS = 5
# The record key that names a device row of whatsmeow's store (its JID as whatsmeow writes it).
STORE_JID = "store_jid"


class SessionStoreUnavailable(Exception):
    """The session database did not answer: the slot cannot tell whether it has a session."""


class FolderSession:
    def __init__(self, slot_dir: Path):
        self.slot_dir = slot_dir

    def _path(self, name: str) -> Path:
        return self.slot_dir / f"{name}.json"

    def read(self, name: str) -> dict | None:
        return slotfiles.read_json(self._path(name))

    def write(self, name: str, record: dict) -> None:
        slotfiles.write_private_json(self._path(name), record)

    def wipe(self) -> None:
        slotfiles.wipe(self.slot_dir)


class DatabaseSession:
    def __init__(self, url: str, slot_id: str):
        self.url = url
        self.slot_id = slot_id

    def _connect(self):
        import psycopg  # only where WHIN_SESSION_DB is set: a slot on files never loads it

        try:
            connection = psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_SECONDS, autocommit=True)
        except psycopg.OperationalError as err:
            # The driver's message can carry the URL's password: only the kind of failure is said.
            raise SessionStoreUnavailable(f"the session database did not answer ({type(err).__name__})") from None
        return connection

    @contextlib.contextmanager
    def _cursor(self):
        import psycopg

        connection = self._connect()
        try:
            with connection.cursor() as cursor:
                yield cursor
        except psycopg.OperationalError as err:
            raise SessionStoreUnavailable(f"the session database failed ({type(err).__name__})") from None
        finally:
            connection.close()

    def read(self, name: str) -> dict | None:
        with self._cursor() as cursor:
            ensure_schema(cursor)
            cursor.execute(f"SELECT record FROM {TABLE} WHERE slot_id = %s AND name = %s", (self.slot_id, name))
            row = cursor.fetchone()
        return row[0] if row else None

    def write(self, name: str, record: dict) -> None:
        with self._cursor() as cursor:
            ensure_schema(cursor)
            cursor.execute(
                f"INSERT INTO {TABLE} (slot_id, name, record) VALUES (%s, %s, %s) "
                "ON CONFLICT (slot_id, name) DO UPDATE SET record = EXCLUDED.record, updated_at = now()",
                (self.slot_id, name, json.dumps(record)))

    def wipe(self) -> None:
        with self._cursor() as cursor:
            ensure_schema(cursor)
            cursor.execute(f"DELETE FROM {TABLE} WHERE slot_id = %s RETURNING record", (self.slot_id,))
            store_jids = [row[0][STORE_JID] for row in cursor.fetchall() if row[0].get(STORE_JID)]
            cursor.execute("SELECT to_regclass('whatsmeow_device') IS NOT NULL")
            if store_jids and cursor.fetchone()[0]:
                cursor.execute("DELETE FROM whatsmeow_device WHERE jid = ANY(%s)", (store_jids,))


_schema_made: set[str] = set()  # the databases this process has made the table in


def ensure_schema(cursor) -> None:
    """The table, once per process and database. Two hosts making it at the same moment: one of them
    gets a unique violation on the catalog, which means it exists."""
    import psycopg

    url = cursor.connection.info.dsn
    if url in _schema_made:
        return
    with contextlib.suppress(psycopg.errors.UniqueViolation):
        cursor.execute(SCHEMA)
    _schema_made.add(url)


def for_slot(settings, slot_id: str, slot_dir: Path):
    """The slot's session record store, as WHIN_SESSION_DB says."""
    url = getattr(settings, "session_db", "")
    return DatabaseSession(url, slot_id) if url else FolderSession(slot_dir)
