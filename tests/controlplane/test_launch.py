"""The launcher's preparation: secrets generated once and kept, and a supervisord.conf supervisord accepts."""

import re
import stat
from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from controlplane.core.config import ConfigError
from controlplane.launch import (
    GENERATED,
    banner,
    delivery_stop_wait,
    longest_stop_wait,
    prepare,
    slot_stop_wait,
    worst_stop_seconds,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "var"


def sim_environ(data_dir: Path, **extra: str) -> dict:
    return {"WHIN_DATA_DIR": str(data_dir), "WHIN_ENGINE": "sim", **extra}


def parse(conf: Path) -> ServerOptions:
    options = ServerOptions()
    options.realize(args=["-c", str(conf)])
    return options


def program_names(conf: Path) -> list[str]:
    return [group.name for group in parse(conf).process_group_configs]


# --- secrets ---

def test_prepare_generates_every_missing_secret_into_the_environ(data_dir):
    environ = sim_environ(data_dir)
    settings, _, generated = prepare(environ)
    assert sorted(generated) == sorted(GENERATED)
    for name in GENERATED:
        assert len(environ[name]) >= 32, name
    assert environ["WHIN_WEBHOOK_SECRET"].startswith("whsec_")
    assert settings.api_tokens == (environ["WHIN_API_TOKENS"],)
    assert settings.supervisor_password == environ["WHIN_SUPERVISOR_PASSWORD"]
    assert settings.webhook_secret == environ["WHIN_WEBHOOK_SECRET"]


def test_generated_secrets_are_kept_in_an_owner_only_secrets_env(data_dir):
    environ = sim_environ(data_dir)
    prepare(environ)
    path = data_dir / "secrets.env"
    assert mode(path) == 0o600
    text = path.read_text()
    for name in GENERATED:
        assert f"{name}={environ[name]}\n" in text


def test_a_second_prepare_reuses_the_kept_secrets(data_dir):
    first = sim_environ(data_dir)
    prepare(first)

    second = sim_environ(data_dir)
    _, _, generated = prepare(second)

    assert generated == []
    for name in GENERATED:
        assert second[name] == first[name], name


def test_prepare_never_overwrites_given_secrets(data_dir):
    given = {"WHIN_API_TOKENS": "mine-admin,mine-other", "WHIN_WEBHOOK_SECRET": "whsec_Z2l2ZW4=",
             "WHIN_SUPERVISOR_PASSWORD": "given-password", "WHIN_QUEUE_KEY": "given-queue-key"}
    environ = sim_environ(data_dir, **given)

    settings, conf, generated = prepare(environ)

    assert generated == []
    assert {name: environ[name] for name in given} == given
    assert settings.api_tokens == ("mine-admin", "mine-other")
    assert "password=given-password\n" in conf.read_text()
    assert not (data_dir / "secrets.env").exists()


def test_a_given_secret_wins_over_a_kept_one_and_only_the_missing_are_generated(data_dir):
    kept = sim_environ(data_dir)
    prepare(kept)

    environ = sim_environ(data_dir, WHIN_API_TOKENS="explicit")
    _, _, generated = prepare(environ)

    assert generated == []
    assert environ["WHIN_API_TOKENS"] == "explicit"
    assert environ["WHIN_WEBHOOK_SECRET"] == kept["WHIN_WEBHOOK_SECRET"]


def test_a_blank_secret_counts_as_missing(data_dir):
    environ = sim_environ(data_dir, WHIN_API_TOKENS="  ")
    _, _, generated = prepare(environ)
    assert "WHIN_API_TOKENS" in generated
    assert environ["WHIN_API_TOKENS"].strip()


# --- supervisord.conf ---

@pytest.mark.parametrize("role", ["host", "api"])
def test_a_host_or_api_machine_never_makes_up_the_queue_key_the_others_must_share(data_dir, role):
    environ = sim_environ(data_dir, WHIN_ROLE=role, WHIN_REDIS_URL="redis://10.0.0.5:6379/0")
    with pytest.raises(ConfigError, match="WHIN_QUEUE_KEY, the same on every machine"):
        prepare(environ)
    assert not (data_dir / "secrets.env").exists()
    settings, _, generated = prepare({**environ, "WHIN_QUEUE_KEY": "k" * 43 + "="})
    assert settings.role.value == role and "WHIN_QUEUE_KEY" not in generated


def test_each_role_runs_its_own_programs(data_dir):
    outside = {"WHIN_REDIS_URL": "redis://10.0.0.5:6379/0", "WHIN_QUEUE_KEY": "k" * 43 + "=",
               "WHIN_WEBHOOK_URL": "https://inmovilla.example/hook"}
    _, host, _ = prepare(sim_environ(data_dir / "host", WHIN_ROLE="host", **outside))
    _, api, _ = prepare(sim_environ(data_dir / "api", WHIN_ROLE="api", **outside))
    assert program_names(host) == ["reconciler"]  # the host agent; its slots are added as they come
    assert sorted(program_names(api)) == ["api", "delivery-1", "delivery-2", "reconciler", "simnet"]


def test_supervisord_conf_is_owner_only_and_holds_the_password(data_dir):
    environ = sim_environ(data_dir)
    _, conf, _ = prepare(environ)
    assert conf == data_dir / "supervisor" / "supervisord.conf"
    assert mode(conf) == 0o600
    assert f"password={environ['WHIN_SUPERVISOR_PASSWORD']}\n" in conf.read_text()


def test_supervisord_conf_for_sim_with_embedded_redis_runs_all_four_programs(data_dir):
    _, conf, _ = prepare(sim_environ(data_dir))
    text = conf.read_text()
    for section in ("[program:redis]", "[program:simnet]", "[program:api]", "[program:reconciler]"):
        assert section in text
    assert "[group:" not in text
    assert program_names(conf) == ["redis", "simnet", "api", "reconciler"]


def test_supervisord_conf_has_no_redis_program_when_an_outside_redis_is_given(data_dir):
    _, conf, _ = prepare(sim_environ(data_dir, WHIN_REDIS_URL="redis://10.0.0.5:6379/0"))
    assert "[program:redis]" not in conf.read_text()
    assert program_names(conf) == ["simnet", "api", "reconciler"]


def test_supervisord_conf_has_no_simnet_program_for_the_real_engine(data_dir):
    _, conf, _ = prepare(sim_environ(data_dir, WHIN_ENGINE="whatsmeow"))
    text = conf.read_text()
    assert "[program:simnet]" not in text
    assert "[program:redis]" in text
    assert program_names(conf) == ["redis", "api", "reconciler"]


def test_supervisord_conf_includes_the_slot_programs_folder(data_dir):
    settings, conf, _ = prepare(sim_environ(data_dir))
    assert f"[include]\nfiles = {settings.supervisor_conf_dir}/*.conf\n" in conf.read_text()
    assert settings.supervisor_conf_dir.is_dir()


def test_supervisord_conf_parses_with_the_socket_and_password_of_the_settings(data_dir):
    environ = sim_environ(data_dir)
    settings, conf, _ = prepare(environ)
    options = parse(conf)
    (server,) = options.server_configs
    assert server["file"] == str(settings.supervisor_socket)
    assert (server["username"], server["password"]) == ("whin", environ["WHIN_SUPERVISOR_PASSWORD"])
    assert server["chmod"] == 0o700


def test_a_slot_program_dropped_in_the_include_folder_is_parsed_too(data_dir):
    settings, conf, _ = prepare(sim_environ(data_dir))
    (settings.supervisor_conf_dir / "slot-ABCD1234.conf").write_text(
        "[program:slot-ABCD1234]\ncommand=/bin/true\nautostart=false\n"
    )
    assert program_names(conf)[-1] == "slot-ABCD1234"


def test_a_given_password_with_a_percent_sign_reaches_supervisord_unchanged(data_dir):
    _, conf, _ = prepare(sim_environ(data_dir, WHIN_SUPERVISOR_PASSWORD="p%sw"))
    (server,) = parse(conf).server_configs
    assert server["password"] == "p%sw"


def test_prepare_works_with_the_slot_programs_folder_outside_the_data_dir(tmp_path, data_dir):
    conf_dir = tmp_path / "elsewhere" / "conf.d"
    settings, conf, _ = prepare(sim_environ(data_dir, WHIN_SUPERVISOR_CONF_DIR=str(conf_dir)))
    assert conf.exists()
    assert f"files = {conf_dir}/*.conf" in conf.read_text()


def test_the_banner_shows_where_the_api_the_admin_page_and_the_docs_are(data_dir):
    environ = sim_environ(data_dir, WHIN_PORT="8123")
    settings, conf, generated = prepare(environ)
    shown = banner(settings, conf, generated)
    for url in ("http://127.0.0.1:8123 ", "http://127.0.0.1:8123/ui", "http://127.0.0.1:8123/docs"):
        assert url in shown


def test_the_banner_shows_a_secret_only_the_time_it_is_generated(data_dir):
    settings, conf, generated = prepare(sim_environ(data_dir))
    first = banner(settings, conf, generated)
    assert settings.api_tokens[0] in first and settings.webhook_secret in first
    assert str(data_dir / "secrets.env") in first  # and says where it is kept
    settings, conf, generated = prepare(sim_environ(data_dir))  # the next start: kept, not generated
    again = banner(settings, conf, generated)
    assert settings.api_tokens[0] not in again and settings.webhook_secret not in again
    assert "WHIN_API_TOKENS" in again and "WHIN_WEBHOOK_SECRET" in again


def test_the_banner_never_shows_configured_secrets(data_dir):
    environ = sim_environ(data_dir, WHIN_API_TOKENS="configured-admin-token,configured-user-token",
                          WHIN_WEBHOOK_SECRET="whsec_" + "A" * 43 + "=")
    shown = banner(*prepare(environ))
    assert "configured-admin-token" not in shown and "configured-user-token" not in shown
    assert "whsec_AAAA" not in shown


@pytest.mark.parametrize(("name", "value"), [("WHIN_API_TOKENS", "admin token,other"),
                                             ("WHIN_WEBHOOK_SECRET", "not-a-whsec-secret")])
def test_a_secret_that_could_never_be_rotated_live_is_refused_at_start(data_dir, name, value):
    with pytest.raises(ConfigError, match=name):
        prepare(sim_environ(data_dir, **{name: value}))


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e400"])
def test_a_duration_that_is_no_finite_number_is_refused_at_start(data_dir, value):
    with pytest.raises(ConfigError, match="WHIN_MESSAGE_INDEX_TTL"):
        prepare(sim_environ(data_dir, WHIN_MESSAGE_INDEX_TTL=value))


# --- stopping: the launcher's grace, the embedded Redis's keeper, systemd's timeout ---

def stopwaitsecs(conf: Path) -> dict[str, int]:
    return {process.name: process.stopwaitsecs for group in parse(conf).process_group_configs
            for process in group.process_configs}


def test_the_launchers_grace_is_the_longest_stopwaitsecs_of_any_program(data_dir):
    settings, conf, _ = prepare(sim_environ(data_dir, WHIN_WEBHOOK_URL="https://example.org/hook",
                                            WHIN_WEBHOOK_TIMEOUT="40"))
    (settings.supervisor_conf_dir / "slot-ABCD1234.conf").write_text(
        slotfiles_template().format(slot_id="ABCD1234", python="python", workdir="/", logs_dir="/tmp"))
    waits = stopwaitsecs(conf)
    assert waits["delivery-1"] == 55 and waits["slot-ABCD1234"] == slot_stop_wait()
    assert longest_stop_wait(settings) == max(waits.values()) == 55
    settings, conf, _ = prepare(sim_environ(data_dir))  # no webhook: Redis's 30 s is the longest
    assert longest_stop_wait(settings) == max(stopwaitsecs(conf).values()) == 30


def slotfiles_template() -> str:
    from importlib import resources

    return resources.files("controlplane").joinpath("templates/slot.conf").read_text()


def test_the_embedded_redis_runs_under_its_keeper_waiting_at_most_the_longest_client_stop(data_dir):
    settings, conf, _ = prepare(sim_environ(data_dir, WHIN_WEBHOOK_URL="https://example.org/hook"))
    (redis,) = [group for group in parse(conf).process_group_configs if group.name == "redis"]
    command = redis.process_configs[0].command.split()
    assert command[1:4] == ["-m", "controlplane.redis_keeper", str(delivery_stop_wait(settings))]
    assert command[4].endswith("redis-server")


def test_systemds_stop_timeout_covers_the_worst_stop_with_margin(data_dir):
    unit = (Path(__file__).resolve().parents[2] / "deploy" / "whinmovilla.service").read_text()
    timeout = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE)[1])
    # The unit's own environment: the real engine, the embedded Redis, a webhook at the default timeout.
    settings, _, _ = prepare(sim_environ(data_dir, WHIN_ENGINE="whatsmeow", WHIN_WEBHOOK_URL="https://example.org/h"))
    worst = worst_stop_seconds(settings)
    assert worst == slot_stop_wait() + delivery_stop_wait(settings) + 10 + 10 + 30  # slots … Redis, in turn
    assert timeout >= 1.25 * worst
    # With the sim engine (simnet too) it still fits.
    settings, _, _ = prepare(sim_environ(data_dir, WHIN_WEBHOOK_URL="https://example.org/h"))
    assert timeout >= worst_stop_seconds(settings) + 10
