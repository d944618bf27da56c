"""What a newcomer's first `make run` installs, and that the install says nothing alarming."""

import subprocess
import sys

from tests.gateway import REPO


def _recipes(target: str) -> str:
    """The commands make would run for ``target`` on a fresh clone (-B: as if nothing were installed)."""
    return subprocess.run(["make", "-n", "-B", "--no-print-directory", target], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True).stdout


def test_make_run_installs_the_gateway_but_not_the_test_tools():
    run = _recipes("run")
    assert "pip install --quiet -e ." in run
    assert "[test]" not in run
    assert "-e '.[test]'" in _recipes("test")


def test_building_the_package_prints_no_setuptools_warning(tmp_path):
    # The same editable build pip makes on the first install (isolated, with the setuptools it fetches).
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path),
                            "-e", str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    said = [line for line in (built.stdout + built.stderr).splitlines()
            if line.strip() and not line.startswith("WARNING: Location")]  # this machine's pip index config
    assert said == [], "\n".join(said)
