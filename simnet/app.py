"""simnet's HTTP API: the contract's phone-side calls, and the device-side calls the sim engine uses.

Refusals are JSON ``{"error": code, "detail": sentence}`` (plus ``reason`` for the engine, and
``expires_in``/``ban_code`` on a temporary ban) with a 4xx status.
"""

import math

from flask import Flask, Response, jsonify, request

from simnet.network import Network, SimError

MAX_POLL_SECONDS = 30


def create_app(network: Network) -> Flask:
    app = Flask(__name__)

    @app.errorhandler(SimError)
    def sim_error(err: SimError):
        return jsonify(error=err.code, detail=err.detail, reason=err.detail, **err.extra), err.status

    @app.errorhandler(400)
    @app.errorhandler(404)
    @app.errorhandler(405)
    def http_error(err):
        return jsonify(error=err.name.lower().replace(" ", "_"), detail=err.description), err.code

    def body() -> dict:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise SimError(400, "invalid_json", "Send a JSON object.")
        return data

    def optional_body() -> dict:
        return body() if request.get_data() else {}

    def number_arg(name: str, default: float) -> float:
        try:
            value = float(request.args.get(name, default) or default)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise SimError(400, f"invalid_{name}", f"'{name}' is a number.")
        return value

    def poll_seconds() -> float:
        return max(0.0, min(number_arg("timeout", 0), MAX_POLL_SECONDS))

    def device_secret() -> str:
        return request.headers.get("Authorization", "").removeprefix("Bearer ").strip()

    def base_url() -> str:
        return request.host_url.rstrip("/")

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
        return jsonify(network.send(body(), base_url()))

    @app.post("/phones")
    def join():
        return jsonify(network.join(body().get("number")))

    @app.get("/phones/<number>")
    def phone(number):
        return jsonify(network.phone(number))

    @app.get("/phones/<number>/inbox")
    def inbox(number):
        return jsonify(network.inbox(number))

    @app.get("/phones/<number>/read-by-line")
    def read_by_line(number):
        return jsonify(network.read_by_line(number))

    @app.get("/phones/<number>/chat-state")
    def chat_state(number):
        return jsonify(network.chat_state(number))

    @app.get("/exists/<number>")
    def exists(number):
        return jsonify(number=number, exists=network.exists(number))

    @app.post("/phones/<number>/read")
    def read(number):
        data = body()
        return jsonify(network.read(number, data.get("line"), data.get("ids"), data.get("type")))

    @app.post("/phones/<number>/call")
    def call(number):
        return jsonify(network.call(number, body().get("line")))

    @app.post("/phones/<number>/hangup")
    def hangup(number):
        data = body()
        return jsonify(network.hangup(number, data.get("line"), data.get("call_id"), data.get("reason")))

    @app.post("/phones/<number>/typing")
    def typing(number):
        data = body()
        return jsonify(network.typing(number, data.get("line"), data.get("state")))

    @app.post("/phones/<number>/presence")
    def presence(number):
        data = body()
        return jsonify(network.presence(number, data.get("line"), data.get("available")))

    @app.post("/phones/<number>/undecryptable")
    def undecryptable(number):
        return jsonify(network.undecryptable(number, body().get("line")))

    @app.post("/phones/<line>/unlink")
    def unlink(line):
        return jsonify(unlinked=network.unlink(line))

    @app.post("/phones/<line>/ban")
    def ban(line):
        data = body()
        return jsonify(network.ban(line, data.get("seconds"), data.get("code")))

    @app.post("/phones/<line>/replace")
    def replace(line):
        return jsonify(network.replace(line))

    @app.post("/phones/<line>/outdated")
    def outdated(line):
        return jsonify(network.set_outdated(line, body().get("outdated")))

    @app.post("/groups")
    def create_group():
        data = body()
        return jsonify(network.create_group(data.get("name"), data.get("members"), data.get("owner")))

    @app.post("/groups/<group_id>")
    def rename_group(group_id):
        data = body()
        return jsonify(network.rename_group(group_id, data.get("name"), data.get("by")))

    @app.get("/groups/<group_id>/inbox")
    def group_inbox(group_id):
        return jsonify(network.group_inbox(group_id))

    @app.get("/groups/<group_id>/chat-state")
    def group_chat_state(group_id):
        return jsonify(network.group_chat_state(group_id))

    @app.post("/groups/<group_id>/members")
    def change_members(group_id):
        data = body()
        return jsonify(network.change_members(group_id, data.get("add"), data.get("remove"), data.get("by")))

    # --- the media servers ---

    @app.get("/mms/<kind>/<token>")
    def media_file(kind, token):
        size, chunks = network.media.open(kind, token)
        return Response(chunks, mimetype="application/octet-stream", headers={"Content-Length": str(size)},
                        direct_passthrough=True)

    @app.delete("/media")
    def forget_media():
        return jsonify(forgotten=network.media.forget())

    # --- linked devices (the sim engine) ---

    @app.post("/pair")
    def pair():
        return jsonify(session=network.begin_pairing(body()))

    @app.get("/pair/<session>/events")
    def pairing_events(session):
        seen = int(number_arg("seen", -1))
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
        return jsonify(network.connect(device_id, device_secret(), optional_body().get("sources")))

    @app.get("/devices/<device_id>/events")
    def device_events(device_id):
        after = int(number_arg("after", 0))
        return jsonify(network.device_events(device_id, device_secret(), after, poll_seconds(),
                                             request.args.get("connection")))

    @app.post("/devices/<device_id>/send")
    def device_send(device_id):
        return jsonify(network.device_sends(device_id, device_secret(), body(), base_url()))

    @app.post("/devices/<device_id>/read")
    def device_read(device_id):
        data = body()
        return jsonify(network.device_reads(device_id, device_secret(), data.get("chat"), data.get("ids"),
                                            data.get("sender")))

    @app.post("/devices/<device_id>/presence")
    def device_presence(device_id):
        data = body()
        return jsonify(network.device_presence(device_id, device_secret(), data.get("to"), data.get("state")))

    @app.get("/devices/<device_id>/exists/<number>")
    def device_exists(device_id, number):
        return jsonify(network.device_exists(device_id, device_secret(), number))

    @app.get("/devices/<device_id>/lid/<lid>")
    def phone_for_lid(device_id, lid):
        return jsonify(network.phone_for_lid(device_id, device_secret(), lid))

    @app.post("/devices/<device_id>/logout")
    def logout(device_id):
        network.logout(device_id, device_secret())
        return jsonify(ok=True)

    @app.get("/health")
    def health():
        return jsonify(status="ok")

    return app
