"""The gateway's one error family: each carries the contract's machine code and a human sentence.

The API turns each into a JSON response ({"error": code, "detail": detail}, with ``status``);
whinctl prints the sentence and the code. Standard library only: the slot worker imports it.
"""


class GatewayError(Exception):
    """Base: an action that could not be done, with a stable machine code and a human sentence."""

    status = 422

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Refused(GatewayError):
    """The manual's "could not be done": bad input, unknown slot or line, wrong state (422).

    ``state``: when the refusal comes from a step of the slot store, the slot's phase
    (states.SlotPhase) as that step found it, for the caller to say which of its own codes applies."""

    def __init__(self, code: str, detail: str, state: str | None = None):
        super().__init__(code, detail)
        self.state = state


class EngineTimeout(GatewayError):
    """The slot's worker did not answer in time (504)."""

    status = 504

    def __init__(self, detail: str):
        super().__init__("engine_timeout", detail)


class ServiceUnavailable(GatewayError):
    """A part the gateway depends on (Redis, supervisord) cannot be reached (503)."""

    status = 503
