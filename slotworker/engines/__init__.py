"""Engines by name (WHIN_ENGINE). Imported lazily: the real engine loads a 19 MB Go library."""

from importlib import import_module
from importlib.util import find_spec

# name -> (module, class, the package it cannot run without)
_REGISTRY = {
    "sim": ("slotworker.engines.sim", "SimEngine", "requests"),
    "whatsmeow": ("slotworker.engines.whatsmeow", "WhatsmeowEngine", "neonize"),
}


def engine_class(name: str):
    try:
        module_name, class_name, _ = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"No engine named {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return getattr(import_module(module_name), class_name)


def is_installed(name: str) -> bool:
    """Whether the engine exists here, without importing it (the API must not load a Go library)."""
    return name in _REGISTRY and all(find_spec(module) is not None for module in (_REGISTRY[name][0],
                                                                                   _REGISTRY[name][2]))
