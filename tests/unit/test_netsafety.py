"""Address rules for user-given URLs: every range and every odd spelling, with and without
allow_private. Pure checks only; connect-time resolution is in tests/integration."""

from __future__ import annotations

import ipaddress
import socket
import ssl

import httpx
import pytest

from service.connectors.base import AddressNotAllowed, TimedOut, TlsFailure, UnexpectedAnswer, Unreachable
from service.connectors.http import error_for
from service.netsafety import UnsafeAddress, check_ip, check_url, parse_host_literal

# (address, words the refusal must contain)
ALWAYS_REFUSED = [
    ("0.0.0.0", "unspecified"),  # an address under test, not a bind
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.0.8", "reserved"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("2001:db8::1", "documentation"),
    ("2001::53aa:64c:0:0", "reserved"),  # Teredo
    ("100::1", "reserved"),  # discard-only
    ("4000::1", "reserved"),  # outside global unicast
    ("169.254.169.254", "metadata"),
    ("169.254.170.2", "metadata"),
    ("100.100.100.200", "metadata"),
    ("fd00:ec2::254", "metadata"),
    ("::ffff:169.254.169.254", "metadata"),
    ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
    ("2002:a9fe:a9fe::1", "metadata"),  # 6to4 of 169.254.169.254
    ("::ffff:0.0.0.0", "unspecified"),
    ("::ffff:224.0.0.1", "multicast"),
    ("2002:e000:0001::1", "multicast"),  # 6to4 of 224.0.0.1
]

REFUSED_UNLESS_PRIVATE = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("100.64.0.1", "shared"),
    ("100.127.255.254", "shared"),
    ("198.18.0.1", "benchmarking"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("::ffff:10.0.0.1", "private"),
    ("::127.0.0.1", "loopback"),  # IPv4-compatible
    ("2002:7f00:0001::1", "loopback"),  # 6to4 of 127.0.0.1
    ("2002:c0a8:0101::", "private"),  # 6to4 of 192.168.1.1
    ("64:ff9b::127.0.0.1", "loopback"),  # NAT64
    ("64:ff9b::10.1.2.3", "private"),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "11.0.0.1",
    "172.32.0.1",
    "100.128.0.1",
    "169.253.255.255",
    "192.169.0.1",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "2002:0808:0808::1",
    "64:ff9b::8.8.8.8",
]


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize(("address", "reason"), ALWAYS_REFUSED)
def test_always_refused(address: str, reason: str, allow_private: bool) -> None:
    with pytest.raises(UnsafeAddress, match=reason):
        check_ip(ipaddress.ip_address(address), allow_private=allow_private)


@pytest.mark.parametrize(("address", "reason"), REFUSED_UNLESS_PRIVATE)
def test_private_ranges_refused_by_default(address: str, reason: str) -> None:
    with pytest.raises(UnsafeAddress, match=reason):
        check_ip(ipaddress.ip_address(address), allow_private=False)


@pytest.mark.parametrize(("address", "reason"), REFUSED_UNLESS_PRIVATE)
def test_private_ranges_allowed_when_asked(address: str, reason: str) -> None:
    check_ip(ipaddress.ip_address(address), allow_private=True)


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_allowed(address: str, allow_private: bool) -> None:
    check_ip(ipaddress.ip_address(address), allow_private=allow_private)


def test_refusal_message_does_not_repeat_the_address() -> None:
    with pytest.raises(UnsafeAddress) as caught:
        check_ip(ipaddress.ip_address("10.1.2.3"), allow_private=False)
    assert "10.1.2.3" not in str(caught.value)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),  # decimal
        ("0177.0.0.1", "127.0.0.1"),  # octal
        ("0x7f.0.0.1", "127.0.0.1"),  # hex
        ("0X7F.1", "127.0.0.1"),  # hex, shortened
        ("0x7f000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),  # a.b
        ("127.0.1", "127.0.0.1"),  # a.b.c
        ("10.0x10.1", "10.16.0.1"),
        ("0xa9.0376.43518", "169.254.169.254"),
        ("127.0.0.1.", "127.0.0.1"),  # trailing root dot
        ("8.8.8.8", "8.8.8.8"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[fe80::1%25eth0]", "fe80::1%eth0"),  # zone id, URL-encoded
        ("fe80::1%eth0", "fe80::1%eth0"),
    ],
)
def test_parse_host_literal_spellings(host: str, expected: str) -> None:
    assert parse_host_literal(host) == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    "host", ["example.com", "pbx.example.com", "1.2.3.example", "localhost", "123.com", ""]
)
def test_parse_host_literal_leaves_names_alone(host: str) -> None:
    assert parse_host_literal(host) is None


@pytest.mark.parametrize(
    "host",
    ["256.0.0.1", "1.2.3.4.5", "08.0.0.1", "1.16777216", "127..1", "example.0x7f", "[zz::1]", "::1::2"],
)
def test_parse_host_literal_refuses_numbers_that_are_not_addresses(host: str) -> None:
    with pytest.raises(UnsafeAddress, match="malformed"):
        parse_host_literal(host)


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://pbx.example.com/", "http\\(s\\)"),
        ("file:///etc/passwd", "http\\(s\\)"),
        ("gopher://pbx.example.com/", "http\\(s\\)"),
        ("javascript:alert(1)", "http\\(s\\)"),
        ("pbx.example.com/api", "http\\(s\\)"),
        ("//pbx.example.com/api", "http\\(s\\)"),
        ("https://user:secret@pbx.example.com/", "credentials"),
        ("https://user@pbx.example.com/", "credentials"),
        ("http://pbx.example.com@127.0.0.1/", "credentials"),
        ("https://", "host"),
        ("http:///path", "host"),
        ("http://pbx.example.com:99999/", "malformed"),
        ("http://pbx example.com/", "malformed"),
        ("http://127.0.0.1\\.pbx.example.com/", "malformed"),
        ("http://pbx.example.com/\n", "malformed"),
        ("http://[127.0.0.1]/", "malformed"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://METADATA/", "metadata"),
        ("http://metadata.google.internal./", "metadata"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://0.0.0.0:8080/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
    ],
)
def test_check_url_always_refused(url: str, reason: str, allow_private: bool) -> None:
    with pytest.raises(UnsafeAddress, match=reason):
        check_url(url, allow_private=allow_private)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:8080/", "loopback"),
        ("http://LocalHost./", "loopback"),
        ("http://pbx.localhost/", "loopback"),
        ("http://127.0.0.1/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://0x7f.1/", "loopback"),
        ("http://127.1:5060/", "loopback"),
        ("http://[::1]:8080/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[2002:7f00:1::1]/", "loopback"),
        ("http://[64:ff9b::7f00:1]/", "loopback"),
        ("https://10.0.0.5/api", "private"),
        ("https://0xc0.0xa8.1.1/", "private"),
        ("https://[fd00::5]/", "private"),
        ("http://[fe80::1%25eth0]/", "link-local"),
        ("http://169.254.10.10/", "link-local"),
    ],
)
def test_check_url_private_targets(url: str, reason: str) -> None:
    with pytest.raises(UnsafeAddress, match=reason):
        check_url(url, allow_private=False)
    check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://pbx.example.com/api/v2?token=abc",
        "HTTPS://PBX.EXAMPLE.COM",
        "http://8.8.8.8:8080/",
        "https://[2606:4700:4700::1111]/",
        "https://pbx.example.com./",
    ],
)
def test_check_url_accepts_public_urls(url: str) -> None:
    check_url(url, allow_private=False)


def test_check_url_does_no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise AssertionError("check_url resolved a name")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    check_url("https://pbx.example.com/", allow_private=False)


def test_unsafe_address_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="loopback"):
        check_url("http://127.0.0.1/", allow_private=False)


def _chained(outer: httpx.HTTPError, cause: BaseException) -> httpx.HTTPError:
    outer.__cause__ = cause
    return outer


SECRET_URL = "https://pbx.example.com/rec?token=s3cr3t"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (
            _chained(httpx.ConnectError("refused"), UnsafeAddress("loopback address not allowed")),
            AddressNotAllowed,
        ),
        (httpx.ConnectTimeout(SECRET_URL), TimedOut),
        (httpx.ReadTimeout(SECRET_URL), TimedOut),
        (httpx.TimeoutException("total deadline exceeded"), TimedOut),
        (_chained(httpx.ConnectError(SECRET_URL), ssl.SSLError("bad")), TlsFailure),
        (httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] " + SECRET_URL), TlsFailure),
        (httpx.ConnectError("[Errno 111] Connection refused " + SECRET_URL), Unreachable),
        (httpx.ReadError(SECRET_URL), Unreachable),
        (httpx.RemoteProtocolError(SECRET_URL), UnexpectedAnswer),
        (httpx.UnsupportedProtocol(SECRET_URL), AddressNotAllowed),
        (httpx.TooManyRedirects(SECRET_URL), UnexpectedAnswer),
    ],
)
def test_error_for_maps_to_short_secret_free_errors(exc: httpx.HTTPError, kind: type[Exception]) -> None:
    error = error_for(exc)
    assert type(error) is kind
    assert "s3cr3t" not in str(error)
    assert "example.com" not in str(error)
