"""Chaos: the receiver goes down for a long while and delivery workers keep dying; nothing is lost.

Marked slow. CI runs it at a smaller size (an 8 s outage when CI is set); WHIN_CHAOS_SECONDS sets the
receiver's outage (default 20; use 180 or more for "down for minutes").
"""

import os
import random
import signal
import threading
import time

import pytest

from tests.helpers import SENDER, delivered_message

OUTAGE = float(os.environ.get("WHIN_CHAOS_SECONDS", "8" if os.environ.get("CI") else "20"))


@pytest.mark.slow
def test_receiver_down_and_workers_killed_repeatedly_loses_nothing(fresh_gateway, own_receiver, new_line):
    gw, receiver = fresh_gateway, own_receiver
    slots = gw.provision(2)
    lines = [new_line() for _ in slots]
    for slot_id, line in zip(slots, lines, strict=True):
        gw.enroll(slot_id, line)
    receiver.stop()
    texts = []
    stop = threading.Event()

    def kill_delivery_workers():
        rng = random.Random(7)
        while not stop.wait(rng.uniform(1, 3)):
            name = f"delivery-{rng.randint(1, 2)}"
            pid = gw.supervisor.process_info_by_name(name)["pid"]
            if pid:
                os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_delivery_workers)
    killer.start()
    try:
        deadline = time.monotonic() + OUTAGE
        i = 0
        while time.monotonic() < deadline:
            line = lines[i % 2]
            text = f"chaos {i}"
            gw.phone_sends(SENDER, line, text)
            texts.append((line, text))
            i += 1
            time.sleep(0.1)
        receiver.start(receiver.port)
        time.sleep(3)  # the workers keep dying for a while after the receiver is back
    finally:
        stop.set()
        killer.join()
    for line, text in texts:
        delivered_message(receiver, line, text, timeout=90)
