"""controlplane.supervisor: a supervisord that stops answering is an error within the timeout, not a hang."""

import socket
import threading
import time

import pytest

from controlplane.core.errors import ServiceUnavailable
from controlplane.supervisor import Supervisor


def test_a_supervisord_that_never_answers_is_unavailable_within_the_timeout(tmp_path):
    path = tmp_path / "stalled.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()  # and say nothing
    client = Supervisor(path, "whin", "pw", tmp_path / "conf.d", tmp_path / "logs", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as unavailable:
        client.slot_states()
    assert unavailable.value.code == "supervisor_unavailable"
    assert time.monotonic() - started < 5
    listener.close()


def test_no_supervisord_at_all_is_unavailable_at_once(tmp_path):
    client = Supervisor(tmp_path / "none.sock", "whin", "pw", tmp_path / "conf.d", tmp_path / "logs")
    with pytest.raises(ServiceUnavailable):
        client.slot_states()
