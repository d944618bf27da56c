"""Keep out of a slot's memory the packages that neonize imports but a slot never uses.

neonize 0.5.2 imports, unconditionally: linkpreview (with BeautifulSoup and soupsieve) for link
previews, segno for its default QR printer (we install our own QR callback), httpx for async
downloads, tqdm for the progress bar of downloading its Go library, and requests (with urllib3,
charset_normalizer, idna, certifi) to fetch URLs we never give it. A slot uses none of them, yet each
of the (up to hundreds of) slot processes would hold them in private memory. The sim engine uses
requests itself (its exception classes too), so requests is deferred for the whatsmeow engine only.

``defer(name)`` puts a placeholder in sys.modules. Whatever neonize takes from it (``link_preview``,
``segno.make_qr``, ``httpx.AsyncClient``, ``tqdm``) is a stand-in that imports the real package the
first time it is called and then behaves as the real thing: nothing breaks, it only costs later.
Measured by bench/slot_memory.py.
"""

import ctypes
import ctypes.util
import gc
import importlib
import sys
import types

UNUSED_BY_SLOTS = ("linkpreview", "segno", "httpx", "tqdm")
UNUSED_BY_ENGINE = {"whatsmeow": ("requests",)}


class _Deferred(types.ModuleType):
    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        name = self.__name__

        def call(*args, **kwargs):
            return getattr(_real(name), attr)(*args, **kwargs)

        call.__name__ = attr
        call.__qualname__ = f"{name}.{attr} (deferred)"
        return call


def _real(name: str) -> types.ModuleType:
    module = sys.modules.get(name)
    if isinstance(module, _Deferred):
        del sys.modules[name]
        module = importlib.import_module(name)
    return module


def defer(name: str) -> None:
    if name not in sys.modules:
        sys.modules[name] = _Deferred(name)


def release_startup_memory() -> None:
    """Once started: collect start-up garbage and hand the freed heap back to the OS (glibc keeps it).
    What is left lives as long as the worker: frozen, a full collection never walks it again (the
    engine's modules are hundreds of thousands of objects; each walk was a pause in an event's path)."""
    gc.collect()
    gc.freeze()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


def defer_unused(engine: str) -> None:
    for name in UNUSED_BY_SLOTS + UNUSED_BY_ENGINE.get(engine, ()):
        defer(name)
