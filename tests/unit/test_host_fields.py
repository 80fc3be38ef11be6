"""Host fields: what counts as the same origin (the connectors' rule, ws(s) included), and
what a kind binds its secrets to."""

from __future__ import annotations

import pytest

from service.errors import InvalidArgument
from service.kinds import KINDS
from service.kinds.base import KEPT, origin_of


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://pbx.example.com", "HTTPS://PBX.Example.COM/"),
        ("https://pbx.example.com", "https://pbx.example.com:443/api?x=1"),
        ("http://pbx.example.com", "http://pbx.example.com:80"),
        ("wss://ws.example.com", "wss://ws.example.com:443"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        ("http://[::1]:8080", "http://[0:0::1]:8080/pbx"),
    ],
)
def test_same_origin(a: str, b: str) -> None:
    assert origin_of(a) == origin_of(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://pbx.example.com", "http://pbx.example.com"),
        ("https://pbx.example.com", "https://pbx.example.com:8443"),
        ("https://pbx.example.com", "https://pbx.example.com.evil.example"),
        ("https://pbx.example.com", "https://pbx.example.com."),  # the connectors' rule: may differ
        ("ws://ws.example.com", "wss://ws.example.com"),
        ("https://pbx.example.com", None),
    ],
)
def test_other_origin(a: str, b: str | None) -> None:
    assert origin_of(a) != origin_of(b)


def test_origin_spelling() -> None:
    assert origin_of("HTTPS://PBX.example.com/api") == "https://pbx.example.com:443"
    assert origin_of("http://[::1]:8080/x") == "http://[::1]:8080"
    assert origin_of(None) == origin_of("") == ""


def test_each_kind_binds_its_host_fields_with_defaults() -> None:
    assert {name: kind.host_fields for name, kind in KINDS.items()} == {
        "threecx": ("baseUrl",),
        "dtac": ("baseUrl",),
        "promptcall": ("baseUrl",),
        "kazoo": ("baseUrl", "websocketUrl"),
        "antbuddy": ("baseUrl",),
    }
    assert KINDS["dtac"].origin({}) == "baseUrl=https://onecallvoicerecord.dtac.co.th:443"
    assert KINDS["kazoo"].origin({"baseUrl": "https://kz.example.com:8443"}) == (
        "baseUrl=https://kz.example.com:8443\nwebsocketUrl="
    )


def test_a_move_names_every_secret_not_sent_again() -> None:
    kind = KINDS["promptcall"]
    before = {"baseUrl": "https://a.example.com"}
    after = {"baseUrl": "https://b.example.com", "apiKey": "new", "apiSecret": KEPT}
    with pytest.raises(InvalidArgument) as raised:
        kind.require_secrets_if_moved(before, after)
    assert (raised.value.field, raised.value.message) == (
        "config.apiSecret",
        "config.apiSecret: must be sent again when config.baseUrl changes",
    )
    kind.require_secrets_if_moved(before, {**after, "apiSecret": "new too"})
    kind.require_secrets_if_moved(
        before, {"baseUrl": "https://a.example.com/v2", "apiKey": KEPT, "apiSecret": KEPT}
    )
