"""whinctl: the sysadmin's command line. It calls the same lifecycle code as the API, directly.

It reads the same WHIN_* variables as the gateway, plus .env and the secrets `make run` generated
(WHIN_DATA_DIR/secrets.env), so it works from any shell in the project folder. When a gateway runs on
that data folder, its record (run/instance.json) says which ports, engine and Redis it was started
with: they win over this shell's own environment, which may not be the one `make run` saw.
"""

import base64
import io
import json
import os
import sys

import click
import redis
import requests
from dotenv import dotenv_values

from controlplane import instance
from controlplane.core.config import ConfigError, Settings, data_dir_from_env, load_dotenv_file
from controlplane.core.errors import GatewayError


def _settings() -> Settings:
    load_dotenv_file()
    data_dir = data_dir_from_env()
    for name, value in dotenv_values(data_dir / "secrets.env").items():
        os.environ.setdefault(name, value or "")
    running = instance.running_record(data_dir)
    if running:
        os.environ.update({"WHIN_PORT": str(running["port"]), "WHIN_SIMNET_PORT": str(running["simnet_port"]),
                           "WHIN_ENGINE": running["engine"], "WHIN_REDIS_URL": running["redis_url"]})
    return Settings.from_env()


def _http(method: str, url: str, what: str, **kwargs) -> requests.Response:
    try:
        return requests.request(method, url, timeout=kwargs.pop("timeout", 30), **kwargs)
    except requests.RequestException as err:
        raise click.ClickException(f"cannot reach {what} at {url.split('/', 3)[2]} ({type(err).__name__}); "
                                   "is the gateway running (make run), with this data folder?") from None


def _lifecycle():
    from controlplane.lifecycle import Lifecycle

    return Lifecycle.from_settings(_settings())


def _out(as_json: bool, data, text: str) -> None:
    click.echo(json.dumps(data) if as_json else text)


class _Cli(click.Group):
    """Turns the gateway's refusals into one friendly line and exit code 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GatewayError as err:  # InvalidIdentifier too
            raise click.ClickException(f"{err.detail} [{err.code}]") from None
        except ConfigError as err:
            raise click.ClickException(str(err)) from None
        except redis.RedisError as err:
            raise click.ClickException(f"cannot reach the gateway's Redis ({type(err).__name__}); "
                                       "is the gateway running (make run), with this data folder?") from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as err:  # a sysadmin gets a sentence; WHIN_DEBUG=1 shows the trace
            if os.environ.get("WHIN_DEBUG"):
                raise
            raise click.ClickException(f"unexpected error ({type(err).__name__}: {err}); run again with "
                                       "WHIN_DEBUG=1 to see where") from None


@click.group(cls=_Cli)
def main():
    """Manage whinmovilla's slots from the command line."""


@main.command()
def run():
    """Run the whole gateway in the foreground (what `make run` does)."""
    from controlplane import launch

    launch.main()


@main.command()
@click.argument("count", type=click.IntRange(1, 100))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def provision(count, as_json):
    """Create COUNT new slots."""
    created = _lifecycle().provision(count)
    _out(as_json, {"created": created}, "\n".join(created))


@main.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_slots(as_json):
    """Every slot with its status and line."""
    slots = _lifecycle().store.all()
    rows = [{"slot": s.id, "status": s.status.value, "line": s.line, "pairing": s.pairing} for s in slots]
    text = "\n".join(f"{r['slot']}  {r['status']:<9}  {r['line'] or '-'}{'  (pairing)' if r['pairing'] else ''}"
                     for r in rows)
    _out(as_json, rows, text or "no slots; create some with: whinctl provision 2")


@main.command()
@click.argument("slot")
@click.option("--json", "as_json", is_flag=True, help="Print the QR text as JSON instead of drawing it.")
def enroll(slot, as_json):
    """Start pairing SLOT and draw its QR code in the terminal."""
    lc = _lifecycle()
    code = lc.enroll(lc.slot(slot))
    if as_json:
        _out(True, {"qr_text": code.text, "expires_in": code.expires_in}, "")
        return
    import qrcode

    qr = qrcode.QRCode(border=1)
    qr.add_data(code.text)
    qr.print_ascii(out=sys.stdout, invert=True)
    click.echo(f"Scan with WhatsApp > Linked devices within {code.expires_in:.0f} s.")


@main.command(name="sim-scan")
@click.argument("slot")
@click.argument("line")
def sim_scan(slot, line):
    """Simulated phone LINE scans SLOT's QR: asks the API for it, decodes the PNG, scans it."""
    settings = _settings()
    api = f"http://127.0.0.1:{settings.port}"
    headers = {"Authorization": f"Bearer {settings.admin_token}"}
    response = _http("GET", f"{api}/enroll/{slot}", "the API", headers=headers)
    if response.status_code != 200:
        raise click.ClickException(f"/enroll refused: {_refusal(response)}")
    text = decode_qr_png(base64.b64decode(response.json()["qr"]))
    scan = _http("POST", f"{settings.simnet_url}/scan", "the simulated network", json={"line": line, "qr": text})
    if scan.status_code != 200:
        raise click.ClickException(f"simnet refused the scan: {_refusal(scan)}")
    click.echo(f"Phone {line} scanned the code of slot {slot.upper()}.")


@main.command(name="sim-send")
@click.argument("sender")
@click.argument("line")
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sim_send(sender, line, text, as_json):
    """Simulated phone SENDER sends TEXT to the enrolled LINE (sim engine)."""
    settings = _settings()
    response = _http("POST", f"{settings.simnet_url}/messages", "the simulated network",
                     json={"from": sender, "to": line, "text": text})
    if response.status_code != 200:
        raise click.ClickException(f"simnet refused the message: {_refusal(response)}")
    _out(as_json, response.json(), f"Phone {sender} sent message {response.json()['id']} to {line}.")


def _refusal(response: requests.Response) -> str:
    """A JSON error's sentence and code, or the status alone: never a page of HTML."""
    try:
        body = response.json()
        return f"{body['detail']} [{body['error']}]"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def decode_qr_png(png: bytes) -> str:
    """What a phone's camera does: read the text of the QR code in a PNG."""
    import zxingcpp
    from PIL import Image

    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)).convert("L"))
    if not found:
        raise click.ClickException("No QR code found in the image.")
    return found[0].text


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def hosts(as_json):
    """Every slot host: alive or not, its running slots and capacity."""
    import time

    from controlplane.placement import Occupancy, host_listing

    lc = _lifecycle()
    now = time.time()
    rows = [{**host, "slots": len(host["slots"])}  # a count: the ids are GET /hosts' business
            for host in host_listing(lc.hosts.all(), Occupancy.read(lc.store, now), now, lc.settings.host_dead_after)]
    text = "\n".join(f"{r['name']}  {'alive' if r['alive'] else 'DEAD ':<5}  running {r['running']}/{r['capacity']}"
                     f"  slots {r['slots']}{'  (draining)' if r['draining'] else ''}" for r in rows)
    _out(as_json, rows, text or "no slot host has beaten yet; is the gateway running (make run)?")


@main.command()
@click.argument("name")
def drain(name):
    """Move every slot of host NAME to other hosts, one by one (as POST /hosts/NAME/drain)."""
    from controlplane.host_drain import drain as drain_host

    moved = drain_host(_lifecycle(), name)
    click.echo(f"OK: {len(moved)} slot(s) moved off {name}")


@main.command()
@click.argument("name")
def undrain(name):
    """Put host NAME back in service after a drain, without restarting it: it takes new slots again."""
    lc = _lifecycle()
    if lc.hosts.get(name) is None:
        raise click.ClickException(f"There is no slot host named {name!r}. [unknown_host]")
    lc.hosts.set_draining(name, False)
    click.echo("OK")


@main.command(name="remove-host")
@click.argument("name")
def remove_host(name):
    """Forget host NAME for good: stopped, drained, it leaves GET /hosts and /metrics."""
    from controlplane.host_removal import remove

    remove(_lifecycle(), name)
    click.echo("OK")


def _line_action(action: str):
    @main.command(name=action, help=f"{action.capitalize()} the line on SLOT, or the line given by --line.")
    @click.argument("slot", required=False)
    @click.option("--line", help="Act on the slot that holds this line.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def command(slot, line, as_json):
        if bool(slot) == bool(line):
            raise click.UsageError("Give either a SLOT or --line, not both.")
        lc = _lifecycle()
        target = lc.slot_of_line(line) if line else lc.slot(slot)
        getattr(lc, action)(target)
        _out(as_json, {"slot": target.id, "action": action, "ok": True}, "OK")

    return command


for _action in ("sleep", "resume", "kill"):
    _line_action(_action)


if __name__ == "__main__":
    main()
