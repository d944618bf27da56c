"""Fetching `media.url` for POST /send without lending the gateway's network position to the caller.

Any token holder chooses the URL, and the gateway sits next to things the caller cannot reach (its
own API, Redis, supervisord, simnet, a cloud's metadata service, the office LAN). So a URL is fetched
only from a public address, or from one that WHIN_MEDIA_ALLOW names:

- The host is resolved here, once per hop, and every address it resolves to is checked
  (`is_public_address`); then the connection goes to that checked IP itself (urllib3's pool is given
  the IP; the Host header, TLS SNI and the certificate check use the name). Nothing resolves the
  name a second time, so DNS rebinding has nothing to race, and no proxy from the environment is used.
- Redirects are followed here, at most MAX_REDIRECTS, each hop parsed, resolved and checked afresh.
- Every refusal and every failure (an address refused, a name that does not resolve, a port closed
  or filtered, a TLS error, an HTTP status other than 200, too many redirects, too slow) is the same
  answer: 422 `media_unreachable` with one fixed sentence, so the answer tells nothing about what
  lies behind the gateway. The real reason goes to the log at INFO, with the URL's scheme, host,
  port and path but never its query string (it may carry a token) and never any content.
- `media_too_large` stays a separate answer: it can only come from an address that was allowed and
  that answered 200, so it tells the caller nothing the caller could not learn from that host itself.

Longer than most modules (~290 lines) on purpose: resolution, the address rules, the pinned
connection and the redirect loop are one security boundary, and reading it in one place is the point.
"""

import base64
import http.client
import ipaddress
import logging
import socket
import threading
import time
import traceback
from urllib.parse import unquote, urljoin, urlsplit

import certifi
import urllib3
from urllib3.util import Timeout

from controlplane.core.errors import Refused

log = logging.getLogger("controlplane.media")

UNREACHABLE = ("The media URL could not be fetched: it did not answer 200 with the media in time, or it is not"
               " an address the gateway fetches from (see WHIN_MEDIA_ALLOW).")
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
CHUNK = 64 * 1024

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Not covered by Python 3.11's is_private / is_global but never a public host.
_NOT_PUBLIC = [ipaddress.ip_network(n) for n in (
    "100.64.0.0/10",   # carrier-grade NAT (RFC 6598): a provider's internal network
    "192.0.0.0/24",    # IETF protocol assignments
    "198.18.0.0/15",   # benchmarking
    "fec0::/10",       # deprecated site-local
)]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known NAT64 prefix: an IPv4 address in disguise


class _Unreachable(Exception):
    """Why a fetch failed, for the log only: the caller gets UNREACHABLE whatever it says."""


def is_public_address(address: Address) -> bool:
    """True for an address on the public internet: not loopback, private, link-local (169.254.169.254,
    the metadata service, included), CGNAT, multicast, reserved or unspecified, including an IPv4
    address inside IPv6 (::ffff:127.0.0.1, 6to4, NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    if (address.is_loopback or address.is_private or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified or not address.is_global):
        return False
    return not any(address in network for network in _NOT_PUBLIC)


class MediaAllow:
    """WHIN_MEDIA_ALLOW, parsed (config.parse_media_allow): networks and host names allowed even if not public.

    A network allows the addresses inside it; a host name (``files.inmovilla.local``, or
    ``*.inmovilla.local`` for its subdomains) allows whatever addresses that name resolves to.
    """

    def __init__(self, entries=()):
        self.networks: list[Network] = [e for e in entries if not isinstance(e, str)]
        names = [e for e in entries if isinstance(e, str)]
        self.names = {n for n in names if not n.startswith("*.")}
        self.suffixes = tuple(n[1:] for n in names if n.startswith("*."))  # ".inmovilla.local"

    def allows_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.names or host.endswith(self.suffixes)

    def allows(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def _system_resolve(host: str, port: int, timeout: float) -> list[str]:
    """getaddrinfo, bounded in time (it has no timeout of its own): its thread is left to finish alone."""
    box: dict = {}

    def run():
        try:
            box["addresses"] = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
        except Exception as err:  # reported below, whatever it is
            box["error"] = err

    thread = threading.Thread(target=run, name="media-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if "addresses" in box:
        return box["addresses"]
    if "error" in box:
        raise _Unreachable(f"the name does not resolve ({type(box['error']).__name__})")
    raise _Unreachable("the name did not resolve in time")


class MediaFetcher:
    """Fetches one media URL within max_bytes and timeout seconds, from allowed addresses only."""

    def __init__(self, allow: MediaAllow, max_bytes: int, timeout: float, ca_certs: str | None = None):
        self.allow = allow
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.ca_certs = ca_certs or certifi.where()

    def fetch(self, url: str) -> tuple[bytes, str]:
        """The media's bytes and mimetype; Refused media_unreachable (always the same sentence) or media_too_large."""
        deadline = time.monotonic() + self.timeout
        where = _loggable(url)
        try:
            first = urlsplit(url)
            for _ in range(MAX_REDIRECTS + 1):
                where = _loggable(url)
                response, pool = self._get(url, first, deadline)
                try:
                    if response.status in REDIRECTS and response.headers.get("Location"):
                        url = urljoin(url, response.headers["Location"])
                        continue
                    if response.status != 200:
                        raise _Unreachable(f"it answered HTTP {response.status}")
                    return self._body(response, deadline), _mimetype(response)
                finally:
                    response.close()
                    pool.close()
            raise _Unreachable(f"more than {MAX_REDIRECTS} redirects")
        except _Unreachable as err:
            log.info("media.url not fetched: %s (%s)", err, where)
        except TooLarge:
            log.info("media.url not fetched: larger than %d bytes (%s)", self.max_bytes, where)
            raise Refused("media_too_large", f"The media at the URL is larger than {self.max_bytes} bytes.") from None
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError) as err:
            log.info("media.url not fetched: %s (%s)", _describe(err), where)  # ssl.SSLError is an OSError
        except Exception as err:  # a bug here must not become a 500 that tells this URL apart from the others
            frame = traceback.extract_tb(err.__traceback__)[-1]  # where, not the message: it may quote the URL
            log.warning("media.url not fetched: unexpected %s at %s:%s (%s)", type(err).__name__,
                        frame.filename, frame.lineno, where)
        raise Refused("media_unreachable", UNREACHABLE)

    # --- one hop ---

    def _get(self, url: str, first, deadline: float) -> tuple[urllib3.HTTPResponse, urllib3.HTTPConnectionPool]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise _Unreachable(f"a {parts.scheme or 'scheme-less'} URL")
        if not parts.hostname:
            raise _Unreachable("no host in the URL")
        host = parts.hostname.rstrip(".")
        try:
            ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
        except UnicodeError:
            raise _Unreachable("a host name that cannot be encoded") from None
        port = parts.port or (443 if parts.scheme == "https" else 80)  # a bad port: ValueError, caught above
        addresses = self._addresses(ascii_host, port, deadline)
        shown = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
        headers = {
            "Host": shown if parts.port in (None, 443 if parts.scheme == "https" else 80) else f"{shown}:{port}",
            "User-Agent": "whinmovilla",
            "Accept": "*/*",
            "Accept-Encoding": "identity",
        }
        same_origin = (parts.scheme, parts.hostname, parts.port) == (first.scheme, first.hostname, first.port)
        if parts.username is not None and same_origin:  # credentials in the URL go to its own origin only
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        last: Exception | None = None
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Unreachable("no connection in time")
            timeout = Timeout(connect=min(5.0, remaining), read=min(10.0, remaining))
            if parts.scheme == "https":
                # SNI and the certificate check use the name; the socket goes to the checked address.
                pool = urllib3.HTTPSConnectionPool(str(address), port, timeout=timeout, retries=False, maxsize=1,
                                                   cert_reqs="CERT_REQUIRED", ca_certs=self.ca_certs,
                                                   server_hostname=ascii_host)
            else:
                pool = urllib3.HTTPConnectionPool(str(address), port, timeout=timeout, retries=False, maxsize=1)
            try:
                response = pool.urlopen("GET", target, headers=headers, redirect=False, retries=False,
                                        preload_content=False, assert_same_host=False, release_conn=False)
            except urllib3.exceptions.NewConnectionError as err:  # this address does not answer: the next may
                pool.close()
                last = err
                continue
            except BaseException:
                pool.close()
                raise
            try:
                self._check_peer(response, address)
            except BaseException:
                response.close()
                pool.close()
                raise
            return response, pool
        raise _Unreachable(f"no connection ({_describe(last)})")

    def _addresses(self, host: str, port: int, deadline: float) -> list[Address]:
        """The addresses to connect to: every one the host resolves to must be allowed, or none is used."""
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Unreachable("no time left to resolve the name") from None
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in _system_resolve(host, port, remaining)]
        if not addresses:
            raise _Unreachable("the name has no address")
        if not self.allow.allows_name(host):
            for address in addresses:
                if not (self.allow.allows(address) or is_public_address(address)):
                    raise _Unreachable(f"address {address} is not public and not in WHIN_MEDIA_ALLOW")
        return list(dict.fromkeys(addresses))

    @staticmethod
    def _check_peer(response, address: Address) -> None:
        """The socket is connected to the address that was checked (belt and braces: it was given that IP)."""
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is None:
            return
        peer = ipaddress.ip_address(sock.getpeername()[0].split("%")[0])
        if peer != address:
            raise _Unreachable(f"connected to {peer}, not the checked {address}")

    def _body(self, response, deadline: float) -> bytes:
        if int(response.headers.get("Content-Length") or 0) > self.max_bytes:
            raise TooLarge
        chunks, size = [], 0
        # read1: whatever has arrived (read(n) would wait for n bytes or the end), so a trickle cannot
        # outlast the deadline by more than one read timeout.
        while chunk := response.read1(CHUNK, decode_content=True):
            size += len(chunk)
            if size > self.max_bytes:
                raise TooLarge
            if time.monotonic() > deadline:
                raise _Unreachable(f"took longer than {self.timeout:g} s")
            chunks.append(chunk)
        return b"".join(chunks)


class TooLarge(Exception):
    """The body is over max_bytes (from an allowed address that answered 200)."""


def _mimetype(response) -> str:
    return (response.headers.get("Content-Type") or "application/octet-stream").split(";")[0].strip()


def _describe(err: Exception | None) -> str:
    if err is None:
        return "no address"
    reason = getattr(err, "reason", None) or getattr(err, "__cause__", None)
    return type(err).__name__ + (f": {type(reason).__name__}" if isinstance(reason, Exception) else "")


def _loggable(url: str) -> str:
    """The URL as the log may show it: scheme, host, port and path; no credentials, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"
    except ValueError:
        return "an unparsable URL"
