"""What every simnet test module shares: a real simnet server of the test's own."""

import pytest

from tests.simnet.server import SimServer


@pytest.fixture
def sim(tmp_path):
    server = SimServer(tmp_path / "simnet")
    yield server
    server.close()


@pytest.fixture
def device(sim, request):
    """The module's LINE, linked: its device's credentials."""
    return sim.link(request.module.LINE)
