"""simnet's HTTP API: the contract's phone-side calls, and the device-side calls the sim engine uses."""

from flask import Flask, jsonify, request

from simnet.network import Network, SimError

MAX_POLL_SECONDS = 30


def create_app(network: Network) -> Flask:
    app = Flask(__name__)

    @app.errorhandler(SimError)
    def sim_error(err: SimError):
        return jsonify(error=err.code, detail=err.detail, reason=err.detail), err.status

    @app.errorhandler(404)
    @app.errorhandler(405)
    def http_error(err):
        return jsonify(error=err.name.lower().replace(" ", "_"), detail=err.description), err.code

    def body() -> dict:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise SimError(400, "invalid_json", "Send a JSON object.")
        return data

    def poll_seconds() -> float:
        return min(float(request.args.get("timeout", 0) or 0), MAX_POLL_SECONDS)

    def device_secret() -> str:
        return request.headers.get("Authorization", "").removeprefix("Bearer ").strip()

    # --- phones (the contract) ---

    @app.post("/scan")
    def scan():
        data = body()
        return jsonify(device=network.scan(data.get("line"), data.get("qr")))

    @app.post("/paircode")
    def enter_pair_code():
        data = body()
        return jsonify(device=network.enter_pair_code(data.get("line"), data.get("code")))

    @app.post("/messages")
    def messages():
        data = body()
        return jsonify(network.phone_sends(data.get("from"), data.get("to"), data.get("text")))

    @app.get("/phones/<number>/inbox")
    def inbox(number):
        return jsonify(network.inbox(number))

    @app.post("/phones/<line>/unlink")
    def unlink(line):
        return jsonify(unlinked=network.unlink(line))

    # --- linked devices (the sim engine) ---

    @app.post("/pair")
    def pair():
        return jsonify(session=network.begin_pairing(body()))

    @app.get("/pair/<session>/events")
    def pairing_events(session):
        seen = int(request.args.get("seen", -1))
        return jsonify(network.pairing_events(session, seen, poll_seconds()))

    @app.post("/pair/<session>/code")
    def request_pair_code(session):
        return jsonify(code=network.request_pair_code(session, body().get("line")))

    @app.delete("/pair/<session>")
    def end_pairing(session):
        network.end_pairing(session)
        return jsonify(ok=True)

    @app.post("/devices/<device_id>/connect")
    def connect(device_id):
        return jsonify(acked=network.connect(device_id, device_secret()))

    @app.get("/devices/<device_id>/events")
    def device_events(device_id):
        after = int(request.args.get("after", 0))
        return jsonify(network.device_events(device_id, device_secret(), after, poll_seconds()))

    @app.post("/devices/<device_id>/send")
    def device_send(device_id):
        data = body()
        return jsonify(network.device_sends(device_id, device_secret(), data.get("to"), data.get("text"),
                                            data.get("media")))

    @app.post("/devices/<device_id>/logout")
    def logout(device_id):
        network.logout(device_id, device_secret())
        return jsonify(ok=True)

    @app.get("/health")
    def health():
        return jsonify(status="ok")

    return app
