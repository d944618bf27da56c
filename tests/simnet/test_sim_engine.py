"""The sim engine against a real simnet server: events by source, offline notices, media downloads
and the LID store."""

import base64
import threading

import pytest
from werkzeug.serving import make_server

from controlplane.core import slotfiles
from controlplane.core.config import Settings
from slotworker.engines import sim as sim_module
from slotworker.engines.base import EngineUnavailable, MediaRefused
from slotworker.engines.sim import CREDENTIALS_FILE, SimEngine
from tests.gateway import free_port, wait_for
from tests.simnet.server import SimServer
from tests.slotworker.engines.harness import Recorder

LINE, PHONE = "34666123456", "34611222333"
PLAIN = bytes(range(256)) * 2000 + b"end"  # ~512 KB: several download chunks


@pytest.fixture
def sim(tmp_path):
    server = SimServer(tmp_path / "simnet")
    yield server
    server.close()


def engine_for(sim: SimServer, tmp_path, recorder, env: dict | None = None, link: bool = True) -> SimEngine:
    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_SIMNET_PORT": str(sim.port), **(env or {})})
    slot_dir = tmp_path / "slots" / "SLOT0001"
    slot_dir.mkdir(parents=True, exist_ok=True)
    if link:
        slotfiles.write_private_json(slot_dir / CREDENTIALS_FILE, sim.link(LINE))
    return SimEngine("SLOT0001", slot_dir, settings, recorder)


@pytest.fixture
def connected(sim, tmp_path):
    recorder = Recorder()
    engine = engine_for(sim, tmp_path, recorder)
    engine.connect()
    recorder.wait("on_connected")
    yield engine, recorder
    engine.stop()


def media_message(sim: SimServer, engine: SimEngine, recorder: Recorder, plain: bytes = PLAIN,
                  mimetype: str = "application/pdf", **extra) -> dict:
    sim.ok("/messages", {"from": PHONE, "to": LINE, "media": {"data": base64.b64encode(plain).decode(),
                                                              "mimetype": mimetype, **extra}})
    return recorder.wait("on_event")[-1][1]["Message"]


# --- events ---

def test_events_reach_on_event_by_source_and_unselected_sources_do_not(connected, sim):
    engine, recorder = connected
    sim.ok(f"/phones/{PHONE}/typing", {"line": LINE, "state": "composing"})  # presence: off by default
    sent = sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "hola"})
    sim.ok(f"/phones/{PHONE}/call", {"line": LINE})
    recorder.wait("on_event", 2)
    assert [source for source, _ in recorder.of("on_event")] == ["Message", "CallOffer"]
    assert recorder.of("on_event")[0][1]["Info"]["ID"] == sent["id"]


def test_presence_is_forwarded_when_whin_events_names_it(sim, tmp_path):
    recorder = Recorder()
    engine = engine_for(sim, tmp_path, recorder, {"WHIN_EVENTS": "presence"})
    engine.connect()
    recorder.wait("on_connected")
    sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "hola"})
    sim.ok(f"/phones/{PHONE}/typing", {"line": LINE, "state": "recording"})
    (source, payload), = recorder.wait("on_event")
    engine.stop()
    assert (source, payload["Media"]) == ("ChatPresence", "AUDIO")


# --- offline ---

def test_a_ban_is_reported_and_the_engine_comes_back_once_it_expired(connected, sim):
    engine, recorder = connected
    sim.ok(f"/phones/{LINE}/ban", {"seconds": 1})
    ((reason, details),) = recorder.wait("on_offline")
    assert (reason, details) == ("temporary_ban", {"expires_in": 1, "ban_code": "sent_too_many_same_message"})
    recorder.wait("on_connected", 2, timeout=10)
    sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "de vuelta"})
    assert recorder.wait("on_event")[-1][1]["Message"]["conversation"] == "de vuelta"


def test_a_replaced_session_is_reported_once_and_not_fought(connected, sim, tmp_path):
    engine, recorder = connected
    sim.ok(f"/phones/{LINE}/replace")
    assert recorder.wait("on_offline") == [("stream_replaced", {})]
    wait_for(lambda: not any(t.name == "sim-SLOT0001" for t in threading.enumerate()), what="the session to end")
    assert len(recorder.of("on_connected")) == 1 and engine.has_credentials()


def test_an_outdated_client_is_reported_and_retries_slowly(sim, tmp_path, monkeypatch):
    monkeypatch.setattr(sim_module, "OUTDATED_RETRY_SECONDS", 0.3)
    sim.ok(f"/phones/{LINE}/outdated", {"outdated": True})
    recorder = Recorder()
    engine = engine_for(sim, tmp_path, recorder)
    engine.connect()
    assert recorder.wait("on_offline") == [("client_outdated", {})]
    sim.ok(f"/phones/{LINE}/outdated", {"outdated": False})
    recorder.wait("on_connected", timeout=5)
    engine.stop()
    assert len(recorder.of("on_offline")) == 1  # said once, not at every retry


# --- download ---

def test_download_streams_the_decrypted_file(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder, filename="contrato.pdf")
    download = engine.download(message, max_bytes=10**7)
    assert download.size == len(PLAIN)
    chunks = list(download.chunks)
    assert b"".join(chunks) == PLAIN and len(chunks) > 1


def test_download_works_while_disconnected(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder, mimetype="image/jpeg")
    engine.stop()
    assert b"".join(engine.download(message, 10**7).chunks) == PLAIN


def test_a_file_over_the_limit_is_refused_before_it_is_fetched(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder)
    sim.network.media.forget()  # a fetch would say media_gone
    with pytest.raises(MediaRefused) as caught:
        engine.download(message, max_bytes=len(PLAIN) - 1)
    assert caught.value.code == "media_too_large"


def test_a_file_longer_than_its_message_says_is_cut_off_at_the_limit(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder)
    message["documentMessage"]["fileLength"] = "10"
    with pytest.raises(MediaRefused) as caught:
        b"".join(engine.download(message, max_bytes=1000).chunks)
    assert caught.value.code == "media_too_large"


def test_a_file_that_fails_its_checks_never_completes(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder)
    message["documentMessage"]["fileSHA256"] = base64.b64encode(b"\0" * 32).decode()
    got = []
    with pytest.raises(MediaRefused) as caught:
        for chunk in engine.download(message, 10**7).chunks:
            got.append(chunk)
    assert caught.value.code == "media_corrupt"
    assert len(b"".join(got)) < len(PLAIN)  # the last bytes were held back


def test_forgotten_media_is_gone(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder)
    sim.network.media.forget()
    with pytest.raises(MediaRefused) as caught:
        engine.download(message, 10**7)
    assert caught.value.code == "media_gone"


def test_download_fetches_only_from_simnet_whatever_the_url_says(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder)
    message["documentMessage"]["URL"] = "http://127.0.0.1:9/elsewhere"
    assert b"".join(engine.download(message, 10**7).chunks) == PLAIN
    for direct_path in ("http://169.254.169.254/latest", "//evil.example/x", "mms/document/x", None):
        crafted = {"documentMessage": {**message["documentMessage"], "directPath": direct_path}}
        with pytest.raises(MediaRefused) as caught:
            engine.download(crafted, 10**7)
        assert caught.value.code == "no_media"


@pytest.mark.parametrize("message", [{"conversation": "hola"}, {"imageMessage": {"directPath": "/mms/image/x"}},
                                     {"imageMessage": {"mediaKey": "bm90IDMyIGJ5dGVz", "directPath": "/mms/image/x"}},
                                     None])
def test_messages_without_a_usable_reference_are_no_media(connected, message):
    engine, _ = connected
    with pytest.raises(MediaRefused) as caught:
        engine.download(message, 10**7)
    assert caught.value.code == "no_media"


def test_download_with_simnet_unreachable_is_engine_unavailable(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder)
    engine.base_url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineUnavailable):
        engine.download(message, 10**7)


# --- the LID store ---

def test_phone_for_lid_asks_the_networks_lid_store(connected, sim):
    engine, _ = connected
    lid = sim.ok("/phones", {"number": PHONE})["lid"]
    assert engine.phone_for_lid(lid) == PHONE
    assert engine.phone_for_lid("123456789012345") is None
    assert engine.phone_for_lid("../../health") is None
    engine.base_url = f"http://127.0.0.1:{free_port()}"
    assert engine.phone_for_lid(lid) == PHONE  # a number once known is kept: no second question
    other = sim.ok("/phones", {"number": "34611000999"})["lid"]
    assert engine.phone_for_lid(other) is None  # simnet unreachable: unknown, not an error


def test_phone_for_lid_answers_none_when_simnet_hangs(connected, sim):
    engine, _ = connected
    silent = make_server("127.0.0.1", 0, lambda environ, start: threading.Event().wait(5) or [], threaded=True)
    threading.Thread(target=silent.serve_forever, daemon=True).start()
    engine.base_url = f"http://127.0.0.1:{silent.server_port}"
    assert engine.phone_for_lid(sim.ok("/phones", {"number": PHONE})["lid"]) is None
    silent.shutdown()


class _FailingOnce(Recorder):
    """A slot whose event handler has a bug the first time."""

    failed = False

    def on_event(self, source, payload):
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in a callback")
        self.events.append(("on_event", source, payload))


def test_a_callback_that_raises_does_not_end_the_session(sim, tmp_path):
    recorder = _FailingOnce()
    engine = engine_for(sim, tmp_path, recorder)
    engine.connect()
    recorder.wait("on_connected")
    sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "uno"})
    wait_for(lambda: recorder.failed, what="the failing callback")
    sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "dos"})
    recorder.wait_event("Message", lambda p: p["Message"].get("conversation") == "dos", timeout=15)
    engine.stop()
