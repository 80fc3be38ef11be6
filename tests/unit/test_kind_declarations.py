"""What a kind declares (service/kinds/base.py): the settings every kind has, its poll
interval field, its host fields and how it is read back, so no other module names a kind."""

from __future__ import annotations

import pytest

from service.connectors.http import NetworkPolicy
from service.errors import InvalidArgument
from service.kinds import KINDS
from service.kinds.base import LATE_ROWS_HOURS, ProviderKind, ReadAs, poll_interval, secret, text, url
from tests.sixth_kind.connector import LedgerConnector
from tests.sixth_kind.kind import KIND as LEDGER

POLICY = NetworkPolicy(allow_private=True)


@pytest.mark.parametrize("kind", [*KINDS.values(), LEDGER], ids=lambda k: k.name)
def test_every_kind_takes_late_rows_hours_and_reads_it_back_once_set(kind: ProviderKind) -> None:
    assert "lateRowsHours" in kind.by_name
    assert kind.late_rows_hours({}) == LATE_ROWS_HOURS == 24
    assert kind.late_rows_hours({"lateRowsHours": 0}) == 0
    assert "lateRowsHours" not in kind.read_back({}).config
    assert kind.read_back({"lateRowsHours": 72}).config["lateRowsHours"] == 72
    with pytest.raises(InvalidArgument) as raised:
        kind.by_name["lateRowsHours"].check(24 * 15, policy=POLICY)
    assert raised.value.field == "config.lateRowsHours"


def test_the_poll_interval_is_the_field_its_kind_declares() -> None:
    assert KINDS["dtac"].poll_interval_minutes({"pollIntervalMinutes": 30}) == 30
    assert KINDS["dtac"].poll_interval_minutes({}) is None
    # A kind without one ignores a setting of the same name.
    assert KINDS["kazoo"].poll_interval_minutes({"pollIntervalMinutes": 30}) is None
    every = ProviderKind(
        name="every",
        fields=(url("baseUrl", locates=True), secret("token"), poll_interval("everyMinutes", minimum=1)),
        connector=LedgerConnector,
    )
    assert every.poll_interval_minutes({"everyMinutes": 2}) == 2
    with pytest.raises(ValueError, match="more than one poll interval"):
        ProviderKind(
            name="twice",
            fields=(poll_interval("a"), poll_interval("b")),
            connector=LedgerConnector,
        )


def test_read_back_and_preview_follow_the_fields_declarations() -> None:
    kind = ProviderKind(
        name="elsewhere",
        fields=(
            url("apiRoot", locates=True),
            text("login", read_as=ReadAs.USERNAME),
            text("tenant", read_as=ReadAs.CONFIG),
            secret("password"),
        ),
        connector=LedgerConnector,
        preview_user="login",
    )
    settings = {"apiRoot": "https://pbx.example.com/api", "login": "ops", "tenant": "t1"}
    shown = kind.read_back(settings)
    assert (shown.base_url, shown.username, shown.config) == (
        "https://pbx.example.com/api",
        "ops",
        {"tenant": "t1"},
    )
    assert kind.preview(settings) == "ops @ pbx.example.com"
    assert kind.host_fields == ("apiRoot",)
