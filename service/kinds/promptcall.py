"""promptCall PBX (seed 001): apiKey and apiSecret make the Basic token for pbxws.php;
timeZone is the PBX's wall clock, in which its CDR times are written (not documented)."""

from __future__ import annotations

from typing import Any

from service.connectors.http import NetworkPolicy
from service.connectors.promptcall import DEFAULT_TIME_ZONE, PromptCallConnector, pbx_zone
from service.errors import InvalidArgument
from service.kinds.base import FieldSpec, FieldType, ProviderKind, ReadAs, secret, url


class TimeZoneField(FieldSpec):
    """A text setting that must name an IANA time zone."""

    __slots__ = ()

    def check(self, value: Any, *, policy: NetworkPolicy) -> Any:
        name = FieldSpec.check(self, value, policy=policy)
        try:
            pbx_zone(str(name).strip())
        except ValueError:
            raise InvalidArgument(
                f"config.{self.name}", "must be an IANA time zone such as Asia/Bangkok"
            ) from None
        return str(name).strip()


KIND = ProviderKind(
    name="promptcall",
    fields=(
        url("baseUrl", locates=True, required=True),
        secret("apiKey"),
        secret("apiSecret"),
        TimeZoneField("timeZone", FieldType.STRING, read_as=ReadAs.CONFIG, default=DEFAULT_TIME_ZONE),
    ),
    connector=PromptCallConnector,
)
