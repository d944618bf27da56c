"""The engines a gateway can run (WHIN_ENGINE), and the library each cannot run without.

Here, in core, so that the API can tell an engine is missing (a clear 503) and config can check a
name, without importing slotworker (whose registry maps each name to its class) or a Go library.
"""

from importlib.util import find_spec

# name -> the package the engine cannot run without
REQUIRES = {"sim": "requests", "whatsmeow": "neonize"}


def is_installed(name: str) -> bool:
    """Whether the engine can run here, without importing it (the API must not load a Go library)."""
    return name in REQUIRES and find_spec(REQUIRES[name]) is not None
