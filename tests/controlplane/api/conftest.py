"""The API tests' own fixture: the app in this process on a real Redis (tests/helpers.AppClient)."""

import pytest

from tests.helpers import AppClient, redis_url


@pytest.fixture(scope="module")
def app_client(redis_server, tmp_path_factory):
    """The API without its processes, on a database of its own, shared by a module's tests."""
    return AppClient(redis_url(redis_server), tmp_path_factory.mktemp("app"))
