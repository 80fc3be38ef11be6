"""The origin rule: which URLs count as the provider's own, and so may carry its credentials."""

from __future__ import annotations

import pytest

from service.connectors.http import Origin, origin_of

PROVIDER = "https://pbx.example.com"


@pytest.mark.parametrize(
    "url",
    [
        "https://pbx.example.com/orktrack/rest/recordings?page=2",
        "https://pbx.example.com:443/x",  # the default port spelled out
        "HTTPS://PBX.Example.COM/x",  # scheme and host are case-insensitive
        "https://pbx.example.com#fragment",
    ],
)
def test_same_origin(url: str) -> None:
    assert origin_of(url) == origin_of(PROVIDER) == Origin("https", "pbx.example.com", 443)


@pytest.mark.parametrize(
    "url",
    [
        "http://pbx.example.com/x",  # plain http: the token would travel in clear text
        "http://pbx.example.com:443/x",  # same port, other scheme
        "https://pbx.example.com:8443/x",  # other port
        "https://pbx.example.com./x",  # absolute name: may not be the same host as the search-list one
        "https://pbx.example.com.evil.test/x",
        "https://evil.test/pbx.example.com",
        "https://sub.pbx.example.com/x",
        "https://example.com/x",
    ],
)
def test_other_origin(url: str) -> None:
    other = origin_of(url)
    assert other is not None and other != origin_of(PROVIDER)


def test_default_ports() -> None:
    assert origin_of("http://h") == origin_of("http://h:80") == Origin("http", "h", 80)
    assert origin_of("http://h") != origin_of("https://h")
    assert origin_of("https://h:80") != origin_of("http://h:80")


def test_trailing_dot_is_its_own_origin_for_names() -> None:
    assert origin_of("https://pbx.") == Origin("https", "pbx.", 443) != origin_of("https://pbx")


def test_ipv6_literals_compare_by_address() -> None:
    assert origin_of("http://[::1]:8080/") == origin_of("http://[0:0::1]:8080") == Origin("http", "::1", 8080)
    assert origin_of("http://[2001:DB8::1]/") == origin_of("http://[2001:db8:0::1]:80/")
    assert origin_of("http://[::1]:8080") != origin_of("http://127.0.0.1:8080")
    assert origin_of("http://[::1]:8080") != origin_of("http://[::2]:8080")


def test_ipv4_spellings_of_one_address_are_one_origin() -> None:
    dotted = origin_of("http://127.0.0.1:8000")
    assert dotted == Origin("http", "127.0.0.1", 8000)
    assert origin_of("http://127.1:8000") == origin_of("http://2130706433:8000") == dotted
    assert origin_of("http://127.0.0.2:8000") != dotted


def test_idna_host_is_compared_in_ascii() -> None:
    assert origin_of("https://bücher.example/x") == origin_of("https://xn--bcher-kva.example/")


@pytest.mark.parametrize(
    "url",
    [
        "https://user:secret@pbx.example.com/",  # httpx would send it as a Basic header
        "https://user@pbx.example.com/",
        "ftp://pbx.example.com/",
        "/relative/path",
        "",
        "https://",
        "http://1.2.3.4.5/",  # looks numeric, is no address
    ],
)
def test_no_origin_to_trust(url: str) -> None:
    assert origin_of(url) is None
