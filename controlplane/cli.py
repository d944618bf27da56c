"""whinctl: the sysadmin's command line. It calls the same lifecycle code as the API, directly.

It reads the same WHIN_* variables as the gateway, plus .env and the secrets `make run` generated
(WHIN_DATA_DIR/secrets.env), so it works from any shell in the project folder.
"""

import base64
import io
import json
import os
import sys
from pathlib import Path

import click
import requests
from dotenv import dotenv_values

from controlplane.config import ConfigError, Settings, load_dotenv_file
from controlplane.errors import GatewayError
from controlplane.ids import InvalidIdentifier


def _settings() -> Settings:
    load_dotenv_file()
    data_dir = Path(os.environ.get("WHIN_DATA_DIR") or "./var").resolve()
    for name, value in dotenv_values(data_dir / "secrets.env").items():
        os.environ.setdefault(name, value or "")
    return Settings.from_env()


def _lifecycle():
    from controlplane.events import EventPublisher
    from controlplane.lifecycle import Lifecycle
    from controlplane.store import SlotStore
    from controlplane.supervisor import Supervisor

    settings = _settings()
    return Lifecycle(settings, SlotStore.from_url(settings.redis_url), Supervisor.from_settings(settings),
                     EventPublisher(settings))


def _out(as_json: bool, data, text: str) -> None:
    click.echo(json.dumps(data) if as_json else text)


class _Cli(click.Group):
    """Turns the gateway's refusals into one friendly line and exit code 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (GatewayError, InvalidIdentifier) as err:
            raise click.ClickException(f"{err.detail} [{err.code}]") from None
        except ConfigError as err:
            raise click.ClickException(str(err)) from None


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
    response = requests.get(f"{api}/enroll/{slot}", headers=headers, timeout=30)
    if response.status_code != 200:
        raise click.ClickException(f"/enroll answered {response.status_code}: {response.text}")
    text = decode_qr_png(base64.b64decode(response.json()["qr"]))
    scan = requests.post(f"{settings.simnet_url}/scan", json={"line": line, "qr": text}, timeout=10)
    if scan.status_code != 200:
        raise click.ClickException(f"simnet refused the scan: {scan.text}")
    click.echo(f"Phone {line} scanned the code of slot {slot.upper()}.")


@main.command(name="sim-send")
@click.argument("sender")
@click.argument("line")
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sim_send(sender, line, text, as_json):
    """Simulated phone SENDER sends TEXT to the enrolled LINE (sim engine)."""
    settings = _settings()
    response = requests.post(f"{settings.simnet_url}/messages", json={"from": sender, "to": line, "text": text},
                             timeout=10)
    if response.status_code != 200:
        raise click.ClickException(f"simnet refused the message: {response.text}")
    _out(as_json, response.json(), f"Phone {sender} sent message {response.json()['id']} to {line}.")


def decode_qr_png(png: bytes) -> str:
    """What a phone's camera does: read the text of the QR code in a PNG."""
    import zxingcpp
    from PIL import Image

    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)).convert("L"))
    if not found:
        raise click.ClickException("No QR code found in the image.")
    return found[0].text


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
