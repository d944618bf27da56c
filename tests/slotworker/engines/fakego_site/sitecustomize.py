"""Loaded at start-up by every Python process of a test gateway whose PYTHONPATH includes this folder.

With WHIN_TEST_FAKE_GO set, neonize's Go library is replaced by FakeGo as soon as ``neonize.client``
is imported (and not before: a slot worker chooses what it imports first, see slotworker/lean.py):
"reachable" (shows a QR code), "unreachable" (WhatsApp cannot be dialled), "hang" (shows one code and
then never returns, even when stopped: the FetchMe loop of ENGINE-NOTES). Nothing else changes.
"""

import importlib.abc
import importlib.machinery
import os
import sys

_MODE = os.environ.get("WHIN_TEST_FAKE_GO")


class _ReplaceGoLibrary(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "neonize.client":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            from tests.slotworker.engines.fakego import FakeGo

            module.gocode = FakeGo(reachable=_MODE != "unreachable", hang=_MODE == "hang")

        spec.loader.exec_module = exec_module
        return spec


if _MODE:
    sys.meta_path.insert(0, _ReplaceGoLibrary())
