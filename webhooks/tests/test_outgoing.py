"""project.outgoing, the one door for requests to user-chosen URLs: addresses refused (SSRF), the vetted address
pinned, no redirects, bounded reads and waits, and TLS to the name while connecting to the address.

DNS is replaced only where a test needs a name to resolve somewhere (monkeypatching socket.getaddrinfo for that one
name: the DNS boundary); everything else is real sockets on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl

import pytest
from django.test import override_settings

from project import outgoing
from webhooks import services, tasks
from webhooks.models import BUDGET_EXCEEDED, DeliveryStatus, WebhookDelivery
from webhooks.tests.receiver import Answer, receiving

REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture
def dns(monkeypatch):
    """dns({"name": ["10.0.0.1", …]}) → those names resolve to those addresses; every other name as usual."""
    calls: list[str] = []

    def install(records: dict[str, list[str]]) -> list[str]:
        def getaddrinfo(host, port, *args, **kwargs):
            if host in records:
                calls.append(host)
                answers = records[host]
                return [
                    (
                        socket.AF_INET6 if ":" in address else socket.AF_INET,
                        socket.SOCK_STREAM,
                        socket.IPPROTO_TCP,
                        "",
                        (address, port, 0, 0) if ":" in address else (address, port),
                    )
                    for address in (answers.pop(0) if answers and isinstance(answers[0], list) else answers)
                ]
            return REAL_GETADDRINFO(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return calls

    return install


REFUSED = [
    ("127.0.0.1", "loopback"),
    ("[::1]", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "cloud metadata"),
    ("[fd00:ec2::254]", "cloud metadata"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("0.0.0.0", "unspecified"),  # noqa: S104 - an address we refuse, not one we bind
    ("[::ffff:127.0.0.1]", "loopback"),
    ("[::ffff:10.1.2.3]", "private"),
    ("[fd00::1]", "private"),
    ("[fe80::1]", "link-local"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.10", "private"),  # documentation range
    ("2130706433", "loopback"),  # 127.0.0.1 written as one number: resolved, then refused
]


@pytest.mark.parametrize(("host", "reason"), REFUSED)
@override_settings(OUTGOING_ALLOW_LOOPBACK=False)
def test_refused_addresses(host, reason):
    with pytest.raises(outgoing.OutgoingRefused) as refused:
        outgoing.post(f"http://{host}/hook", b"{}", {})
    assert refused.value.reason == reason


@override_settings(OUTGOING_ALLOW_LOOPBACK=False)
def test_a_name_that_resolves_to_a_private_address_is_refused(dns):
    dns({"hooks.internal.example": ["10.20.30.40"]})
    with pytest.raises(outgoing.OutgoingRefused) as refused:
        outgoing.post("https://hooks.internal.example/x", b"{}", {})
    assert (refused.value.host, refused.value.address, refused.value.reason) == (
        "hooks.internal.example",
        "10.20.30.40",
        "private",
    )


@override_settings(OUTGOING_ALLOW_LOOPBACK=False)
def test_one_private_address_among_public_ones_is_enough_to_refuse(dns):
    dns({"mixed.example": ["93.184.216.34", "2606:2800:220:1::248", "192.168.0.7"]})
    with pytest.raises(outgoing.OutgoingRefused, match=r"192\.168\.0\.7"):
        outgoing.post("https://mixed.example/", b"{}", {})


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "1.1.1.1"])
def test_public_addresses_pass(address):
    assert outgoing.refusal_reason(ipaddress.ip_address(address)) is None


def test_allowing_loopback_allows_nothing_else():
    # tests/settings.py allows loopback (the receivers here); private and metadata addresses stay refused.
    for host in ("10.0.0.1", "169.254.169.254", "[fd00::1]", "0.0.0.0", "100.64.0.1"):  # noqa: S104
        with pytest.raises(outgoing.OutgoingRefused):
            outgoing.post(f"http://{host}/", b"", {})
    with receiving() as receiver:
        assert outgoing.post(receiver.url(), b"{}", {}).status == 200


def test_a_name_unresolvable_is_an_error_not_a_refusal():
    with pytest.raises(outgoing.OutgoingError, match="does not resolve") as error:
        outgoing.post("https://no-such-host.invalid/", b"", {})
    assert not isinstance(error.value, outgoing.OutgoingRefused)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/", "http:// or https://"),
        ("https://user:pass@example.com/", "credentials"),
        ("https:///path", "host name"),
        ("https://example.com:0/", "Port 0"),
        ("https://example.com:99999/", "out of range"),
    ],
)
def test_malformed_urls(url, message):
    with pytest.raises(ValueError, match=message):
        outgoing.parse_url(url)
    with pytest.raises(outgoing.OutgoingError, match=message):
        outgoing.post(url, b"", {})


def test_the_vetted_address_is_the_one_connected_to(dns):
    # The first answer passes the check; a rebinding answer a moment later (to the metadata address) is never asked.
    with receiving() as receiver:
        calls = dns({"rebind.example": [["127.0.0.1"], ["169.254.169.254"]]})
        response = outgoing.post(receiver.url(host="rebind.example"), b"{}", {})
    assert (response.status, response.address) == (200, "127.0.0.1")
    assert calls == ["rebind.example"]  # resolved once, by us
    assert receiver.requests[0].headers["host"] == f"rebind.example:{receiver.port}"


@override_settings(OUTGOING_ALLOW_LOOPBACK=False)
def test_a_delivery_to_a_refused_address_records_the_refusal_and_sends_nothing(
    db, queue, team_a, owner_a, django_capture_on_commit_callbacks
):
    with receiving() as receiver:
        with override_settings(OUTGOING_ALLOW_LOOPBACK=True):  # created while allowed (a developer's machine)
            services.webhook_endpoint_create(team=team_a, url=receiver.url(), event_types=[], actor=owner_a)
        with django_capture_on_commit_callbacks(execute=True):
            services.event_emit(team=team_a, type=BUDGET_EXCEEDED, payload={})
        assert tasks.deliver(queue.delayed[0]) == DeliveryStatus.RETRYING
    assert receiver.requests == []
    delivery = WebhookDelivery.objects.get()
    assert delivery.last_error == "127.0.0.1 resolves to 127.0.0.1, a loopback address: refused"
    assert delivery.response_status is None


def test_redirects_are_answers_not_hops(db, queue, team_a, owner_a, django_capture_on_commit_callbacks):
    with receiving() as second, receiving(Answer(302, b"", {"Location": second.url("/second")})) as first:
        response = outgoing.post(first.url(), b"{}", {})
        assert response.status == 302
        services.webhook_endpoint_create(team=team_a, url=first.url(), event_types=[], actor=owner_a)
        with django_capture_on_commit_callbacks(execute=True):
            services.event_emit(team=team_a, type=BUDGET_EXCEEDED, payload={})
        assert tasks.deliver(queue.delayed[0]) == DeliveryStatus.RETRYING
    assert second.requests == []
    assert len(first.requests) == 2
    delivery = WebhookDelivery.objects.get()
    assert (delivery.response_status, delivery.last_error) == (302, "HTTP 302 (redirects are not followed)")


def test_only_the_start_of_a_large_answer_is_read():
    with receiving(Answer(200, b"A" * 2_000_000)) as receiver:
        response = outgoing.post(receiver.url(), b"{}", {})
    assert response.excerpt == "A" * outgoing.EXCERPT_CHARS


def test_undecodable_answers_are_excerpted_leniently():
    with receiving(Answer(500, b"\xff\xfe error \x00")) as receiver:
        response = outgoing.post(receiver.url(), b"{}", {})
    assert response.excerpt == "\ufffd\ufffd error \x00"


def test_a_slow_receiver_times_out(monkeypatch):
    monkeypatch.setattr(outgoing, "READ_TIMEOUT", 0.3)
    with (
        receiving(Answer(200, b"late", delay=2)) as receiver,
        pytest.raises(outgoing.OutgoingError, match=r"no answer within 0\.3 s"),
    ):
        outgoing.post(receiver.url(), b"{}", {})


def test_an_answer_that_breaks_off_is_an_error():
    with (
        receiving(Answer(200, b"partial", {"Content-Length": "5000"})) as receiver,
        pytest.raises(outgoing.OutgoingError, match="the answer broke off"),
    ):
        outgoing.post(receiver.url(), b"{}", {})


def test_a_name_with_no_addresses_does_not_resolve(dns):
    dns({"empty.example": []})
    with pytest.raises(outgoing.OutgoingError, match=r"empty\.example does not resolve"):
        outgoing.post("http://empty.example/", b"", {})


def test_the_next_address_is_tried_only_when_the_first_never_connected(dns):
    with receiving() as receiver:
        dns({"two.example": ["127.0.0.2", "127.0.0.1"]})  # nothing listens on 127.0.0.2: refused, nothing sent
        response = outgoing.post(receiver.url(host="two.example"), b"{}", {})
    assert (response.status, response.address) == (200, "127.0.0.1")
    assert len(receiver.requests) == 1


def test_a_closed_port_is_a_connection_error():
    with receiving() as receiver:
        url = receiver.url()
    with pytest.raises(outgoing.OutgoingError, match="could not connect"):
        outgoing.post(url, b"{}", {})


def test_proxy_variables_are_ignored(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    monkeypatch.setenv("http_proxy", "http://10.9.9.9:3128")
    with receiving() as receiver:
        assert outgoing.post(receiver.url(), b"{}", {}).status == 200
    assert len(receiver.requests) == 1


# --- TLS: connect to the vetted address, speak TLS to the name ------------------------------------


def _certificates(tmp_path, name: str):
    """A throwaway CA and a server certificate for `name` signed by it: (server context, CA bundle path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def build(subject, issuer, public_key, signing_key, *, ca: bool, san: str | None = None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("Test CA", "Test CA", ca_key.public_key(), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = build(name, "Test CA", server_key.public_key(), ca_key, ca=False, san=name)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "server.pem").write_bytes(server.public_bytes(pem))
    (tmp_path / "server.key").write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    return context, str(tmp_path / "ca.pem")


def test_tls_goes_to_the_vetted_address_with_the_names_sni_and_certificate(tmp_path, dns):
    context, ca_bundle = _certificates(tmp_path, "hooks.example.test")
    dns({"hooks.example.test": ["127.0.0.1"]})
    with receiving(tls=context) as receiver:
        url = receiver.url(host="hooks.example.test", scheme="https")
        response = outgoing.post(url, b'{"ok":true}', {"Content-Type": "application/json"}, verify=ca_bundle)
    assert response.status == 200
    assert receiver.server_names == ["hooks.example.test"]
    assert receiver.requests[0].headers["host"] == f"hooks.example.test:{receiver.port}"
    assert receiver.requests[0].body == b'{"ok":true}'


def test_tls_refuses_a_certificate_for_another_name(tmp_path, dns):
    context, ca_bundle = _certificates(tmp_path, "someone-else.example.test")
    dns({"hooks.example.test": ["127.0.0.1"]})
    with receiving(tls=context) as receiver, pytest.raises(outgoing.OutgoingError, match="TLS failed"):
        outgoing.post(receiver.url(host="hooks.example.test", scheme="https"), b"{}", {}, verify=ca_bundle)
    assert receiver.requests == []


def test_tls_checks_certificates_against_the_system_roots_by_default(tmp_path, dns):
    context, _ca_bundle = _certificates(tmp_path, "hooks.example.test")
    dns({"hooks.example.test": ["127.0.0.1"]})
    with receiving(tls=context) as receiver, pytest.raises(outgoing.OutgoingError, match="TLS failed"):
        outgoing.post(receiver.url(host="hooks.example.test", scheme="https"), b"{}", {})
    assert receiver.requests == []


def test_an_internationalised_name_is_sent_in_its_ascii_form(dns):
    calls = dns({"xn--bcher-kva.example": ["127.0.0.1"]})
    with receiving() as receiver:
        response = outgoing.post(receiver.url(host="bücher.example"), b"{}", {})
    assert response.status == 200
    assert calls == ["xn--bcher-kva.example"]
    assert receiver.requests[0].headers["host"] == f"xn--bcher-kva.example:{receiver.port}"
    assert receiver.requests[0].headers["accept-encoding"] == "identity"
