"""Engines by name (WHIN_ENGINE). Imported lazily: the real engine loads a 19 MB Go library."""

from importlib import import_module

# name -> (module, class); which library each needs is core's (engine_names.REQUIRES)
_REGISTRY = {
    "sim": ("slotworker.engines.sim", "SimEngine"),
    "whatsmeow": ("slotworker.engines.whatsmeow", "WhatsmeowEngine"),
}


def engine_class(name: str):
    try:
        module_name, class_name = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"No engine named {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return getattr(import_module(module_name), class_name)
