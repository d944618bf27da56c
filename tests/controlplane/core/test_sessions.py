"""controlplane.core.sessions against a real PostgreSQL and a real folder: a slot's session record is
read back by any process given the same WHIN_SESSION_DB, and a wipe leaves no row of it, ours or
whatsmeow's, behind."""

import psycopg
import pytest

from controlplane.core import sessions
from controlplane.core.config import Settings

JID = "34600000001:7@s.whatsapp.net"


def whatsmeow_store(url: str) -> None:
    """The two whatsmeow tables a wipe touches, as whatsmeow's store makes them (others cascade alike)."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE whatsmeow_device (jid TEXT PRIMARY KEY, registration_id BIGINT)")
        connection.execute("CREATE TABLE whatsmeow_sessions (our_jid TEXT REFERENCES whatsmeow_device(jid) "
                           "ON DELETE CASCADE ON UPDATE CASCADE, their_id TEXT, session BYTEA)")
        for jid in (JID, "34600000002:3@s.whatsapp.net"):
            connection.execute("INSERT INTO whatsmeow_device VALUES (%s, 1)", (jid,))
            connection.execute("INSERT INTO whatsmeow_sessions VALUES (%s, 'x', 'k')", (jid,))


def rows(url: str, query: str) -> list:
    with psycopg.connect(url) as connection:
        return connection.execute(query).fetchall()


def test_without_a_session_db_the_record_lives_in_the_slot_folder(tmp_path):
    store = sessions.for_slot(Settings.from_env({}), "SLOT0001", tmp_path / "SLOT0001")
    assert isinstance(store, sessions.FolderSession) and store.read("sim-device") is None
    store.write("sim-device", {"id": "d1", "secret": "s"})
    path = tmp_path / "SLOT0001" / "sim-device.json"  # the name earlier versions wrote: kept
    assert path.stat().st_mode & 0o777 == 0o600
    assert store.read("sim-device") == {"id": "d1", "secret": "s"}
    store.wipe()
    assert not (tmp_path / "SLOT0001").exists()


def test_a_record_written_by_one_host_is_read_by_another(session_db, tmp_path):
    settings = Settings.from_env({"WHIN_SESSION_DB": session_db})
    here = sessions.for_slot(settings, "SLOT0001", tmp_path / "host-a" / "SLOT0001")
    there = sessions.for_slot(settings, "SLOT0001", tmp_path / "host-b" / "SLOT0001")
    assert isinstance(here, sessions.DatabaseSession) and there.read("device") is None
    here.write("device", {"jid": {"User": "34600000001"}, sessions.STORE_JID: JID})
    here.write("device", {"jid": {"User": "34600000001", "Device": 7}, sessions.STORE_JID: JID})  # rewritten
    assert there.read("device") == {"jid": {"User": "34600000001", "Device": 7}, sessions.STORE_JID: JID}
    assert sessions.for_slot(settings, "SLOT0002", tmp_path).read("device") is None  # per slot
    assert not (tmp_path / "host-a").exists()  # nothing on disk


def test_a_wipe_deletes_the_slots_rows_and_its_whatsmeow_device_and_nothing_else(session_db, tmp_path):
    whatsmeow_store(session_db)
    settings = Settings.from_env({"WHIN_SESSION_DB": session_db})
    mine = sessions.for_slot(settings, "SLOT0001", tmp_path)
    mine.write("device", {"jid": {"User": "34600000001"}, sessions.STORE_JID: JID})
    other = sessions.for_slot(settings, "SLOT0002", tmp_path)
    other.write("device", {"jid": {"User": "34600000002"}, sessions.STORE_JID: "34600000002:3@s.whatsapp.net"})
    mine.wipe()
    assert rows(session_db, "SELECT slot_id FROM whin_slot_session") == [("SLOT0002",)]
    assert rows(session_db, "SELECT jid FROM whatsmeow_device") == [("34600000002:3@s.whatsapp.net",)]
    assert rows(session_db, "SELECT our_jid FROM whatsmeow_sessions") == [("34600000002:3@s.whatsapp.net",)]
    mine.wipe()  # again (a retried teardown): nothing left, no error


def test_an_unreachable_database_is_an_error_never_no_session(tmp_path):
    url = f"postgresql://whin:hunter2@/nowhere?host={tmp_path}"  # no server listens there
    store = sessions.for_slot(Settings.from_env({"WHIN_SESSION_DB": url}), "SLOT0001", tmp_path)
    for call in (lambda: store.read("device"), lambda: store.write("device", {}), store.wipe):
        with pytest.raises(sessions.SessionStoreUnavailable) as raised:
            call()
        assert "hunter2" not in str(raised.value)
