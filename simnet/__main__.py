"""python -m simnet: the simulated WhatsApp network on 127.0.0.1:WHIN_SIMNET_PORT.

WHIN_SIM_QR_FIRST / WHIN_SIM_QR_NEXT / WHIN_SIM_QR_COUNT shorten WhatsApp's QR schedule for tests
(defaults 60 s, 20 s, 6 codes).
"""

import logging
import os
import signal
import sys

from werkzeug.serving import WSGIRequestHandler, make_server

from controlplane.core import lifeline, logs
from controlplane.core.config import Settings
from simnet.app import create_app
from simnet.network import Network, QrSchedule


class QuietRequests(WSGIRequestHandler):
    """Each request's line at DEBUG, not werkzeug's INFO: every linked slot's long poll is one (3.8 MB in
    10 minutes at 200 slots, issue 14, each line a wake-up of supervisord, which reads the output).
    werkzeug's errors keep their level."""

    def log(self, type: str, message: str, *args) -> None:
        super().log("debug" if type == "info" else type, message, *args)


def main() -> None:
    logs.configure(logging.WARNING)
    settings = Settings.from_env()
    schedule = QrSchedule(
        first=float(os.environ.get("WHIN_SIM_QR_FIRST", 60)),
        following=float(os.environ.get("WHIN_SIM_QR_NEXT", 20)),
        count=int(os.environ.get("WHIN_SIM_QR_COUNT", 6)),
    )
    network = Network(settings.data_dir / "simnet", schedule)
    # Threaded: every linked device holds a long poll open.
    server = make_server("127.0.0.1", settings.simnet_port, create_app(network), threaded=True,
                         request_handler=QuietRequests)

    def stop(_signum, _frame):
        network.flush()  # linked devices and held messages survive a restart, as WhatsApp's do
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    lifeline.end_with_supervisord()
    print(f"simnet listening on http://127.0.0.1:{settings.simnet_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
