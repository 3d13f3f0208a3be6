"""Outgoing HTTP requests to addresses our users choose (webhooks), never into our own network.

A user-supplied URL is a server-side request forgery waiting to happen: `http://169.254.169.254/` reads the cloud
metadata (credentials), `http://10.0.0.5:6379/` talks to our Redis. So `post` resolves the host itself, refuses it if
ANY of its addresses is not a public one (loopback, private, link-local, CGNAT, multicast, reserved, unspecified, an
IPv4-mapped IPv6 form of those, the metadata addresses), and then connects to the address it vetted — not to the name
again, so DNS that answers differently a moment later (rebinding) cannot redirect the request — while the Host header
and TLS (SNI and the certificate check) still use the name. It never follows a redirect (a 3xx is the answer, not a
hop), uses bounded timeouts, ignores proxy variables from the environment, and reads at most MAX_RESPONSE_BYTES.

`settings.OUTGOING_ALLOW_LOOPBACK` (tests, a receiver on a developer's machine) lets loopback addresses through, and
nothing else.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0  # between two reads of the socket
TOTAL_READ_SECONDS = 15.0  # the whole body: a server that drips a byte every 9 s still ends here
MAX_RESPONSE_BYTES = 64 * 1024
EXCERPT_CHARS = 500
MAX_ADDRESSES_TRIED = 3  # a name with several addresses: the next one only when the previous never connected

SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})


class OutgoingError(Exception):
    """The request got no HTTP answer: the name did not resolve, the connection failed or timed out, TLS failed."""


class OutgoingRefused(OutgoingError):  # noqa: N818 - a refusal, not an error of ours: the name says which
    """The URL points at an address we never send to (see refusal_reason)."""

    def __init__(self, host: str, address: str, reason: str):
        super().__init__(f"{host} resolves to {address}, a {reason} address: refused")
        self.host = host
        self.address = address
        self.reason = reason


@dataclass(frozen=True)
class OutgoingResponse:
    status: int
    excerpt: str  # the start of the body, decoded leniently, at most EXCERPT_CHARS
    duration_ms: int  # from resolving the name to the end of the (capped) body
    address: str  # the address that answered


def refusal_reason(address: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why we never send to `address` ("private", "loopback", …), or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal_reason(address.ipv4_mapped, allow_loopback=allow_loopback)  # ::ffff:10.0.0.1 is 10.0.0.1
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    if address.is_loopback:
        return None if allow_loopback else "loopback"
    checks = (
        ("unspecified", address.is_unspecified),  # 0.0.0.0 reaches this machine on Linux
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("carrier-grade NAT", address in SHARED_ADDRESS_SPACE),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-public", not address.is_global),  # anything else IANA lists as not globally reachable
    )
    return next((reason for reason, hit in checks if hit), None)


def _parse(value: str) -> IPAddress:
    return ipaddress.ip_address(value.split("%", 1)[0])  # fe80::1%eth0: the zone is not part of the address


def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses `host` resolves to, IPv4 first, all of them vetted: OutgoingRefused if any one is refused
    (a name with one private address among public ones could be answered with that one), OutgoingError if none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as error:
        raise OutgoingError(f"{host} does not resolve") from error
    addresses = list(dict.fromkeys(_parse(str(info[4][0])) for info in infos))
    if not addresses:
        raise OutgoingError(f"{host} does not resolve")
    allow_loopback = settings.OUTGOING_ALLOW_LOOPBACK
    for address in addresses:
        reason = refusal_reason(address, allow_loopback=allow_loopback)
        if reason:
            raise OutgoingRefused(host, str(address), reason)
    return sorted(addresses, key=lambda address: address.version)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as in the URL, without brackets
    port: int
    host_header: str  # host[:port] as the receiver expects it


def parse_url(url: str) -> Target:
    """The parts of an http(s) URL `post` needs; ValueError when it has none, or carries credentials."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("Use an http:// or https:// URL.")
    if parts.username is not None or parts.password is not None:
        raise ValueError("Leave credentials out of the URL; verify the signature instead.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError("The URL needs a host name.")
    if not host.isascii():  # an internationalised name: its ASCII form is what DNS, SNI and Host carry
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("The host name is not a valid domain name.") from None
    port = parts.port  # raises ValueError for a port out of range
    port = (443 if scheme == "https" else 80) if port is None else port
    if port == 0:
        raise ValueError("Port 0 cannot be connected to.")
    bracketed = f"[{host}]" if ":" in host else host
    default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    return Target(scheme, host, port, bracketed if default else f"{bracketed}:{port}")


def check_url(url: str) -> Target:
    """What a form checks before it stores a URL: a well-formed http(s) URL whose host resolves, to public addresses
    only. ValueError (bad URL), OutgoingRefused, or OutgoingError (does not resolve)."""
    target = parse_url(url)
    resolve(target.host, target.port)
    return target


class _PinnedAddressAdapter(HTTPAdapter):
    """Connects to the URL's host, which `post` has replaced by a vetted address, while TLS sends the original name
    (SNI) and checks the certificate against it."""

    def __init__(self, server_hostname: str):
        self.server_hostname = server_hostname
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = self.server_hostname
        return host_params, pool_kwargs


def _never_connected(error: requests.ConnectionError) -> bool:
    """A connection that never opened (refused, unreachable, connect timeout): nothing was sent, another address of
    the same name may be tried. Anything later (a reset mid-answer) may have reached the receiver."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, NewConnectionError)


def _describe(error: requests.RequestException) -> str:
    if isinstance(error, requests.ConnectTimeout):
        return f"connection timed out after {CONNECT_TIMEOUT:g} s"
    if isinstance(error, requests.ReadTimeout):
        return f"no answer within {READ_TIMEOUT:g} s"
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS failed: " + str(error.args[0] if error.args else error)[-160:]
    if isinstance(error, requests.ConnectionError) and _never_connected(error):
        return "could not connect: " + str(error.args[0] if error.args else error)[-160:]
    return f"{type(error).__name__}: {error}"[:200]


def _read_capped(response: requests.Response) -> bytes:
    body = b""
    deadline = time.monotonic() + TOTAL_READ_SECONDS
    for chunk in response.raw.stream(8192, decode_content=True):
        body += chunk
        if len(body) >= MAX_RESPONSE_BYTES or time.monotonic() > deadline:
            break
    return body[:MAX_RESPONSE_BYTES]


def post(url: str, body: bytes, headers: Mapping[str, str], *, verify: bool | str = True) -> OutgoingResponse:
    """POST `body` to a user-supplied URL, safely (see the module docstring). Returns any HTTP answer, 3xx and 5xx
    included; raises OutgoingRefused for a refused address and OutgoingError when there is no answer. `verify` is a
    CA bundle path for tests; production always checks certificates against the system's trusted roots."""
    started = time.monotonic()
    try:
        target = parse_url(url)
    except ValueError as error:
        raise OutgoingError(str(error)) from error
    addresses = resolve(target.host, target.port)
    parts = urlsplit(url)
    last_error: requests.RequestException | None = None
    with requests.Session() as session:
        session.trust_env = False  # no HTTP(S)_PROXY, no .netrc: a proxy would connect to the name, not our address
        session.mount(f"{target.scheme}://", _PinnedAddressAdapter(target.host))
        for address in addresses[:MAX_ADDRESSES_TRIED]:
            literal = f"[{address}]" if address.version == 6 else str(address)
            pinned_url = urlunsplit(parts._replace(netloc=f"{literal}:{target.port}"))
            try:
                response = session.post(
                    pinned_url,
                    data=body,
                    # Identity: we read an excerpt only, and a compressed answer could inflate far past the cap.
                    headers={**headers, "Host": target.host_header, "Accept-Encoding": "identity"},
                    timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                    allow_redirects=False,
                    stream=True,
                    verify=verify,
                )
            except requests.ConnectionError as error:
                last_error = error
                if _never_connected(error):
                    continue
                raise OutgoingError(_describe(error)) from error
            except requests.RequestException as error:
                raise OutgoingError(_describe(error)) from error
            with response:
                try:
                    content = _read_capped(response)
                except (urllib3.exceptions.HTTPError, OSError) as error:  # a reset or a timeout mid-body
                    raise OutgoingError(f"the answer broke off: {type(error).__name__}"[:200]) from error
            return OutgoingResponse(
                status=response.status_code,
                excerpt=content.decode("utf-8", errors="replace")[:EXCERPT_CHARS],
                duration_ms=round((time.monotonic() - started) * 1000),
                address=str(address),
            )
    assert last_error is not None  # the loop ran at least once: resolve() never returns an empty list
    raise OutgoingError(_describe(last_error)) from last_error
