"""A slot's files on disk: WHIN_DATA_DIR/slots/<ID>/, owner-only, wiped whole on kill."""

import json
import os
import shutil
import tempfile
from pathlib import Path


def private_dir(path: Path) -> Path:
    """Create the directory (and its parents) readable by the owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private_json(path: Path, data: dict) -> None:
    """Write atomically with mode 0600, so a crash never leaves half a credential file."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def wipe(slot_dir: Path) -> None:
    """Delete every credential and key file of a slot: its whole directory."""
    shutil.rmtree(slot_dir, ignore_errors=True)
