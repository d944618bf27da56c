"""Opt-in smoke test with a real phone and real WhatsApp: what only a real phone can show.

Skipped unless WHIN_LIVE_PHONE is set to the phone's number (international, no '+'), on a host that
reaches WhatsApp. It prints a QR code in the terminal: scan it (WhatsApp > Linked devices), then send
any message to the linked number from another phone within two minutes; the test sends a message back
to that sender and waits for you to unlink the device from the phone.

    WHIN_LIVE_PHONE=34666123456 .venv/bin/python -m pytest -s tests/e2e/test_live_phone.py
"""

import os

import pytest
import qrcode

from tests.gateway import wait_for

LIVE_PHONE = os.environ.get("WHIN_LIVE_PHONE", "")
pytestmark = pytest.mark.skipif(not LIVE_PHONE, reason="set WHIN_LIVE_PHONE to run against real WhatsApp")


def test_scan_message_in_message_out_unlink(receiver, make_gateway):
    gw = make_gateway(WHIN_ENGINE="whatsmeow", WHIN_PAIRING_TIMEOUT="180", WHIN_WEBHOOK_URL=receiver.url)
    (slot_id,) = gw.provision(1)
    code = qrcode.QRCode(border=1)
    code.add_data(gw.enroll_qr_text(slot_id))
    code.print_ascii(invert=True)
    print(f"Scan with the phone {LIVE_PHONE} (WhatsApp > Linked devices > Link a device).", flush=True)
    wait_for(lambda: gw.detail(slot_id)["status"] == "active", timeout=180, interval=1, what="the scan")
    assert gw.detail(slot_id)["line"] == LIVE_PHONE
    print(f"Linked. Send a message to {LIVE_PHONE} from another phone.", flush=True)
    event = wait_for(lambda: receiver.delivered(type="message", line=LIVE_PHONE), timeout=120, interval=1,
                     what="a message in")[0]
    reply = gw.api("POST", "/send", json={"line": LIVE_PHONE, "to": event["from"], "text": "whinmovilla: OK"})
    assert reply.status_code == 200, reply.text
    print("Sent a reply. Now unlink the device from the phone (Linked devices > log out).", flush=True)
    wait_for(lambda: gw.detail(slot_id)["status"] == "available", timeout=180, interval=1, what="the unlink")
    assert not gw.slot_dir(slot_id).exists()
