"""One harness per engine, so that one contract suite runs over both (test_contract.py).

Each harness plays the world outside the engine: the phones (send a message, a photo, read, call,
type, post in a group…) and WhatsApp itself (forget media, ban, replace, outdate). SimHarness
(sim_harness.py) does it through simnet's HTTP API; WhatsmeowHarness (whatsmeow_harness.py) through
FakeGo, with the events whatsmeow would deliver. Both answer ``sent_to(number)`` with what the phone
shows, in simnet's inbox shape. Here: what both share.
"""



from tests.gateway import wait_for


class Recorder:
    """The engine's events as the slot runner would get them."""

    def __init__(self):
        self.events: list[tuple] = []

    def __getattr__(self, name):
        if not name.startswith("on_"):
            raise AttributeError(name)
        return lambda *args: self.events.append((name, *args))

    def of(self, name: str) -> list[tuple]:
        return [e[1:] for e in self.events if e[0] == name]

    def wait(self, name: str, count: int = 1, timeout: float = 10) -> list[tuple]:
        return wait_for(lambda: len(self.of(name)) >= count and self.of(name), timeout=timeout, what=name)

    def payloads(self, source: str, where=lambda payload: True) -> list[dict]:
        """The payloads of the on_event calls of that source (a whatsmeow event name) that match."""
        return [payload for src, payload in self.of("on_event") if src == source and where(payload)]

    def wait_event(self, source: str, where=lambda payload: True, timeout: float = 10) -> dict:
        """The first payload of that source matching ``where``, once it came."""
        return wait_for(lambda: self.payloads(source, where) and self.payloads(source, where)[0], timeout=timeout,
                        what=f"a {source} event")
