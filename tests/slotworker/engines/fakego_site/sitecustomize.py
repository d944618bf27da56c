"""Loaded at start-up by every Python process of a test gateway whose PYTHONPATH includes this folder.

With WHIN_TEST_FAKE_GO set, neonize's Go library is replaced by FakeGo before any client is made:
"reachable" (shows a QR code), "unreachable" (WhatsApp cannot be dialled), "hang" (shows one code and
then never returns, even when stopped: the FetchMe loop of ENGINE-NOTES). Nothing else changes.
"""

import os

_mode = os.environ.get("WHIN_TEST_FAKE_GO")
if _mode:
    import neonize.client

    from tests.slotworker.engines.fakego import FakeGo

    neonize.client.gocode = FakeGo(reachable=_mode != "unreachable", hang=_mode == "hang")
