"""A slot's refusal (protocol.Failure) as the API's error: one mapping for every call that asks a slot."""

from controlplane.core import protocol
from controlplane.core.errors import EngineTimeout, GatewayError, Refused, ServiceUnavailable


def gateway_error(slot_id: str, failure: protocol.Failure, fallback: str) -> GatewayError:
    """503 when WhatsApp is out of reach, 504 when the slot could not act in time (or may have), else a
    422 with the slot's own code; ``fallback`` is the sentence when the slot gave none."""
    if failure.error == protocol.WHATSAPP_UNREACHABLE:
        return ServiceUnavailable("whatsapp_unreachable", f"Slot {slot_id} cannot reach WhatsApp right now.")
    if failure.error == protocol.ENGINE_TIMEOUT:
        return EngineTimeout(failure.detail)
    return Refused(failure.error, failure.detail or fallback)
