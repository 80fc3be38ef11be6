"""The "ledger" kind: its fields and its connector, nothing more."""

from service.kinds.base import ProviderKind, secret, url
from tests.sixth_kind.connector import LedgerConnector

KIND = ProviderKind(
    name="ledger",
    fields=(url("baseUrl", locates=True, required=True), secret("token")),
    connector=LedgerConnector,
)
