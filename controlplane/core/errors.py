"""Errors that carry the contract's machine code; the API turns each into a JSON response."""


class GatewayError(Exception):
    """Base: an action that could not be done, with a stable machine code and a human sentence."""

    status = 422

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Refused(GatewayError):
    """The manual's "could not be done": bad input, unknown slot or line, wrong state (422)."""


class EngineTimeout(GatewayError):
    """The slot's worker did not answer in time (504)."""

    status = 504

    def __init__(self, detail: str):
        super().__init__("engine_timeout", detail)


class ServiceUnavailable(GatewayError):
    """A part the gateway depends on (Redis, supervisord) cannot be reached (503)."""

    status = 503
