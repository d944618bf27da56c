"""No copy kept: after delivery, no Redis key and no file the gateway wrote holds a message's text,
nor the bytes of a photo or voice note fetched through POST /media."""

import base64
import os
import shutil
import subprocess
import time
import uuid

from tests.e2e.samples import ogg_opus
from tests.gateway import wait_for
from tests.helpers import SENDER, delivered_message, rq_job_keys


def _every_redis_value(client) -> bytes:
    """Every key and value in the database, raw, whatever its type."""
    chunks = []
    for key in client.scan_iter(count=1000):
        chunks.append(key)
        kind = client.type(key)
        if kind == b"string":
            chunks.append(client.get(key) or b"")
        elif kind == b"hash":
            chunks.extend(b for pair in client.hgetall(key).items() for b in pair)
        elif kind == b"list":
            chunks.extend(client.lrange(key, 0, -1))
        elif kind in (b"set",):
            chunks.extend(client.smembers(key))
        elif kind == b"zset":
            chunks.extend(client.zrange(key, 0, -1))
        elif kind == b"stream":
            for _, fields in client.xrange(key):
                chunks.extend(b for pair in fields.items() for b in pair)
    return b"\n".join(chunks)


EMOJI = "👩🏽‍💻"  # a reaction is content too: 15 bytes no key or file may hold


def _mp3(seconds: int) -> bytes:
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is not installed: `make ffmpeg` (scripts/install-ffmpeg) installs it"
    return subprocess.run([ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i", f"sine=frequency=350:duration={seconds}",
                           "-c:a", "libmp3lame", "-f", "mp3", "pipe:1"], capture_output=True, check=True,
                          timeout=60).stdout


def test_no_redis_key_log_line_or_file_keeps_message_text(own_receiver, make_gateway, new_line, tmp_path):
    import redis

    # ffmpeg converts the MP3 voice note below from memory to a pipe: its TMPDIR must stay empty.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    gw = make_gateway(embedded_redis=True, WHIN_WEBHOOK_URL=own_receiver.url, TMPDIR=str(scratch))  # AOF on
    (slot_id,) = gw.provision(1)
    line = new_line()
    gw.enroll(slot_id, line)
    inbound = [f"inbound-secret-{uuid.uuid4().hex}" for _ in range(5)]
    outbound = [f"outbound-secret-{uuid.uuid4().hex}" for _ in range(3)]
    own_receiver.fail_with, own_receiver.fail_count = 500, 2  # some retries on the way
    for text in inbound:
        gw.phone_sends(SENDER, line, text)
    for text in outbound:
        response = gw.api("POST", "/send", json={"line": line, "to": SENDER, "text": text})
        assert response.status_code == 200, response.text
    for text in inbound:
        delivered_message(own_receiver, line, text, timeout=30)
    assert {m.get("text") for m in gw.inbox(SENDER)} >= set(outbound)  # they did leave
    # Every other kind and chat action: a pin, a card, a quote, an edit, a reaction, a voice note.
    place, person, edit = (f"{kind}-secret-{uuid.uuid4().hex}" for kind in ("place", "person", "edit"))
    mp3 = _mp3(3)
    first = gw.api("POST", "/send", json={"line": line, "to": SENDER, "text": outbound[0]}).json()["id"]
    reply_to = gw.phone_sends(SENDER, line, inbound[0] + "-q")
    delivered_message(own_receiver, line, inbound[0] + "-q", timeout=30)
    for body in ({"location": {"latitude": 40.1, "longitude": -3.2, "name": place, "address": place}},
                 {"contact": {"name": person, "number": "34611177788"}},
                 {"text": outbound[1] + "-r", "reply_to": reply_to, "quoted": {"conversation": inbound[0] + "-q"}},
                 {"reaction": {"message_id": reply_to, "emoji": EMOJI}},
                 {"media": {"data": base64.b64encode(ogg_opus(2)).decode(), "mimetype": "audio/ogg", "ptt": True}},
                 {"media": {"data": base64.b64encode(mp3).decode(), "mimetype": "audio/mpeg", "ptt": True}}):
        response = gw.api("POST", "/send", json={"line": line, "to": SENDER, **body})
        assert response.status_code == 200, response.text
    edited = gw.api("POST", "/edit", json={"line": line, "to": SENDER, "message_id": first, "text": edit})
    assert edited.status_code == 200, edited.text
    outbound += [place, person, edit, outbound[1] + "-r"]
    # A photo and a voice note, each with a marker of its own, fetched through POST /media.
    media = {"image/png": b"\x89PNG\r\n\x1a\n" + f"photo-secret-{uuid.uuid4().hex}".encode() + os.urandom(40_000),
             "audio/ogg": b"OggS" + f"voice-secret-{uuid.uuid4().hex}".encode() + os.urandom(20_000)}
    for mimetype, data in media.items():
        message_id = gw.phone_sends_media(SENDER, line, data, mimetype, ptt=mimetype.startswith("audio"))
        (event,) = wait_for(lambda m=message_id: own_receiver.delivered(line=line, message_id=m), timeout=30,
                            what="the media message")
        fetched = gw.api("POST", "/media", json={"line": line, "message": event["payload"]["Message"]})
        assert fetched.status_code == 200 and fetched.content == data
    time.sleep(2.5)  # rq keeps a finished job's key for its 1 s result TTL

    raw = redis.Redis.from_url(f"unix://{gw.data_dir.resolve()}/run/redis.sock")
    raw.bgsave()  # also put the current state on disk, as a snapshot would
    wait_for(lambda: raw.lastsave().timestamp() > time.time() - 10, what="the snapshot")
    stored = _every_redis_value(raw)
    files = {p: p.read_bytes() for p in gw.data_dir.rglob("*")
             if p.is_file() and "simnet" not in p.relative_to(gw.data_dir).parts}  # simnet is WhatsApp's side
    assert any(p.suffix in (".aof", ".rdb") or "appendonly" in p.name for p in files), "Redis wrote its files"
    secrets = [t.encode() for t in inbound + outbound + [EMOJI]] + [data[4:60] for data in media.values()]
    secrets.append(mp3[len(mp3) // 2:len(mp3) // 2 + 64])  # the voice note ffmpeg converted
    assert list(scratch.iterdir()) == [], "ffmpeg (or the gateway) left a file in TMPDIR"
    for secret in secrets + [base64.b64encode(data[:3000]) for data in media.values()]:
        assert secret not in stored, "a Redis key holds message content"
        for path, content in files.items():
            assert secret not in content, f"{path} holds message content"
    assert not rq_job_keys(raw)
