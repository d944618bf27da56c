"""slotworker.lean: packages a slot never uses stay out of memory, yet work if something calls them."""

import subprocess
import sys

CHECK = """
import sys
from slotworker import lean
lean.defer_unused(sys.argv[1])
from neonize.client import NewClient
import neonize.events
real = [m for m in ("linkpreview", "bs4", "soupsieve", "httpx", "segno", "tqdm", "requests")
        if m in sys.modules and type(sys.modules[m]).__name__ != "_Deferred"]
print(",".join(real))
import io
out = io.StringIO()
neonize.events.segno.make_qr("still works").save(out, kind="txt")  # called: the real package loads
print("segno" in sys.modules and type(sys.modules["segno"]).__name__ == "module", bool(out.getvalue()))
"""


def run(engine: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", CHECK, engine], capture_output=True, text=True, timeout=60,
                            check=True)
    return result.stdout.splitlines()


def test_a_whatsmeow_slot_imports_neonize_without_the_packages_it_never_uses():
    loaded, called = run("whatsmeow")
    assert loaded == ""  # none of linkpreview, bs4, soupsieve, httpx, segno, tqdm, requests
    assert called == "True True"


def test_the_sim_engine_keeps_requests_which_it_uses():
    loaded, _ = run("sim")
    assert loaded.split(",") == ["requests"]
