"""live_secrets: which file a rotating secret comes from, how often the files are looked at, bad values."""

import base64
import logging
import os
import time
from pathlib import Path

import pytest

from controlplane.core import config, live_secrets
from controlplane.core.live_secrets import (
    FROM_FILES,
    LOOK_EVERY,
    SETTLE,
    LiveSecret,
    parse_tokens,
    parse_webhook_secret,
    record_sources,
)
from tests.gateway import wait_for

OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()


class Clocks:
    """A monotonic clock and a wall clock the test moves by hand; the wall starts well after any mtime."""

    def __init__(self):
        self.now = 1000.0
        self.wall_now = 0.0

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall_now += seconds


@pytest.fixture
def clocks():
    return Clocks()


@pytest.fixture
def files(tmp_path):
    env_file, data_dir = tmp_path / "app.env", tmp_path / "var"
    data_dir.mkdir()
    return env_file, data_dir


def write(path: Path, text: str, clocks: Clocks, age: float = 10.0) -> None:
    """Write as an editor would, with an mtime ``age`` seconds before the wall clock (default: settled)."""
    path.write_text(text)
    if not clocks.wall_now:
        clocks.wall_now = path.stat().st_mtime + 100
    when = clocks.wall_now - age
    os.utime(path, (when, when))


def live(name, files, clocks, initial, parse=parse_tokens, from_files=None) -> LiveSecret:
    env_file, data_dir = files
    environ = {"WHIN_ENV_FILE": str(env_file), FROM_FILES: name if from_files is None else from_files}
    return LiveSecret(name, parse, initial, data_dir, environ, clock=clocks.clock, wall=clocks.wall, watch=False)


# --- precedence ---

def test_the_launcher_marks_only_the_names_the_real_environment_leaves_empty(files, clocks):
    env_file, data_dir = files
    write(env_file, "WHIN_API_TOKENS=from-file\nWHIN_WEBHOOK_SECRET=" + OLD_SECRET + "\n", clocks)
    environ = {"WHIN_ENV_FILE": str(env_file), "WHIN_API_TOKENS": "from-env", "WHIN_WEBHOOK_SECRET": ""}
    record_sources(environ)
    assert environ[FROM_FILES] == "WHIN_WEBHOOK_SECRET"
    assert environ["WHIN_API_TOKENS"] == "from-env"  # the real environment wins
    assert environ["WHIN_WEBHOOK_SECRET"] == OLD_SECRET  # empty counts as unset: the file's value


def test_the_env_file_path_is_made_absolute_for_the_programs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    environ = {"WHIN_ENV_FILE": "conf/whin.env"}
    record_sources(environ)
    assert environ["WHIN_ENV_FILE"] == str(tmp_path / "conf" / "whin.env")
    environ = {}  # default ./.env, also absolute
    record_sources(environ)
    assert environ["WHIN_ENV_FILE"] == str(tmp_path / ".env")


@pytest.fixture
def restored_environ():
    saved = dict(os.environ)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


def test_a_name_the_env_file_set_at_launch_is_re_read_later(files, clocks, restored_environ):
    env_file, _ = files
    write(env_file, "WHIN_API_TOKENS=from-file\n", clocks)
    for name in ("WHIN_API_TOKENS", "WHIN_WEBHOOK_SECRET", FROM_FILES):
        restored_environ.pop(name, None)
    restored_environ["WHIN_WEBHOOK_SECRET"] = OLD_SECRET  # from the real environment
    restored_environ["WHIN_ENV_FILE"] = str(env_file)
    config.load_dotenv_file()  # what the launcher does first
    record_sources(os.environ)
    assert os.environ["WHIN_API_TOKENS"] == "from-file"
    assert os.environ[FROM_FILES] == "WHIN_API_TOKENS"


def test_the_env_file_wins_over_secrets_env_and_secrets_env_fills_in(files, clocks):
    env_file, data_dir = files
    write(data_dir / "secrets.env", "WHIN_API_TOKENS=generated\n", clocks)
    tokens = live("WHIN_API_TOKENS", files, clocks, initial=("generated",))
    assert tokens.get() == ("generated",)
    write(env_file, "WHIN_API_TOKENS=admin,chosen\n", clocks)
    clocks.advance(LOOK_EVERY)
    assert tokens.get() == ("admin", "chosen")
    write(env_file, "WHIN_PORT=8080\n", clocks)  # the line taken out of the env file
    clocks.advance(LOOK_EVERY)
    assert tokens.get() == ("generated",)


def test_a_value_from_the_real_environment_is_never_re_read(files, clocks):
    env_file, _ = files
    tokens = live("WHIN_API_TOKENS", files, clocks, initial=("from-env",), from_files="WHIN_WEBHOOK_SECRET")
    write(env_file, "WHIN_API_TOKENS=from-file\n", clocks)
    clocks.advance(10)
    assert tokens.get() == ("from-env",)
    outside = LiveSecret("WHIN_API_TOKENS", parse_tokens, ("given",), files[1], {"WHIN_ENV_FILE": str(env_file)})
    assert outside.get() == ("given",)  # no launcher, nothing recorded: the value given, for good


# --- caching ---

def test_the_files_are_looked_at_at_most_once_a_second(files, clocks, monkeypatch):
    env_file, _ = files
    write(env_file, "WHIN_API_TOKENS=first\n", clocks)
    looks = []
    stamp = live_secrets._stamp
    monkeypatch.setattr(live_secrets, "_stamp", lambda path: looks.append(path) or stamp(path))
    tokens = live("WHIN_API_TOKENS", files, clocks, initial=("first",))
    for _ in range(1000):
        assert tokens.get() == ("first",)
    assert len(looks) == 2  # the env file and secrets.env, once
    write(env_file, "WHIN_API_TOKENS=second\n", clocks)
    clocks.advance(LOOK_EVERY / 2)
    assert tokens.get() == ("first",)  # not looked at again yet
    clocks.advance(LOOK_EVERY / 2)
    assert tokens.get() == ("second",)
    assert len(looks) == 4


def test_unchanged_files_are_not_read_again(files, clocks, monkeypatch):
    env_file, _ = files
    write(env_file, "WHIN_API_TOKENS=first\n", clocks)
    tokens = live("WHIN_API_TOKENS", files, clocks, initial=("first",))
    tokens.get()
    reads = []
    monkeypatch.setattr(live_secrets, "_read", lambda path: reads.append(path) or {})
    for _ in range(5):
        clocks.advance(LOOK_EVERY)
        assert tokens.get() == ("first",)
    assert reads == []


def test_a_file_written_a_moment_ago_is_read_only_once_it_has_settled(files, clocks):
    env_file, data_dir = files
    write(env_file, "WHIN_API_TOKENS=old\n", clocks)
    write(data_dir / "secrets.env", "WHIN_API_TOKENS=generated\n", clocks)
    tokens = live("WHIN_API_TOKENS", files, clocks, initial=("old",))
    assert tokens.get() == ("old",)
    clocks.advance(LOOK_EVERY)
    # An editor truncated the file and has not written it yet: read now, secrets.env's token would
    # apply and every client of "old" would get a 401 until the next look.
    write(env_file, "", clocks, age=0.0)
    assert tokens.get() == ("old",)
    clocks.advance(LOOK_EVERY)
    write(env_file, "WHIN_API_TOKENS=old,new\n", clocks, age=SETTLE / 2)
    assert tokens.get() == ("old",)
    clocks.advance(LOOK_EVERY)  # now written LOOK_EVERY + SETTLE / 2 ago
    assert tokens.get() == ("old", "new")


# --- malformed values ---

@pytest.mark.parametrize("bad", ["", " , ,", "tok en", "tok\u00e9n"])
def test_a_malformed_token_list_keeps_the_last_good_one_and_says_so(files, clocks, caplog, bad):
    env_file, data_dir = files
    write(env_file, "WHIN_API_TOKENS=good\n", clocks)
    write(data_dir / "secrets.env", "WHIN_API_TOKENS=generated-but-overridden\n", clocks)
    tokens = live("WHIN_API_TOKENS", files, clocks, initial=("good",))
    assert tokens.get() == ("good",)
    write(env_file, f"WHIN_API_TOKENS='{bad}'\n" if bad.strip() else f"WHIN_API_TOKENS={bad}\n", clocks)
    clocks.advance(LOOK_EVERY)
    with caplog.at_level(logging.ERROR, "controlplane.secrets"):
        got = tokens.get()
    if not bad.strip():
        # Empty in the env file counts as unset: secrets.env's value applies, as at a restart.
        assert got == ("generated-but-overridden",)
        return
    assert got == ("good",)
    (record,) = [r for r in caplog.records if r.name == "controlplane.secrets"]
    assert "WHIN_API_TOKENS" in record.getMessage() and "keeping the current value" in record.getMessage()
    assert bad not in record.getMessage()


def test_a_secret_set_in_neither_file_keeps_the_last_good_value(files, clocks, caplog):
    env_file, _ = files
    write(env_file, "WHIN_API_TOKENS=good\n", clocks)
    tokens = live("WHIN_API_TOKENS", files, clocks, initial=("good",))
    assert tokens.get() == ("good",)
    env_file.unlink()
    clocks.advance(LOOK_EVERY)
    with caplog.at_level(logging.ERROR, "controlplane.secrets"):
        assert tokens.get() == ("good",)
    assert any("set in neither" in r.getMessage() for r in caplog.records)
    caplog.clear()
    clocks.advance(LOOK_EVERY)
    tokens.get()
    assert caplog.records == []  # said once per change, not every second


def test_a_bad_webhook_secret_keeps_the_last_good_one_then_a_good_one_applies(files, clocks, caplog):
    env_file, _ = files
    write(env_file, f"WHIN_WEBHOOK_SECRET={OLD_SECRET}\n", clocks)
    secret = live("WHIN_WEBHOOK_SECRET", files, clocks, initial=OLD_SECRET, parse=parse_webhook_secret)
    assert secret.get() == OLD_SECRET
    write(env_file, "WHIN_WEBHOOK_SECRET=hunter2-not-a-secret\n", clocks)
    clocks.advance(LOOK_EVERY)
    with caplog.at_level(logging.ERROR, "controlplane.secrets"):
        assert secret.get() == OLD_SECRET
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "WHIN_WEBHOOK_SECRET" in messages and "hunter2" not in messages
    write(env_file, f"WHIN_WEBHOOK_SECRET={NEW_SECRET}\n", clocks)
    clocks.advance(LOOK_EVERY)
    assert secret.get() == NEW_SECRET


@pytest.mark.parametrize("raw", [OLD_SECRET, OLD_SECRET.rstrip("="), "whsec_" + base64.b64encode(b"k").decode()])
def test_good_webhook_secrets(raw):
    assert parse_webhook_secret(raw) == raw


@pytest.mark.parametrize("raw", ["", "whsec_", "secret", base64.b64encode(b"k" * 32).decode(), "whsec_not base64",
                                 "whsec_abc!", "whsec_a", "whsec_===="])
def test_bad_webhook_secrets(raw):
    with pytest.raises(ValueError):
        parse_webhook_secret(raw)


def test_tokens_are_read_as_settings_reads_them():
    assert parse_tokens(" admin , user ,, ") == ("admin", "user")
    for bad in ("", " ,, ", "a b", "a,\tb\u0000"):
        with pytest.raises(ValueError):
            parse_tokens(bad)


def test_an_idle_process_follows_the_files_so_its_last_good_value_is_everyones(files):
    env_file, data_dir = files

    def settled(text: str) -> None:
        env_file.write_text(text)
        os.utime(env_file, (time.time() - 10, time.time() - 10))

    settled("WHIN_API_TOKENS=first\n")
    environ = {"WHIN_ENV_FILE": str(env_file), FROM_FILES: "WHIN_API_TOKENS"}
    tokens = LiveSecret("WHIN_API_TOKENS", parse_tokens, ("first",), data_dir, environ)  # real clocks, watching
    settled("WHIN_API_TOKENS=second\n")
    # Nobody asks for the value: the watcher thread looks by itself.
    wait_for(lambda: tokens._value == ("second",), timeout=30, what="the watcher to take the new tokens")
    settled("WHIN_API_TOKENS=\n")  # then a botched edit: the last good value is the one its peers have
    time.sleep(LOOK_EVERY)
    assert tokens.get() == ("second",)
