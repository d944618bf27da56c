"""media.url is fetched from public addresses and WHIN_MEDIA_ALLOW only (issue 10, item 1: SSRF).

Only loopback is used. Two real HTTP servers share one port: 127.0.0.1 plays what lies behind the
gateway (it serves a secret and records every request), 127.0.0.2 plays a host on the internet (the
tests allow it with WHIN_MEDIA_ALLOW=127.0.0.2/32). DNS is faked at socket.getaddrinfo, so a
"public" name can resolve to loopback, or answer differently the second time it is asked (rebinding).
"""

import datetime
import ipaddress
import logging
import socket
import ssl
import threading
from http.server import ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controlplane.core.config import ConfigError, Settings, parse_media_allow
from controlplane.core.errors import Refused
from controlplane.messaging.media_fetch import UNREACHABLE, MediaAllow, MediaFetcher, is_public_address
from tests.httpserver import QuietHandler

SECRET = b"internal secret: never leaves the host"
OUTSIDE = b"\xff\xd8\xff\xe0 a photo from the internet"
OUTSIDE_ADDRESS = "127.0.0.2"  # allowed in these tests: it stands for a public host


class Recorder(QuietHandler):
    requests: list  # set per server

    def do_GET(self):
        self.requests.append(self.path)
        self.route()


def _server(address: str, port: int, handler) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((address, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def hosts():
    """(port, internal requests, outside requests): both servers listen on the same port."""
    internal_log, outside_log = [], []

    class Internal(Recorder):
        requests = internal_log

        def route(self):
            self.answer(200, SECRET, "text/plain")

    class Outside(Recorder):
        requests = outside_log

        def route(self):
            port = self.server.server_address[1]
            redirects = {"/to-loopback": f"http://127.0.0.1:{port}/secret.txt",
                         "/to-loopback-name": f"http://internal.example.test:{port}/secret.txt",
                         "/to-file": "file:///etc/passwd",
                         "/relative": "/photo.jpg",
                         "/loop": "/loop"}
            path = self.path.split("?")[0]
            if path in redirects:
                self.send_response(302)
                self.send_header("Location", redirects[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/missing.jpg":
                self.answer(404)
            elif path == "/big.bin":
                self.answer(200, b"x" * 5000, "application/octet-stream")
            else:
                self.answer(200, OUTSIDE, "image/jpeg")

    for _ in range(20):  # a free port on 127.0.0.1 that is free on 127.0.0.2 too
        internal = _server("127.0.0.1", 0, Internal)
        port = internal.server_address[1]
        try:
            outside = _server(OUTSIDE_ADDRESS, port, Outside)
            break
        except OSError:
            internal.shutdown()
            internal.server_close()
    else:
        pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2")
    yield port, internal_log, outside_log
    for server in (internal, outside):
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def fresh_logs(hosts):
    hosts[1].clear()
    hosts[2].clear()


@pytest.fixture
def dns(monkeypatch):
    """Fake names: dns["name"] = [first answer, second answer, ...] (the last repeats); lookups are recorded."""
    real = socket.getaddrinfo
    names: dict[str, list[list[str]]] = {}
    asked: list[str] = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        try:  # a literal address (also 127.1 and 2130706433, which the C library accepts): as the system says
            return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            pass
        if host == "localhost":
            return real(host, port, family, type, proto, flags)
        asked.append(host)
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = names[host]
        current = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port, 0, 0) if ":" in a else (a, port)) for a in current]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return _Names(names, asked)


class _Names:
    def __init__(self, names, asked):
        self.names, self.asked = names, asked

    def __setitem__(self, name, answers):
        self.names[name] = [list(a) for a in answers]


def fetcher(allow: str = f"{OUTSIDE_ADDRESS}/32", **kwargs) -> MediaFetcher:
    return MediaFetcher(MediaAllow(parse_media_allow(allow)), kwargs.pop("max_bytes", 1000), kwargs.pop("timeout", 5),
                        **kwargs)


def refused(fetch, url: str) -> Refused:
    with pytest.raises(Refused) as caught:
        fetch.fetch(url)
    return caught.value


# --- what is refused ---

@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1", "2130706433", "[::ffff:127.0.0.1]",
                                  "internal.example.test"])
def test_a_loopback_address_however_spelled_is_refused_and_never_requested(hosts, dns, host):
    port, internal, _ = hosts
    dns["internal.example.test"] = [["127.0.0.1"]]  # a public-looking name that points inside
    err = refused(fetcher(), f"http://{host}:{port}/secret.txt")
    assert (err.code, err.detail) == ("media_unreachable", UNREACHABLE)
    assert internal == []


def test_a_name_with_one_internal_address_among_allowed_ones_is_refused(hosts, dns):
    port, internal, outside = hosts
    dns["mixed.example.test"] = [[OUTSIDE_ADDRESS, "127.0.0.1"]]
    assert refused(fetcher(), f"http://mixed.example.test:{port}/photo.jpg").code == "media_unreachable"
    assert internal == [] and outside == []


def test_dns_rebinding_gets_the_address_that_was_checked_not_a_second_answer(hosts, dns):
    """The name answers an allowed address first and loopback from then on: only one lookup counts."""
    port, internal, outside = hosts
    dns["rebind.example.test"] = [[OUTSIDE_ADDRESS], ["127.0.0.1"]]
    data, mimetype = fetcher().fetch(f"http://rebind.example.test:{port}/secret.txt")
    assert (data, mimetype) == (OUTSIDE, "image/jpeg")
    assert internal == [] and outside == ["/secret.txt"]
    assert dns.asked == ["rebind.example.test"]


@pytest.mark.parametrize("path", ["/to-loopback", "/to-loopback-name", "/to-file"])
def test_a_redirect_from_an_allowed_host_to_loopback_is_refused(hosts, dns, path):
    port, internal, outside = hosts
    dns["internal.example.test"] = [["127.0.0.1"]]
    err = refused(fetcher(), f"http://{OUTSIDE_ADDRESS}:{port}{path}")
    assert (err.code, err.detail) == ("media_unreachable", UNREACHABLE)
    assert outside == [path] and internal == []


def test_redirects_between_allowed_places_are_followed_a_bounded_number_of_times(hosts, dns):
    port, _, outside = hosts
    assert fetcher().fetch(f"http://{OUTSIDE_ADDRESS}:{port}/relative") == (OUTSIDE, "image/jpeg")
    outside.clear()
    assert refused(fetcher(), f"http://{OUTSIDE_ADDRESS}:{port}/loop").code == "media_unreachable"
    assert outside == ["/loop"] * 6  # the first request and five redirects


def test_every_refusal_and_every_failure_is_the_same_answer(hosts, dns):
    """Refused address, closed port (refused or allowed address), no such name, 404, redirect loop,
    TLS to a plain server, a malformed URL: nothing in the answer tells them apart, so /send is no port scanner."""
    port, internal, _ = hosts
    with socket.socket() as s:  # a port nobody listens on, on the allowed address
        s.bind((OUTSIDE_ADDRESS, 0))
        closed = s.getsockname()[1]
    urls = [f"http://127.0.0.1:{port}/secret.txt", "http://127.0.0.1:9/", f"http://{OUTSIDE_ADDRESS}:{closed}/",
            "http://nowhere.example.test/photo.jpg", f"http://{OUTSIDE_ADDRESS}:{port}/missing.jpg",
            f"http://{OUTSIDE_ADDRESS}:{port}/loop", f"https://{OUTSIDE_ADDRESS}:{port}/photo.jpg",
            "http://169.254.169.254/latest/meta-data/", "http://[::1]:22/", "http://10.1.2.3:6379/",
            "http://[::1", f"http://{OUTSIDE_ADDRESS}:99999/", "http:///photo.jpg"]
    answers = {(e.code, e.detail, e.status) for e in (refused(fetcher(), url) for url in urls)}
    assert answers == {("media_unreachable", UNREACHABLE, 422)}
    assert internal == []


# --- what is allowed ---

@pytest.mark.parametrize(("allow", "host"), [("127.0.0.1/32", "127.0.0.1"), ("127.0.0.0/8", "localhost"),
                                             ("files.inmovilla.test", "files.inmovilla.test"),
                                             ("*.inmovilla.test", "media.files.inmovilla.test"),
                                             (" 10.0.0.0/8 , FILES.inmovilla.test. ", "files.inmovilla.test")])
def test_whin_media_allow_lets_an_internal_file_server_through(hosts, dns, allow, host):
    port, internal, _ = hosts
    dns["files.inmovilla.test"] = [["127.0.0.1"]]
    dns["media.files.inmovilla.test"] = [["127.0.0.1"]]
    assert fetcher(allow).fetch(f"http://{host}:{port}/secret.txt") == (SECRET, "text/plain")
    assert internal == ["/secret.txt"]


def test_a_wildcard_allows_subdomains_only(hosts, dns):
    port, internal, _ = hosts
    for name in ("inmovilla.test", "evilinmovilla.test", "inmovilla.test.evil.test"):
        dns[name] = [["127.0.0.1"]]
        assert refused(fetcher("*.inmovilla.test"), f"http://{name}:{port}/secret.txt").code == "media_unreachable"
    assert internal == []


def test_an_allowed_host_over_the_size_bound_is_media_too_large(hosts):
    port, _, _ = hosts
    err = refused(fetcher(max_bytes=1000), f"http://{OUTSIDE_ADDRESS}:{port}/big.bin")
    assert err.code == "media_too_large"


def test_the_log_says_why_at_info_without_the_query_string(hosts, dns, caplog):
    port, _, _ = hosts
    caplog.set_level(logging.INFO, logger="controlplane.media")
    refused(fetcher(), f"http://127.0.0.1:{port}/secret.txt?token=s3cr3t-t0ken#frag")
    refused(fetcher(), f"http://user:pa55word@{OUTSIDE_ADDRESS}:{port}/missing.jpg?sig=s1gnature")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert f"address 127.0.0.1 is not public and not in WHIN_MEDIA_ALLOW (http://127.0.0.1:{port}/secret.txt)" in logged
    assert f"answered HTTP 404 (http://{OUTSIDE_ADDRESS}:{port}/missing.jpg)" in logged
    for secret in ("s3cr3t", "token=", "frag", "pa55word", "user", "s1gnature"):
        assert secret not in logged


# --- TLS: connecting to the checked IP, verifying the certificate against the name ---

@pytest.fixture(scope="module")
def tls_host(tmp_path_factory):
    """An HTTPS server on the outside address with a certificate for media.example.test from a test CA."""
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whin test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "media")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("media.example.test")]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "leaf.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    names_seen = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "leaf.pem", folder / "leaf.key")
    context.sni_callback = lambda sock, name, ctx: names_seen.append(name)

    class Handler(QuietHandler):
        def do_GET(self):
            self.answer(200, OUTSIDE, "image/jpeg")

    server = ThreadingHTTPServer((OUTSIDE_ADDRESS, 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], str(folder / "ca.pem"), names_seen
    server.shutdown()
    server.server_close()


def test_https_goes_to_the_checked_address_with_sni_and_certificate_checked_for_the_name(tls_host, dns):
    port, ca, names_seen = tls_host
    dns["media.example.test"] = [[OUTSIDE_ADDRESS], ["127.0.0.1"]]
    dns["other.example.test"] = [[OUTSIDE_ADDRESS]]
    assert fetcher(ca_certs=ca).fetch(f"https://media.example.test:{port}/piso.jpg") == (OUTSIDE, "image/jpeg")
    assert names_seen[-1] == "media.example.test"
    # The same server under a name its certificate does not carry, or with no CA that signed it: refused.
    assert refused(fetcher(ca_certs=ca), f"https://other.example.test:{port}/piso.jpg").code == "media_unreachable"
    assert refused(fetcher(), f"https://media.example.test:{port}/piso.jpg").code == "media_unreachable"


# --- the address rules and the setting ---

@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("93.184.216.34", True), ("2606:4700:4700::1111", True), ("2a00:1450:4003:80e::200e", True),
    ("127.0.0.1", False), ("127.255.255.254", False), ("0.0.0.0", False), ("10.0.0.1", False),
    ("172.16.5.4", False), ("172.31.255.255", False), ("192.168.1.1", False), ("169.254.169.254", False),
    ("169.254.0.1", False), ("100.64.0.1", False), ("100.127.255.254", False), ("192.0.0.1", False),
    ("198.18.0.1", False), ("224.0.0.1", False), ("239.255.255.250", False), ("255.255.255.255", False),
    ("240.0.0.1", False), ("192.0.2.1", False),
    ("::1", False), ("::", False), ("fe80::1", False), ("fd00::1", False), ("fd00:ec2::254", False),
    ("fc00::1", False), ("ff02::1", False), ("fec0::1", False), ("2001:db8::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False), ("::ffff:8.8.8.8", True),
    ("64:ff9b::7f00:1", False), ("64:ff9b::808:808", True), ("2002:7f00:1::1", False), ("2002:a00:1::1", False),
])
def test_which_addresses_are_public(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_the_setting_takes_networks_and_names_and_refuses_anything_else():
    assert Settings.from_env({}).media_allow == ()
    assert Settings.from_env({"WHIN_MEDIA_ALLOW": "10.0.0.0/8, 192.168.1.20,fd12::/16,files.inmovilla.local,"
                                                  "*.Inmovilla.LOCAL."}).media_allow == (
        ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.1.20/32"),
        ipaddress.ip_network("fd12::/16"), "files.inmovilla.local", "*.inmovilla.local")
    for bad in ("10.0.0.0/33", "10.0.0", "http://files.local", "files local", "*", "a..b", "files.local/24"):
        with pytest.raises(ConfigError, match="WHIN_MEDIA_ALLOW"):
            Settings.from_env({"WHIN_MEDIA_ALLOW": bad})
