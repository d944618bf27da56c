"""The suite itself: `make test` runs it in several processes (pytest-xdist), which schedule by node id."""

import collections
import subprocess
import sys

from tests.gateway import REPO


def test_every_collected_test_has_an_id_of_its_own():
    # Two tests with one id would be one test to xdist: the other would never run (schemathesis's cases).
    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                            cwd=REPO, capture_output=True, text=True, timeout=120).stdout
    ids = [line for line in listed.splitlines() if "::" in line]
    assert len(ids) > 1000
    twice = [node for node, count in collections.Counter(ids).items() if count > 1]
    assert twice == []
    assert sum("test_no_generated_request_breaks_the_document[" in node for node in ids) > 30

