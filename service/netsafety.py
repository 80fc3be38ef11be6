"""Which addresses callvault may reach, so user-typed URLs cannot point it inward (SSRF).

Two checks, because names can change meaning between them:

* ``check_url`` at save time: cheap, no DNS, so saving never blocks and bad URLs get a
  clear message early.
* ``resolve_checked`` at connect time: resolves the name and checks every address the
  connection could use, which defeats DNS rebinding and names that point at 127.0.0.1.

All refusals raise ``UnsafeAddress`` with a short, fixed message that is safe to show users.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Final, TypeAlias
from urllib.parse import unquote, urlsplit

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
_Net: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeAddress(ValueError):
    """A URL or address callvault refuses to reach; the message says why, without the address."""


@dataclass(frozen=True, slots=True)
class _Rule:
    network: _Net
    reason: str
    # True for ranges an on-premises PBX (or a test server) may legitimately live in.
    private_ok: bool


def _rules(private_ok: bool, reason: str, *networks: str) -> list[_Rule]:
    return [_Rule(ipaddress.ip_network(n), reason, private_ok) for n in networks]


# Cloud instance-metadata endpoints hand out credentials: refused even with allow_private.
_METADATA_IPS: Final = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS pod identity
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS IPv6
        "fd00:ec2::23",  # AWS EKS pod identity IPv6
    )
)
_METADATA_NAMES: Final = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)

# First match wins; addresses that match nothing are public.
_V4_RULES: Final = [
    *_rules(False, "unspecified address not allowed", "0.0.0.0/8"),
    *_rules(True, "private address not allowed", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
    *_rules(True, "shared (CGNAT) address not allowed", "100.64.0.0/10"),
    *_rules(True, "loopback address not allowed", "127.0.0.0/8"),
    *_rules(True, "link-local address not allowed", "169.254.0.0/16"),
    *_rules(True, "benchmarking address not allowed", "198.18.0.0/15"),
    *_rules(False, "documentation address not allowed", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"),
    *_rules(False, "reserved address not allowed", "192.0.0.0/24", "192.88.99.0/24", "240.0.0.0/4"),
    *_rules(False, "multicast address not allowed", "224.0.0.0/4"),
]
_V6_RULES: Final = [
    *_rules(False, "unspecified address not allowed", "::/128"),
    *_rules(True, "loopback address not allowed", "::1/128"),
    *_rules(False, "multicast address not allowed", "ff00::/8"),
    *_rules(True, "link-local address not allowed", "fe80::/10"),
    *_rules(True, "private address not allowed", "fc00::/7", "fec0::/10", "64:ff9b:1::/48"),
    *_rules(False, "documentation address not allowed", "2001:db8::/32", "3fff::/20"),
    # 2001::/23 holds Teredo (which hides an IPv4 address), ORCHID, benchmarking and more.
    *_rules(False, "reserved address not allowed", "100::/64", "2001::/23"),
]
_GLOBAL_UNICAST_V6: Final = ipaddress.IPv6Network("2000::/3")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_V4_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")


def check_ip(ip: IPAddress, *, allow_private: bool) -> None:
    """Raise UnsafeAddress unless ``ip`` is a public address (or private, when allowed).

    IPv6 forms that carry an IPv4 address (mapped, compatible, 6to4, NAT64) are judged by
    that IPv4 address, since that is where the packets end up.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ipaddress.IPv6Address(int(ip))  # drop any zone id: it does not change the range
    if ip in _METADATA_IPS:
        raise UnsafeAddress("cloud metadata address not allowed")
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            check_ip(embedded, allow_private=allow_private)
            return
    rule = _first_rule(ip)
    if rule is not None and not (allow_private and rule.private_ok):
        raise UnsafeAddress(rule.reason)
    if rule is None and isinstance(ip, ipaddress.IPv6Address) and ip not in _GLOBAL_UNICAST_V6:
        raise UnsafeAddress("reserved address not allowed")


def _first_rule(ip: IPAddress) -> _Rule | None:
    rules = _V4_RULES if isinstance(ip, ipaddress.IPv4Address) else _V6_RULES
    return next((r for r in rules if ip in r.network), None)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address forwards to, if it is one of the translation forms."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _V4_COMPATIBLE and int(ip) > 1:  # :: and ::1 keep their IPv6 meaning
        return ipaddress.IPv4Address(int(ip))
    return None


def parse_host_literal(host: str) -> IPAddress | None:
    """The IP address ``host`` spells, or None for a real hostname.

    Accepts what ``inet_aton`` and browsers accept, because that is what the resolver will
    do with it: ``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``, ``[::1]``,
    ``fe80::1%eth0``. A host that looks numeric but is not a valid address is refused rather
    than passed to DNS.
    """
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        return _parse_ipv6(host)
    labels = host.removesuffix(".").split(".")
    if not _is_number(labels[-1]):
        return None
    return _parse_ipv4(labels)


def _parse_ipv6(host: str) -> ipaddress.IPv6Address:
    address, sep, zone = host.partition("%")
    if sep:
        zone = unquote("%" + zone) if zone.startswith("25") else zone  # "%25" is a URL-encoded "%"
        zone = zone.removeprefix("%")
        if not zone:
            raise UnsafeAddress("malformed IP address")
    try:
        return ipaddress.IPv6Address(f"{address}%{zone}" if zone else address)
    except ValueError:
        raise UnsafeAddress("malformed IP address") from None


def _is_number(label: str) -> bool:
    if label[:2] == "0x":
        return all(c in "0123456789abcdef" for c in label[2:])
    return label.isascii() and label.isdigit()


def _parse_ipv4(labels: list[str]) -> ipaddress.IPv4Address:
    """inet_aton: up to four parts; the last part fills all the bytes that remain."""
    if len(labels) > 4 or not all(_is_number(label) for label in labels):
        raise UnsafeAddress("malformed IP address")
    parts = [_number(label) for label in labels]
    *leading, last = parts
    if any(p > 0xFF for p in leading) or last >= 1 << (8 * (5 - len(parts))):
        raise UnsafeAddress("malformed IP address")
    value = last
    for index, part in enumerate(leading):
        value |= part << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _number(label: str) -> int:
    if label[:2] == "0x":
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label[0] == "0":
        if not all(c in "01234567" for c in label):
            raise UnsafeAddress("malformed IP address")
        return int(label, 8)
    return int(label)


def check_url(url: str, *, allow_private: bool) -> None:
    """Save-time check of a URL callvault will call later. Does no DNS, so it never blocks."""
    if any(c.isspace() or c == "\\" or not c.isprintable() for c in url):
        raise UnsafeAddress("malformed URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises on a bad port
    except ValueError:
        raise UnsafeAddress("malformed URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise UnsafeAddress("must be an http(s) URL")
    if "@" in parts.netloc:
        raise UnsafeAddress("credentials in URLs are not allowed")
    if not host:
        raise UnsafeAddress("URL must have a host")
    check_host(host, allow_private=allow_private)


def check_host(host: str, *, allow_private: bool) -> None:
    """Check a host without resolving it: IP literals by range, names against known bad names."""
    literal = parse_host_literal(host)
    if literal is not None:
        check_ip(literal, allow_private=allow_private)
        return
    name = _normalise_name(host)
    if name in _METADATA_NAMES:
        raise UnsafeAddress("cloud metadata address not allowed")
    if not allow_private and (name == "localhost" or name.endswith(".localhost")):
        raise UnsafeAddress("loopback address not allowed")


def _normalise_name(host: str) -> str:
    """Lower-case ASCII form, so ``LOCALHOST.`` and full-width spellings match too."""
    try:
        return host.encode("idna").decode("ascii").lower().removesuffix(".")
    except UnicodeError:
        raise UnsafeAddress("malformed host name") from None


async def resolve_checked(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Resolve ``host`` and return the addresses to connect to, all of them checked.

    Any unsafe answer refuses the whole name: an attacker's DNS could hand out a public and
    a private address and let the connection pick. Resolver errors propagate as OSError.
    """
    check_host(host, allow_private=allow_private)
    literal = parse_host_literal(host)
    if literal is not None:
        return [str(literal)]
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise socket.gaierror("no addresses")
    for address in addresses:
        check_ip(ipaddress.ip_address(address), allow_private=allow_private)
    return addresses
