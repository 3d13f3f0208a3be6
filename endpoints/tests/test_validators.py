"""Allowlist entry validation: normalized outputs, one exact message per bad entry, limits and de-duplication."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.exceptions import ValidationError

from endpoints.validators import (
    MAX_ENTRIES,
    clean_contract_addresses,
    clean_ip_ranges,
    clean_methods,
    clean_origins,
    clean_user_agents,
    keccak256,
    to_checksum_address,
)

KNOWN_METHODS = [
    "eth_call",
    "eth_chainId",
    "eth_blockNumber",
    "eth_getBalance",
    "eth_getBlockByHash",
    "eth_getBlockByNumber",
    "eth_getLogs",
    "net_version",
]
ORIGIN_HINT = "use https://app.example.com or *.example.com"
IP_HINT = "use 203.0.113.5, 203.0.113.0/24 or 2001:db8::/32"

# From EIP-55 itself (https://eips.ethereum.org/EIPS/eip-55#test-cases).
EIP55_VECTORS = [
    # All caps
    "0x52908400098527886E0F7030069857D2E4169EE7",
    "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
    # All lower
    "0xde709f2102306220921060314715629080e2fb77",
    "0x27b1fdb04752bbc536007a920d24acb045561c26",
    # Normal
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


def base58_encode(data: bytes) -> str:
    """Test-side encoder, so the limit test can make 101 distinct valid Solana addresses."""
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    number, text = int.from_bytes(data, "big"), ""
    while number:
        number, digit = divmod(number, 58)
        text = alphabet[digit] + text
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + text


def messages(clean: Callable[[list[str]], list[str]], entries: list[str]) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        clean(entries)
    return caught.value.messages


def evm(entries: list[str]) -> list[str]:
    return clean_contract_addresses(entries, chain_family="evm")


def solana(entries: list[str]) -> list[str]:
    return clean_contract_addresses(entries, chain_family="solana")


def methods(entries: list[str]) -> list[str]:
    return clean_methods(entries, known=KNOWN_METHODS)


# Shared behaviour ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clean", "make"),
    [
        (clean_origins, lambda i: f"https://app{i}.example.com"),
        (clean_user_agents, lambda i: f"agent/{i}"),
        (clean_ip_ranges, lambda i: f"10.0.{i}.0/24"),
        (evm, lambda i: "0x" + f"{i:040x}"),
        (solana, lambda i: base58_encode(bytes([i + 1]) * 32)),
        (lambda e: clean_methods(e, known=[f"m_{i}" for i in range(200)]), lambda i: f"m_{i}"),
    ],
)
def test_at_most_100_entries(clean: Callable[[list[str]], list[str]], make: Callable[[int], str]) -> None:
    entries = [make(i) for i in range(MAX_ENTRIES + 1)]
    assert len(set(entries)) == MAX_ENTRIES + 1
    assert len(clean(entries[:MAX_ENTRIES])) == MAX_ENTRIES
    assert messages(clean, entries) == ["At most 100 entries (you gave 101)."]


def test_limit_counts_after_de_duplication() -> None:
    entries = [f"https://app{i}.example.com" for i in range(MAX_ENTRIES)]
    padded = entries + [f"HTTPS://APP{i}.EXAMPLE.COM:443/" for i in range(MAX_ENTRIES)] + ["", "  "]
    assert clean_origins(padded) == entries


def test_limit_message_comes_with_the_bad_entries() -> None:
    entries = [f"10.0.{i}.0/24" for i in range(MAX_ENTRIES)] + ["10.1.0.1/16", "nope"]
    assert messages(clean_ip_ranges, entries) == [
        "At most 100 entries (you gave 102).",
        '"10.1.0.1/16" has host bits set; did you mean 10.1.0.0/16?',
        f'"nope" is not an IP address or CIDR range: {IP_HINT}',
    ]


def test_a_huge_paste_is_refused_without_checking_each_line() -> None:
    entries = [f"no_such_method_{i}" for i in range(5000)]
    assert messages(methods, entries) == ["At most 100 entries (you gave 5000)."]


@pytest.mark.parametrize(
    "clean", [clean_origins, clean_user_agents, clean_ip_ranges, evm, solana, methods], ids=lambda f: f.__name__
)
def test_blank_entries_are_ignored(clean: Callable[[list[str]], list[str]]) -> None:
    assert clean([]) == []
    assert clean(["", "   ", "\t", "\r"]) == []


@pytest.mark.parametrize(
    ("clean", "entry"),
    [
        (clean_origins, "https://" + "a" * 250 + ".com"),
        (clean_user_agents, "x" * 257),
        (clean_ip_ranges, "1" * 257),
        (methods, "eth_" + "x" * 253),
    ],
)
def test_entries_longer_than_256_characters_are_refused(clean: Callable[[list[str]], list[str]], entry: str) -> None:
    assert messages(clean, [entry]) == [
        f'"{entry[:80]}…" is too long: at most 256 characters (it has {len(entry)})',
    ]


def test_256_characters_is_fine() -> None:
    assert clean_user_agents(["x" * 256]) == ["x" * 256]


def test_error_codes() -> None:
    with pytest.raises(ValidationError) as caught:
        clean_user_agents(["ok", "x" * 300, "bad\x07"])
    assert [error.code for error in caught.value.error_list] == ["too_long", "invalid"]


# Origins ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("https://app.example.com", "https://app.example.com"),
        ("  https://app.example.com  ", "https://app.example.com"),
        ("https://app.example.com/", "https://app.example.com"),
        ("HTTPS://App.Example.COM", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://app.example.com:80", "http://app.example.com"),
        ("http://app.example.com:443", "http://app.example.com:443"),
        ("https://app.example.com:80", "https://app.example.com:80"),
        ("https://app.example.com:8443/", "https://app.example.com:8443"),
        ("https://app.example.com:08443", "https://app.example.com:8443"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://LOCALHOST", "http://localhost"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://[0:0:0:0:0:0:0:1]", "http://[::1]"),
        ("https://[2001:DB8::1]:443", "https://[2001:db8::1]"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        ("https://Bücher.de", "https://xn--bcher-kva.de"),
        ("https://xn--bcher-kva.de", "https://xn--bcher-kva.de"),
        ("https://a-b.c-d.example", "https://a-b.c-d.example"),
        ("https://app.example.com:1", "https://app.example.com:1"),
        ("https://app.example.com:65535", "https://app.example.com:65535"),
        ("*.example.com", "*.example.com"),
        ("*.Example.COM/", "*.example.com"),
        ("*.co.uk", "*.co.uk"),
        ("https://*.example.com", "https://*.example.com"),
        ("HTTP://*.example.com:80", "http://*.example.com"),
        ("https://*.example.com:8443", "https://*.example.com:8443"),
        ("*.example.com:8443", "*.example.com:8443"),
        ("https://*.bücher.de", "https://*.xn--bcher-kva.de"),
    ],
)
def test_good_origins(entry: str, expected: str) -> None:
    assert clean_origins([entry]) == [expected]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("htp://x", f'"htp://x" is not an origin: {ORIGIN_HINT}'),
        ("ftp://files.example.com", f'"ftp://files.example.com" is not an origin: {ORIGIN_HINT}'),
        ("example.com", f'"example.com" is not an origin: {ORIGIN_HINT}'),
        ("//example.com", f'"//example.com" is not an origin: {ORIGIN_HINT}'),
        ("https:/example.com", f'"https:/example.com" is not an origin: {ORIGIN_HINT}'),
        ("*", f'"*" is not an origin: {ORIGIN_HINT}'),
        ("https://", f'"https://" is not an origin: it has no host; {ORIGIN_HINT}'),
        ("https://:8080", f'"https://:8080" is not an origin: it has no host; {ORIGIN_HINT}'),
        (
            "https://app.example.com/path",
            '"https://app.example.com/path" is not an origin: drop the path, query and fragment (scheme://host[:port])',
        ),
        (
            "https://app.example.com//",
            '"https://app.example.com//" is not an origin: drop the path, query and fragment (scheme://host[:port])',
        ),
        (
            "https://app.example.com?a=1",
            '"https://app.example.com?a=1" is not an origin: drop the path, query and fragment (scheme://host[:port])',
        ),
        (
            "https://app.example.com#top",
            '"https://app.example.com#top" is not an origin: drop the path, query and fragment (scheme://host[:port])',
        ),
        (
            "https://user:pw@app.example.com",
            '"https://user:pw@app.example.com" is not an origin: drop the user name (scheme://host[:port])',
        ),
        ("https://app.example.com:0", '"https://app.example.com:0" has an invalid port "0": use 1-65535'),
        ("https://app.example.com:65536", '"https://app.example.com:65536" has an invalid port "65536": use 1-65535'),
        ("https://app.example.com:", '"https://app.example.com:" has an invalid port "": use 1-65535'),
        ("https://app.example.com:http", '"https://app.example.com:http" has an invalid port "http": use 1-65535'),
        ("https://app.example.com:-1", '"https://app.example.com:-1" has an invalid port "-1": use 1-65535'),
        ("https://app_1.example.com", '"https://app_1.example.com" has an invalid host name "app_1.example.com"'),
        ("https://-app.example.com", '"https://-app.example.com" has an invalid host name "-app.example.com"'),
        ("https://app..example.com", '"https://app..example.com" has an invalid host name "app..example.com"'),
        ("https://app.example.com.", '"https://app.example.com." has an invalid host name "app.example.com."'),
        ("https://app example.com", '"https://app example.com" has an invalid host name "app example.com"'),
        ("https://intranet", '"https://intranet" has an invalid host name "intranet"'),
        ("https://example.123", '"https://example.123" has an invalid host name "example.123"'),
        (
            f"https://{'a' * 64}.com",
            f'"https://{"a" * 64}.com" has an invalid host name "{"a" * 64}.com"',
        ),
        ("http://1.2.3", '"http://1.2.3" has an invalid IPv4 address "1.2.3"'),
        ("http://256.1.1.1", '"http://256.1.1.1" has an invalid IPv4 address "256.1.1.1"'),
        ("http://010.0.0.1", '"http://010.0.0.1" has an invalid IPv4 address "010.0.0.1"'),
        ("http://[::1", '"http://[::1" has an invalid IPv6 address "[::1"'),
        ("http://[::g]", '"http://[::g]" has an invalid IPv6 address "[::g]"'),
        ("http://[fe80::1%25eth0]", '"http://[fe80::1%25eth0]" has an invalid IPv6 address "[fe80::1%25eth0]"'),
        ("http://[::1]8080", '"http://[::1]8080" has an invalid IPv6 address "[::1]8080"'),
        ("http://::1", '"http://::1" is not an origin: put IPv6 addresses in brackets, as in http://[::1]'),
        ("*.com", '"*.com" is too broad: a wildcard needs at least two labels after *., as in *.example.com'),
        (
            "https://*.localhost",
            '"https://*.localhost" is too broad: a wildcard needs at least two labels after *., as in *.example.com',
        ),
        ("*.", '"*." is too broad: a wildcard needs at least two labels after *., as in *.example.com'),
        (
            "https://app.*.example.com",
            '"https://app.*.example.com" is not an origin: * may only be the leftmost label, as in *.example.com',
        ),
        (
            "https://*app.example.com",
            '"https://*app.example.com" is not an origin: * may only be the leftmost label, as in *.example.com',
        ),
        (
            "*.*.example.com",
            '"*.*.example.com" is not an origin: * may only be the leftmost label, as in *.example.com',
        ),
        ("*.example_1.com", '"*.example_1.com" has an invalid host name "example_1.com"'),
        ("*.1.2.3.4", '"*.1.2.3.4" has an invalid host name "1.2.3.4"'),
    ],
)
def test_bad_origins(entry: str, message: str) -> None:
    assert messages(clean_origins, [entry]) == [message]


def test_origins_dedupe_case_insensitively_after_normalizing() -> None:
    assert clean_origins(
        [
            "https://b.example.com",
            "https://a.example.com",
            "HTTPS://B.example.com",
            "https://b.example.com:443/",
            "*.example.com",
            "*.EXAMPLE.com",
            "https://bücher.de",
            "https://xn--bcher-kva.de",
        ]
    ) == ["https://b.example.com", "https://a.example.com", "*.example.com", "https://xn--bcher-kva.de"]


def test_every_bad_origin_is_reported_in_order() -> None:
    assert messages(
        clean_origins, ["https://ok.example.com", "htp://x", "https://a.com/x", "htp://x", "https://ok.example.com:0"]
    ) == [
        f'"htp://x" is not an origin: {ORIGIN_HINT}',
        '"https://a.com/x" is not an origin: drop the path, query and fragment (scheme://host[:port])',
        '"https://ok.example.com:0" has an invalid port "0": use 1-65535',
    ]


# User agents --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("MyApp/1.0", "MyApp/1.0"),
        ("  MyApp/1.0 (iOS 17; iPhone)  ", "MyApp/1.0 (iOS 17; iPhone)"),
        ("x", "x"),
        ("Ünïcödé bot ✓", "Ünïcödé bot ✓"),
        ("curl", "curl"),
    ],
)
def test_good_user_agents(entry: str, expected: str) -> None:
    assert clean_user_agents([entry]) == [expected]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("bad\x00agent", '"bad\\x00agent" contains a control or other non-printable character'),
        ("tab\there", '"tab\\there" contains a control or other non-printable character'),
        ("bell\x07", '"bell\\x07" contains a control or other non-printable character'),
        ("zero\u200bwidth", '"zero\\u200bwidth" contains a control or other non-printable character'),
        ("line\nbreak", '"line\\nbreak" contains a control or other non-printable character'),
    ],
)
def test_bad_user_agents(entry: str, message: str) -> None:
    assert messages(clean_user_agents, [entry]) == [message]


def test_user_agents_keep_case_and_dedupe_exactly() -> None:
    assert clean_user_agents(["MyApp", "myapp", " MyApp ", "MyApp", "Other"]) == ["MyApp", "myapp", "Other"]


def test_every_bad_user_agent_is_reported() -> None:
    assert messages(clean_user_agents, ["a\x01", "fine", "b\x02"]) == [
        '"a\\x01" contains a control or other non-printable character',
        '"b\\x02" contains a control or other non-printable character',
    ]


# IP ranges ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("203.0.113.5", "203.0.113.5"),
        (" 203.0.113.5 ", "203.0.113.5"),
        ("203.0.113.5/32", "203.0.113.5"),
        ("203.0.113.0/24", "203.0.113.0/24"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.0.0.0/255.0.0.0", "10.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:db8::1/128", "2001:db8::1"),
        ("2001:0db8:0000::/32", "2001:db8::/32"),
        ("::1", "::1"),
        ("::/0", "::/0"),
    ],
)
def test_good_ip_ranges(entry: str, expected: str) -> None:
    assert clean_ip_ranges([entry]) == [expected]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("10.0.0.1/24", '"10.0.0.1/24" has host bits set; did you mean 10.0.0.0/24?'),
        ("203.0.113.77/28", '"203.0.113.77/28" has host bits set; did you mean 203.0.113.64/28?'),
        ("2001:db8::1/32", '"2001:db8::1/32" has host bits set; did you mean 2001:db8::/32?'),
        ("10.0.0.0/33", f'"10.0.0.0/33" is not an IP address or CIDR range: {IP_HINT}'),
        ("2001:db8::/129", f'"2001:db8::/129" is not an IP address or CIDR range: {IP_HINT}'),
        ("256.0.0.1", f'"256.0.0.1" is not an IP address or CIDR range: {IP_HINT}'),
        ("10.0.0", f'"10.0.0" is not an IP address or CIDR range: {IP_HINT}'),
        ("010.0.0.1", f'"010.0.0.1" is not an IP address or CIDR range: {IP_HINT}'),
        ("10.0.0.0/", f'"10.0.0.0/" is not an IP address or CIDR range: {IP_HINT}'),
        ("10.0.0.0 /24", f'"10.0.0.0 /24" is not an IP address or CIDR range: {IP_HINT}'),
        ("example.com", f'"example.com" is not an IP address or CIDR range: {IP_HINT}'),
        ("2001:db8:::1", f'"2001:db8:::1" is not an IP address or CIDR range: {IP_HINT}'),
        ("fe80::1%eth0", f'"fe80::1%eth0" is not an IP address or CIDR range: {IP_HINT}'),
        ("10.0.0.1-10.0.0.9", f'"10.0.0.1-10.0.0.9" is not an IP address or CIDR range: {IP_HINT}'),
    ],
)
def test_bad_ip_ranges(entry: str, message: str) -> None:
    assert messages(clean_ip_ranges, [entry]) == [message]


def test_ip_ranges_dedupe_on_the_normalized_value() -> None:
    assert clean_ip_ranges(
        ["2001:db8::1", "10.0.0.0/8", "2001:DB8:0::1", "2001:db8::1/128", "10.0.0.0/255.0.0.0", "203.0.113.5"]
    ) == ["2001:db8::1", "10.0.0.0/8", "203.0.113.5"]


def test_every_bad_ip_range_is_reported() -> None:
    assert messages(clean_ip_ranges, ["10.0.0.1/24", "10.0.0.0/24", "x", "192.168.1.1/16"]) == [
        '"10.0.0.1/24" has host bits set; did you mean 10.0.0.0/24?',
        f'"x" is not an IP address or CIDR range: {IP_HINT}',
        '"192.168.1.1/16" has host bits set; did you mean 192.168.0.0/16?',
    ]


# Keccak and EIP-55 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "digest"),
    [
        (b"", "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
        (b"abc", "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"),
        (b"transfer(address,uint256)", "a9059cbb2ab09eb219583f4a59a5d0623ade346d962bcd4e46b11da047c9049b"),
    ],
)
def test_keccak256(data: bytes, digest: str) -> None:
    assert keccak256(data).hex() == digest


@pytest.mark.parametrize("address", EIP55_VECTORS)
def test_to_checksum_address_eip55_vectors(address: str) -> None:
    assert to_checksum_address(address) == address
    assert to_checksum_address(address.lower()) == address
    assert to_checksum_address("0x" + address[2:].upper()) == address


@pytest.mark.parametrize(
    "address",
    [
        "",
        "0x",
        "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed0",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg",
        " 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    ],
)
def test_to_checksum_address_refuses_malformed(address: str) -> None:
    with pytest.raises(ValueError, match="is not an EVM address"):
        to_checksum_address(address)


# Contract addresses -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        *[(address, address) for address in EIP55_VECTORS],
        ("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
        ("0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
        ("  0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359 ", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"),
        ("0x0000000000000000000000000000000000000000", "0x0000000000000000000000000000000000000000"),
    ],
)
def test_good_evm_addresses(entry: str, expected: str) -> None:
    assert evm([entry]) == [expected]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
            (
                '"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD" fails its EIP-55 checksum; '
                "did you mean 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed?"
            ),
        ),
        (
            "0xFb6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            (
                '"0xFb6916095ca1df60bB79Ce92cE3Ea74c37c5d359" fails its EIP-55 checksum; '
                "did you mean 0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359?"
            ),
        ),
        (
            "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            '"5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed" is not an EVM address: use 0x followed by 40 hex digits',
        ),
        (
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA",
            '"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA" is not an EVM address: use 0x followed by 40 hex digits',
        ),
        (
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAedaa",
            '"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAedaa" is not an EVM address: use 0x followed by 40 hex digits',
        ),
        (
            "0xZZAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            '"0xZZAeb6053F3E94C9b9A09f33669435E7Ef1BeAed" is not an EVM address: use 0x followed by 40 hex digits',
        ),
        (
            "So11111111111111111111111111111111111111112",
            '"So11111111111111111111111111111111111111112" is not an EVM address: use 0x followed by 40 hex digits',
        ),
    ],
)
def test_bad_evm_addresses(entry: str, message: str) -> None:
    assert messages(evm, [entry]) == [message]


def test_evm_addresses_dedupe_case_insensitively() -> None:
    assert evm(
        [
            "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED",
        ]
    ) == ["0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"]


def test_a_wrongly_cased_duplicate_is_still_checked() -> None:
    assert messages(
        evm, ["0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"]
    ) == [
        (
            '"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD" fails its EIP-55 checksum; '
            "did you mean 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed?"
        ),
    ]


@pytest.mark.parametrize(
    "entry",
    [
        "So11111111111111111111111111111111111111112",
        "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
        "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
        "11111111111111111111111111111111",
    ],
)
def test_good_solana_addresses(entry: str) -> None:
    assert solana([f"  {entry} "]) == [entry]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "So11111111111111111111111111111111111111110",
            (
                '"So11111111111111111111111111111111111111110" is not a Solana address: '
                '"0" is not a base58 character (no 0, O, I or l)'
            ),
        ),
        (
            "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDtlv",
            (
                '"EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDtlv" is not a Solana address: '
                '"l" is not a base58 character (no 0, O, I or l)'
            ),
        ),
        (
            "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt",
            '"EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt" is not a Solana address: it decodes to 31 bytes, not 32',
        ),
        (
            "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1vv",
            '"EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1vv" is not a Solana address: it decodes to 33 bytes, not 32',
        ),
        (
            "1111111111111111111111111111111",
            '"1111111111111111111111111111111" is not a Solana address: it decodes to 31 bytes, not 32',
        ),
        (
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            (
                '"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed" is not a Solana address: '
                '"0" is not a base58 character (no 0, O, I or l)'
            ),
        ),
    ],
)
def test_bad_solana_addresses(entry: str, message: str) -> None:
    assert messages(solana, [entry]) == [message]


def test_solana_addresses_dedupe_exactly() -> None:
    assert solana(
        [
            "So11111111111111111111111111111111111111112",
            "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
            " So11111111111111111111111111111111111111112",
        ]
    ) == ["So11111111111111111111111111111111111111112", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"]


def test_every_bad_contract_address_is_reported() -> None:
    assert messages(
        evm, ["0x1", "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", "0xdbf03B407c01E7cD3CBea99509d93f8DDDC8C6FB"]
    ) == [
        '"0x1" is not an EVM address: use 0x followed by 40 hex digits',
        (
            '"0xdbf03B407c01E7cD3CBea99509d93f8DDDC8C6FB" fails its EIP-55 checksum; '
            "did you mean 0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB?"
        ),
    ]


@pytest.mark.parametrize("chain_family", ["", "EVM", "bitcoin", "cosmos"])
def test_unknown_chain_family_is_a_programming_error(chain_family: str) -> None:
    with pytest.raises(ValueError, match="chain_family must be one of"):
        clean_contract_addresses([], chain_family=chain_family)


# Methods ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (["eth_call"], ["eth_call"]),
        ([" eth_getLogs ", "net_version"], ["eth_getLogs", "net_version"]),
        (["eth_call", "eth_chainId", "eth_call"], ["eth_call", "eth_chainId"]),
    ],
)
def test_good_methods(entries: list[str], expected: list[str]) -> None:
    assert methods(entries) == expected


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("eth_cal", '"eth_cal" is not a known method; did you mean eth_call or eth_chainId?'),
        ("ETH_CALL", '"ETH_CALL" is not a known method'),
        ("eth_chainid", '"eth_chainid" is not a known method; did you mean eth_chainId or eth_call?'),
        (
            "eth_getBlock",
            (
                '"eth_getBlock" is not a known method; '
                "did you mean eth_getBlockByHash, eth_getBalance or eth_getBlockByNumber?"
            ),
        ),
        ("net_versoin", '"net_versoin" is not a known method; did you mean net_version?'),
        ("debug_traceTransaction", '"debug_traceTransaction" is not a known method'),
    ],
)
def test_bad_methods(entry: str, message: str) -> None:
    assert messages(methods, [entry]) == [message]


def test_methods_accept_any_iterable_of_known_names() -> None:
    assert clean_methods(["b", "a"], known=(name for name in "abc")) == ["b", "a"]
    assert messages(lambda e: clean_methods(e, known=iter(["eth_call"])), ["eth_cal"]) == [
        '"eth_cal" is not a known method; did you mean eth_call?'
    ]


def test_every_bad_method_is_reported() -> None:
    assert messages(methods, ["eth_call", "eth_cal", "foo", "net_versoin"]) == [
        '"eth_cal" is not a known method; did you mean eth_call or eth_chainId?',
        '"foo" is not a known method',
        '"net_versoin" is not a known method; did you mean net_version?',
    ]
