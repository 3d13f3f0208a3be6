"""The relay's JSON-RPC upstream client (relay/upstream.py) against real sockets: small asyncio servers that answer
as a node does, and as a broken one would."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay import upstream
from relay.upstream import UpstreamConnectionError, UpstreamPool

CALL = b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}'
ANSWER = b'{"jsonrpc":"2.0","id":1,"result":"0x10"}'
Reply = Callable[[bytes], bytes | None]  # the request's bytes → what to write back (None: close without answering)


def ok(body: bytes = ANSWER, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


class Node:
    """A TCP server reading one HTTP request at a time (Content-Length bodies) and answering with `reply`."""

    def __init__(self, reply: Reply, ssl_context: ssl.SSLContext | None = None, *, hang_up: bool = False):
        self.reply = reply
        self.hang_up = hang_up  # close the connection after each answer
        self.port = 0
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Node:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.reply(request)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.hang_up:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """The scenario on a fresh event loop in a thread of its own: a browser test earlier in the same worker leaves
    Playwright's loop running in the main thread, where asyncio.run refuses to start another."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result(timeout=60)  # type: ignore[arg-type]


def test_calls_share_one_keep_alive_connection_and_send_exactly_the_body() -> None:
    async def scenario() -> None:
        async with Node(lambda _request: ok()) as node:
            pool = UpstreamPool(f"http://127.0.0.1:{node.port}/rpc?chain=1")
            answers = [await pool.post(CALL, 2.0) for _ in range(5)]
            pool.close()
        assert answers == [(200, ANSWER)] * 5
        assert node.connections == 1
        head, _, body = node.requests[0].partition(b"\r\n\r\n")
        assert body == CALL
        assert head.split(b"\r\n")[0] == b"POST /rpc?chain=1 HTTP/1.1"
        assert f"Host: 127.0.0.1:{node.port}".encode() in head.split(b"\r\n")
        assert b"Content-Type: application/json" in head.split(b"\r\n")

    run(scenario)


def test_concurrent_calls_open_at_most_limit_connections() -> None:
    async def scenario() -> None:
        async with Node(lambda _request: ok()) as node:
            pool = UpstreamPool(f"http://127.0.0.1:{node.port}/", limit=2)
            answers = await asyncio.gather(*(pool.post(CALL, 2.0) for _ in range(10)))
            pool.close()
        assert answers == [(200, ANSWER)] * 10
        assert node.connections == 2

    run(scenario)


def test_a_chunked_answer_is_joined_and_a_status_is_passed_on() -> None:
    head = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked = head + b'5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n'

    async def scenario() -> None:
        async with Node(lambda _request: chunked) as node:
            pool = UpstreamPool(f"http://127.0.0.1:{node.port}/")
            assert await pool.post(CALL, 2.0) == (503, b'{"a":1}')
            pool.close()

    run(scenario)


def test_a_connection_the_upstream_closes_is_not_reused() -> None:
    async def scenario() -> None:
        async with Node(lambda _request: ok(extra="Connection: close\r\n")) as node:
            pool = UpstreamPool(f"http://127.0.0.1:{node.port}/")
            assert [await pool.post(CALL, 2.0) for _ in range(3)] == [(200, ANSWER)] * 3
            pool.close()
        assert node.connections == 3

    run(scenario)


def test_an_idle_connection_the_upstream_dropped_is_replaced() -> None:
    async def scenario() -> None:
        async with Node(lambda _request: ok(), hang_up=True) as node:  # closes each connection once it answered
            pool = UpstreamPool(f"http://127.0.0.1:{node.port}/")
            answers = []
            for _ in range(3):
                answers.append(await pool.post(CALL, 2.0))
                await asyncio.sleep(0.05)  # the node's close arrives while the connection is idle in the pool
            assert answers == [(200, ANSWER)] * 3
            pool.close()
        assert node.connections == 3

    run(scenario)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (lambda _request: None, "closed the connection before answering"),
        (lambda _request: b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial', "closed the connection"),
        (lambda _request: b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not HTTP"),
    ],
    ids=["no answer", "cut short", "not http"],
)
def test_a_broken_answer_is_a_failure_and_the_connection_is_dropped(reply: Reply, message: str) -> None:
    async def scenario() -> None:
        async with Node(reply, hang_up=True) as node:
            pool = UpstreamPool(f"http://127.0.0.1:{node.port}/")
            with pytest.raises(UpstreamConnectionError, match=message) as failure:
                await pool.post(CALL, 2.0)
            assert not failure.value.timeout
            assert not pool.idle

    run(scenario)


def test_an_answer_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "MAX_ANSWER_BYTES", 1000)

    async def scenario() -> None:
        async with Node(lambda _request: ok(b"x" * 1001)) as node:
            pool = UpstreamPool(f"http://127.0.0.1:{node.port}/")
            with pytest.raises(UpstreamConnectionError, match="over 1,000 bytes"):
                await pool.post(CALL, 2.0)
            assert not pool.idle

    run(scenario)


def test_a_slow_upstream_times_out_and_its_connection_is_dropped() -> None:
    async def scenario() -> None:
        async with Node(lambda _request: b"HTTP/1.1 200 OK\r\n") as node:  # the head begun, never finished
            pool = UpstreamPool(f"http://127.0.0.1:{node.port}/")
            started = asyncio.get_running_loop().time()
            with pytest.raises(UpstreamConnectionError) as failure:
                await pool.post(CALL, 0.2)
            assert failure.value.timeout
            assert 0.2 <= asyncio.get_running_loop().time() - started < 1.5
            assert not pool.idle

    run(scenario)


def test_an_unreachable_upstream_is_a_failure() -> None:
    async def scenario() -> None:
        pool = UpstreamPool("http://127.0.0.1:9/")
        with pytest.raises(UpstreamConnectionError, match="unreachable") as failure:
            await pool.post(CALL, 2.0)
        assert not failure.value.timeout

    run(scenario)


def test_credentials_in_the_url_are_sent_as_basic_auth() -> None:
    async def scenario() -> None:
        async with Node(lambda _request: ok()) as node:
            pool = UpstreamPool(f"http://relay:s%40cret@127.0.0.1:{node.port}/")
            await pool.post(CALL, 2.0)
            pool.close()
        lines = node.requests[0].partition(b"\r\n\r\n")[0].split(b"\r\n")
        assert f"Authorization: Basic {base64.b64encode(b'relay:s@cret').decode()}".encode() in lines
        assert f"Host: 127.0.0.1:{node.port}".encode() in lines

    run(scenario)


@pytest.mark.parametrize("url", ["ftp://node.example/", "http:///rpc", "node.example:8545"])
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        UpstreamPool(url)


def _certificate_authority(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA and a certificate for 127.0.0.1 it signed: the CA's file (for SSL_CERT_FILE) and the server's context."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay tests CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return ca_file, server


def test_https_upstreams_are_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca_file, server_context = _certificate_authority(tmp_path)

    async def scenario(*, trusted: bool) -> None:
        async with Node(lambda _request: ok(), ssl_context=server_context) as node:
            pool = UpstreamPool(f"https://127.0.0.1:{node.port}/")
            if trusted:
                assert await pool.post(CALL, 2.0) == (200, ANSWER)
            else:
                with pytest.raises(UpstreamConnectionError, match="unreachable"):
                    await pool.post(CALL, 2.0)
            pool.close()

    run(lambda: scenario(trusted=False))  # the system's CAs do not know this one
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    run(lambda: scenario(trusted=True))


def test_a_new_connection_the_upstream_closes_at_once_fails_fast_not_at_the_timeout() -> None:
    async def scenario() -> None:
        async def close_at_once(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool(f"http://127.0.0.1:{port}/")
        loop = asyncio.get_running_loop()
        for _ in range(5):
            started = loop.time()
            with pytest.raises(UpstreamConnectionError, match="closed the connection") as failure:
                await pool.post(CALL, 5.0)
            assert not failure.value.timeout
            assert loop.time() - started < 2.0
        server.close()

    run(scenario)
