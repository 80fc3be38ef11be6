"""Connector hints kept in the sync state: a few short strings, never anything larger."""

from __future__ import annotations

from typing import Any, cast

from service.connectors.antbuddy import AntBuddyConnector
from service.connectors.base import LearnsHints
from service.connectors.http import NetworkPolicy
from service.sync.state import MAX_HINT, MAX_HINTS, bounded_hints


def test_short_string_hints_are_kept_whole() -> None:
    assert bounded_hints({"hashOrder": "appIdLast", "b": ""}) == {"b": "", "hashOrder": "appIdLast"}


def test_oversized_or_non_string_hints_are_dropped_not_clipped() -> None:
    odd = cast(dict[str, str], {"long": "x" * (MAX_HINT + 1), "n" * 41: "v", "number": cast(Any, 3)})
    assert bounded_hints({**odd, "kept": "x" * MAX_HINT}) == {"kept": "x" * MAX_HINT}


def test_at_most_a_few_hints_are_kept() -> None:
    many = {f"h{i:02d}": "v" for i in range(MAX_HINTS + 5)}
    assert len(bounded_hints(many)) == MAX_HINTS


async def test_antbuddy_offers_its_hash_order_and_reads_it_back() -> None:
    config = {"baseUrl": "https://openapi.example.com", "appId": "app", "appSecret": "s3cret"}
    fresh = AntBuddyConnector(config, NetworkPolicy())
    again = AntBuddyConnector({"hashOrder": "appIdLast", **config}, NetworkPolicy())
    try:
        assert isinstance(fresh, LearnsHints) and fresh.hints == {"hashOrder": "appIdFirst"}
        assert again.hints == {"hashOrder": "appIdLast"}
        assert "s3cret" not in str(again.hints)
    finally:
        await fresh.aclose()
        await again.aclose()
