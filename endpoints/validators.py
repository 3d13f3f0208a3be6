"""Validation and normalization of endpoint allowlist entries (origins, user agents, IPs, contracts, methods).

Each ``clean_*`` function takes the raw lines of a textarea and either returns the normalized, de-duplicated
entries or raises one ``ValidationError`` listing every bad entry, so a user fixes them all in one round trip.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable

from Crypto.Hash import keccak
from django.core.exceptions import ValidationError

MAX_ENTRIES = 100
MAX_LENGTH = 256
# Beyond this many distinct raw entries we stop validating one by one: a pasted file should not cost a
# difflib search per line, and the user has to cut the list down anyway.
_GIVE_UP_AFTER = 10 * MAX_ENTRIES
# Entries are shown in messages at most this long, so one huge line cannot flood the form.
_SHOWN_LENGTH = 80

CHAIN_FAMILIES = ("evm", "solana")

_ORIGIN_HINT = "use https://app.example.com or *.example.com"
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)
_PORT_RE = re.compile(r"[0-9]{1,5}")
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_EVM_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {char: index for index, char in enumerate(_BASE58_ALPHABET)}


class _EntryError(Exception):
    """One entry is bad; the message names it and says how to fix it."""


def _show(entry: str) -> str:
    """The entry as quoted in a message: shortened, control characters escaped so they are visible."""
    if len(entry) > _SHOWN_LENGTH:
        entry = entry[:_SHOWN_LENGTH] + "…"
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in entry)


def _clean(entries: list[str], normalize: Callable[[str], str], *, fold_case: bool) -> list[str]:
    """Strip, drop blanks, de-duplicate, normalize every entry, and report all problems at once."""
    # Exact duplicates are dropped before validating; case-insensitive ones only after, so that every spelling
    # is checked (a wrongly cased EVM address fails its checksum even when the right one is also listed).
    unique = list(dict.fromkeys(entry for entry in (raw.strip() for raw in entries) if entry))
    if len(unique) > _GIVE_UP_AFTER:
        raise ValidationError(f"At most {MAX_ENTRIES} entries (you gave {len(unique)}).", code="too_many")

    cleaned: list[str] = []
    seen: set[str] = set()
    errors: list[ValidationError] = []
    for entry in unique:
        if len(entry) > MAX_LENGTH:
            message = f'"{_show(entry)}" is too long: at most {MAX_LENGTH} characters (it has {len(entry)})'
            errors.append(ValidationError(message, code="too_long"))
            continue
        try:
            value = normalize(entry)
        except _EntryError as error:
            errors.append(ValidationError(str(error), code="invalid"))
            continue
        key = value.lower() if fold_case else value
        if key not in seen:  # e.g. https://a.com and https://a.com:443 differ only before normalizing
            seen.add(key)
            cleaned.append(value)

    given = len(cleaned) + len(errors)  # each bad entry counts as one
    if given > MAX_ENTRIES:
        errors.insert(0, ValidationError(f"At most {MAX_ENTRIES} entries (you gave {given}).", code="too_many"))
    if errors:
        raise ValidationError(errors)
    return cleaned


# Origins ------------------------------------------------------------------------------------------------------


def _host_name(host: str, entry: str) -> str:
    """A DNS name, lowercased and in punycode, with at least two labels and a non-numeric top label."""
    try:
        ascii_host = host.lower().encode("idna").decode("ascii")
    except UnicodeError:
        raise _EntryError(f'"{_show(entry)}" has an invalid host name "{_show(host)}"') from None
    labels = ascii_host.split(".")
    if (
        len(ascii_host) > 253
        or len(labels) < 2
        or labels[-1].isdigit()
        or not all(_LABEL_RE.fullmatch(label) for label in labels)
    ):
        raise _EntryError(f'"{_show(entry)}" has an invalid host name "{_show(host)}"')
    return ascii_host


def _full_host(host: str, entry: str) -> str:
    """The host of a full origin: a DNS name, localhost, an IPv4 address or a bracketed IPv6 address."""
    if host.startswith("["):
        literal = host[1:-1]
        try:
            if not host.endswith("]") or "%" in literal:
                raise ValueError(literal)
            return f"[{ipaddress.IPv6Address(literal).compressed}]"
        except ValueError:
            raise _EntryError(f'"{_show(entry)}" has an invalid IPv6 address "{_show(host)}"') from None
    if host.lower() == "localhost":
        return "localhost"
    if re.fullmatch(r"[0-9.]+", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise _EntryError(f'"{_show(entry)}" has an invalid IPv4 address "{_show(host)}"') from None
    return _host_name(host, entry)


def _origin(entry: str) -> str:
    """Normalize one origin or wildcard origin pattern, or say precisely what is wrong with it."""
    match = _SCHEME_RE.fullmatch(entry)
    if match:
        scheme, rest = match.group(1).lower(), match.group(2)
        if scheme not in _DEFAULT_PORTS:
            raise _EntryError(f'"{_show(entry)}" is not an origin: {_ORIGIN_HINT}')
    elif entry.startswith("*."):
        scheme, rest = "", entry
    else:
        raise _EntryError(f'"{_show(entry)}" is not an origin: {_ORIGIN_HINT}')

    if rest.endswith("/"):  # https://app.example.com/ is how browsers' address bars show an origin
        rest = rest[:-1]
    if any(char in rest for char in "/?#"):
        raise _EntryError(
            f'"{_show(entry)}" is not an origin: drop the path, query and fragment (scheme://host[:port])'
        )
    if "@" in rest:
        raise _EntryError(f'"{_show(entry)}" is not an origin: drop the user name (scheme://host[:port])')

    if rest.startswith("["):
        close = rest.find("]")
        host, after = (rest, "") if close < 0 else (rest[: close + 1], rest[close + 1 :])
        if after and not after.startswith(":"):
            raise _EntryError(f'"{_show(entry)}" has an invalid IPv6 address "{_show(rest)}"')
        port = after[1:] if after else None
    else:
        host, colon, port_text = rest.partition(":")
        if ":" in port_text:
            raise _EntryError(f'"{_show(entry)}" is not an origin: put IPv6 addresses in brackets, as in http://[::1]')
        port = port_text if colon else None
    if not host:
        raise _EntryError(f'"{_show(entry)}" is not an origin: it has no host; {_ORIGIN_HINT}')

    port_number = None
    if port is not None:
        if not _PORT_RE.fullmatch(port) or not 1 <= int(port) <= 65535:
            raise _EntryError(f'"{_show(entry)}" has an invalid port "{_show(port)}": use 1-65535')
        port_number = int(port)
    if port_number is not None and port_number == _DEFAULT_PORTS.get(scheme):
        port_number = None
    suffix = f":{port_number}" if port_number is not None else ""
    prefix = f"{scheme}://" if scheme else ""

    if host.startswith("*."):
        base = host[2:]
        if "*" in base:
            raise _EntryError(
                f'"{_show(entry)}" is not an origin: * may only be the leftmost label, as in *.example.com'
            )
        if base.count(".") < 1:
            raise _EntryError(
                f'"{_show(entry)}" is too broad: a wildcard needs at least two labels after *., as in *.example.com'
            )
        return f"{prefix}*.{_host_name(base, entry)}{suffix}"
    if "*" in host:
        raise _EntryError(f'"{_show(entry)}" is not an origin: * may only be the leftmost label, as in *.example.com')
    return f"{prefix}{_full_host(host, entry)}{suffix}"


def clean_origins(entries: list[str]) -> list[str]:
    """Browser origins (scheme://host[:port]) or *.example.com patterns, as the gateway compares them."""
    return _clean(entries, _origin, fold_case=True)


# User agents --------------------------------------------------------------------------------------------------


def _user_agent(entry: str) -> str:
    """Any printable text: the gateway matches it as a substring of the User-Agent header."""
    if not entry.isprintable():
        raise _EntryError(f'"{_show(entry)}" contains a control or other non-printable character')
    return entry


def clean_user_agents(entries: list[str]) -> list[str]:
    """User-Agent substrings, kept as typed (matching is case-sensitive)."""
    return _clean(entries, _user_agent, fold_case=False)


# IP ranges ----------------------------------------------------------------------------------------------------


def _ip_range(entry: str) -> str:
    """A bare address for a single host (including /32 and /128), otherwise the network in CIDR form."""
    invalid = f'"{_show(entry)}" is not an IP address or CIDR range: use 203.0.113.5, 203.0.113.0/24 or 2001:db8::/32'
    if "%" in entry:  # IPv6 zone ids never appear in a client address the gateway sees
        raise _EntryError(invalid)
    try:
        network = ipaddress.ip_network(entry, strict=True)
    except ValueError:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise _EntryError(invalid) from None
        raise _EntryError(f'"{_show(entry)}" has host bits set; did you mean {network.compressed}?') from None
    if network.prefixlen == network.max_prefixlen:
        return network.network_address.compressed
    return network.compressed


def clean_ip_ranges(entries: list[str]) -> list[str]:
    """Client IPv4/IPv6 addresses and CIDR ranges, normalized so equal ranges are stored once."""
    return _clean(entries, _ip_range, fold_case=True)


# Contract addresses -------------------------------------------------------------------------------------------


def keccak256(data: bytes) -> bytes:
    """Ethereum's Keccak-256 (original padding, not NIST SHA3-256)."""
    return keccak.new(digest_bits=256, data=data).digest()


def to_checksum_address(address: str) -> str:
    """The EIP-55 mixed-case checksummed form of an EVM address given in any case."""
    if not isinstance(address, str) or not _EVM_RE.fullmatch(address):
        raise ValueError(f"{address!r} is not an EVM address (0x followed by 40 hex digits)")
    body = address[2:].lower()
    digest = keccak256(body.encode("ascii")).hex()[: len(body)]
    return "0x" + "".join(
        char.upper() if int(nibble, 16) >= 8 else char for char, nibble in zip(body, digest, strict=True)
    )


def _evm_address(entry: str) -> str:
    """Checksummed form; a mixed-case entry claims a checksum, so it has to be the right one."""
    if not _EVM_RE.fullmatch(entry):
        raise _EntryError(f'"{_show(entry)}" is not an EVM address: use 0x followed by 40 hex digits')
    checksummed = to_checksum_address(entry)
    body = entry[2:]
    if body not in (body.lower(), body.upper()) and entry != checksummed:
        raise _EntryError(f'"{_show(entry)}" fails its EIP-55 checksum; did you mean {checksummed}?')
    return checksummed


def _base58_decode(text: str) -> bytes:
    """Bitcoin-alphabet base58; each leading "1" stands for a zero byte. Raises KeyError on a bad character."""
    number = 0
    for char in text:
        number = number * 58 + _BASE58_INDEX[char]
    leading_zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * leading_zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")


def _solana_address(entry: str) -> str:
    """A base58 public key of exactly 32 bytes, kept as given (base58 is case-sensitive)."""
    bad = next((char for char in entry if char not in _BASE58_INDEX), None)
    if bad is not None:
        raise _EntryError(
            f'"{_show(entry)}" is not a Solana address: "{_show(bad)}" is not a base58 character (no 0, O, I or l)'
        )
    size = len(_base58_decode(entry))
    if size != 32:
        raise _EntryError(f'"{_show(entry)}" is not a Solana address: it decodes to {size} bytes, not 32')
    return entry


def clean_contract_addresses(entries: list[str], *, chain_family: str) -> list[str]:
    """Contract addresses for the endpoint's chain family: EIP-55 checksummed EVM, or Solana base58."""
    if chain_family == "evm":
        return _clean(entries, _evm_address, fold_case=True)
    if chain_family == "solana":
        return _clean(entries, _solana_address, fold_case=False)
    raise ValueError(f"chain_family must be one of {CHAIN_FAMILIES}, not {chain_family!r}")


# Methods ------------------------------------------------------------------------------------------------------


def clean_methods(entries: list[str], *, known: Iterable[str]) -> list[str]:
    """RPC method names the endpoint serves; a typo gets the closest known names as a hint."""
    known_names = list(dict.fromkeys(known))
    known_set = set(known_names)

    def method(entry: str) -> str:
        if entry in known_set:
            return entry
        matches = difflib.get_close_matches(entry, known_names, n=3)
        if not matches:
            raise _EntryError(f'"{_show(entry)}" is not a known method')
        hint = matches[0] if len(matches) == 1 else ", ".join(matches[:-1]) + " or " + matches[-1]
        raise _EntryError(f'"{_show(entry)}" is not a known method; did you mean {hint}?')

    return _clean(entries, method, fold_case=False)
