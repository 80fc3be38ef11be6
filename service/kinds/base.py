"""What a provider kind is: its fields, which are secret, how they validate, how they
are previewed and read back, and which connector speaks for it. Defined once per kind.

A kind declares, on its fields, everything the rest of callvault needs to know about
it: its host fields (`locates`), its poll interval field (`schedules`) and where each field
is read back (`read_as`). The settings every kind has (COMMON_FIELDS) are declared here
once, so the store and the puller name no kind and no kind's field.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from service.connectors.base import Connector
from service.connectors.http import NetworkPolicy
from service.connectors.http import origin_of as http_origin_of
from service.errors import InvalidArgument
from service.netsafety import UnsafeAddress, check_url
from service.validation import check_plain

MAX_STRING = 1000
MAX_URL = 2048

# A stored secret whose value is not needed to validate a merge (PATCH without it).
KEPT = object()
_WS_TWINS = {"ws": "http", "wss": "https"}


class FieldType(enum.Enum):
    STRING = "string"
    URL = "url"
    BOOL = "boolean"
    INT = "integer"


class ReadAs(enum.Enum):
    """Where a readable field appears when a provider is read back."""

    BASE_URL = "baseUrl"
    USERNAME = "username"
    CONFIG = "config"
    HIDDEN = "hidden"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str  # lowerCamelCase, as on the wire
    type: FieldType
    required: bool = False
    secret: bool = False
    read_as: ReadAs = ReadAs.HIDDEN
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    schemes: tuple[str, ...] = ("http", "https")
    # A host field says where the credentials are sent: its origin is bound into every
    # sealed secret, and changing it needs every secret sent again.
    locates: bool = False
    # The kind's poll interval, in minutes (at most one field per kind).
    schedules: bool = False

    def check(self, value: Any, *, policy: NetworkPolicy) -> Any:
        """The value as stored, or InvalidArgument naming config.<field>."""
        where = f"config.{self.name}"
        if self.type is FieldType.BOOL:
            if not isinstance(value, bool):
                raise InvalidArgument(where, "must be true or false")
            return value
        if self.type is FieldType.INT:
            return self._check_int(value, where)
        if not isinstance(value, str):
            raise InvalidArgument(where, "must be a string")
        check_plain(value, where)
        if not value.strip():
            raise InvalidArgument(where, "must not be empty")
        limit = MAX_URL if self.type is FieldType.URL else MAX_STRING
        if len(value) > limit:
            raise InvalidArgument(where, f"must be at most {limit} characters")
        if self.type is FieldType.URL:
            return self._check_url(value.strip(), where, policy)
        return value

    def _check_int(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgument(where, "must be a whole number")
        if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
            raise InvalidArgument(where, "must be a whole number")
        number = int(value)
        if (self.minimum is not None and number < self.minimum) or (
            self.maximum is not None and number > self.maximum
        ):
            raise InvalidArgument(where, f"must be between {self.minimum} and {self.maximum}")
        return number

    def _check_url(self, value: str, where: str, policy: NetworkPolicy) -> str:
        try:
            parts = urlsplit(value)  # raises on "http://[::1" (an unclosed IPv6 literal)
        except ValueError:
            raise InvalidArgument(where, "must be a valid URL") from None
        if parts.scheme.lower() not in self.schemes:
            raise InvalidArgument(where, f"must be a {' or '.join(self.schemes)} URL")
        try:
            # The host rules are the same for ws(s) as for http(s).
            check_url(urlunsplit(parts._replace(scheme="https")), allow_private=policy.allow_private)
        except UnsafeAddress as exc:
            raise InvalidArgument(where, str(exc)) from None
        except ValueError:
            raise InvalidArgument(where, "must be a valid URL") from None
        return value.rstrip("/")


ConnectorFactory = Callable[[Mapping[str, Any], NetworkPolicy], Connector]

LATE_ROWS_HOURS = 24
# Every kind's: how far back each pull re-reads for rows a provider writes late (a call's
# row is written when it ends; the puller's state.py). Unset reads as LATE_ROWS_HOURS; shown
# back in config only once set.
LATE_ROWS = FieldSpec("lateRowsHours", FieldType.INT, read_as=ReadAs.CONFIG, minimum=0, maximum=24 * 14)
COMMON_FIELDS = (LATE_ROWS,)


@dataclass(frozen=True, slots=True)
class ReadBack:
    """A provider's settings as read back: where, as whom, and the rest that is readable."""

    base_url: str | None
    username: str | None
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ProviderKind:
    name: str
    fields: tuple[FieldSpec, ...]
    connector: ConnectorFactory
    # The non-secret field shown before " @ host" in the list preview.
    preview_user: str | None = None
    by_name: dict[str, FieldSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        own = {f.name for f in self.fields}
        fields = self.fields + tuple(f for f in COMMON_FIELDS if f.name not in own)
        if sum(f.schedules for f in fields) > 1:
            raise ValueError(f"kind {self.name} declares more than one poll interval field")
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "by_name", {f.name: f for f in fields})

    @property
    def secret_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.secret)

    @property
    def host_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.locates)

    def origins(self, settings: Mapping[str, Any]) -> dict[str, str]:
        """Each host field's normalised origin ("" when unset), defaults counted: where the
        secrets go, and so what they are bound to."""
        full = self.with_defaults(settings)
        return {name: origin_of(full.get(name)) for name in self.host_fields}

    def origin(self, settings: Mapping[str, Any]) -> str:
        """All host fields' origins as one string, the part bound into each sealed secret."""
        return "\n".join(f"{name}={value}" for name, value in self.origins(settings).items())

    def require_secrets_if_moved(self, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
        """A stored secret is sent only to the origin it was saved for: when `after` (a
        validated merge, stored secrets KEPT) moves any host field to another origin, every
        stored secret must be in it again. InvalidArgument names the ones that are not."""
        old, new = self.origins(before), self.origins(after)
        moved = [f"config.{name}" for name in self.host_fields if old[name] != new[name]]
        missing = [f"config.{name}" for name in self.secret_fields if after.get(name) is KEPT]
        if moved and missing:
            also = f" (so must {', '.join(missing[1:])})" if len(missing) > 1 else ""
            raise InvalidArgument(missing[0], f"must be sent again when {' and '.join(moved)} changes{also}")

    def validate(self, config: Mapping[str, Any], *, policy: NetworkPolicy) -> dict[str, Any]:
        """The whole config, checked field by field. Values that are KEPT (stored secrets
        not sent again) pass as present. None means "not set"."""
        for key in config:
            if key not in self.by_name:
                raise InvalidArgument(f"config.{key}", f"is not a setting of kind {self.name}")
        clean: dict[str, Any] = {}
        for spec in self.fields:
            value = config.get(spec.name)
            if value is None:
                if spec.required:
                    raise InvalidArgument(f"config.{spec.name}", "is required")
                continue
            clean[spec.name] = value if value is KEPT else spec.check(value, policy=policy)
        return clean

    def split(self, clean: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(non-secret settings, secrets) of a validated config."""
        settings = {k: v for k, v in clean.items() if not self.by_name[k].secret}
        secrets = {k: v for k, v in clean.items() if self.by_name[k].secret}
        return settings, secrets

    def with_defaults(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        merged = {f.name: f.default for f in self.fields if f.default is not None and not f.secret}
        merged.update(settings)
        return merged

    def preview(self, settings: Mapping[str, Any]) -> str:
        """ "apiuser @ pbx.example.com": who and where, never a secret."""
        base_url = self.read_back(settings).base_url
        host = urlsplit(base_url or "").hostname or ""
        user = str(self.with_defaults(settings).get(self.preview_user, "")) if self.preview_user else ""
        return f"{user} @ {host}" if user and host else user or host

    def readable(self, settings: Mapping[str, Any], where: ReadAs) -> dict[str, Any]:
        full = self.with_defaults(settings)
        return {f.name: full[f.name] for f in self.fields if f.read_as is where and f.name in full}

    def read_back(self, settings: Mapping[str, Any]) -> ReadBack:
        base_url = next(iter(self.readable(settings, ReadAs.BASE_URL).values()), None)
        username = next(iter(self.readable(settings, ReadAs.USERNAME).values()), None)
        return ReadBack(
            base_url=None if base_url is None else str(base_url),
            username=None if username is None else str(username),
            config=self.readable(settings, ReadAs.CONFIG),
        )

    def poll_interval_minutes(self, settings: Mapping[str, Any]) -> int | None:
        """The provider's own poll interval, if its kind has one and it is set."""
        spec = next((f for f in self.fields if f.schedules), None)
        value = self.with_defaults(settings).get(spec.name) if spec else None
        return _positive_int(value)

    def late_rows_hours(self, settings: Mapping[str, Any]) -> int:
        """How far back every pull of the provider re-reads for late rows."""
        value = settings.get(LATE_ROWS.name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        return LATE_ROWS_HOURS


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def poll_interval(name: str, *, minimum: int = 5, maximum: int = 1440) -> FieldSpec:
    """The kind's poll interval setting, in minutes."""
    return FieldSpec(name, FieldType.INT, minimum=minimum, maximum=maximum, schedules=True)


def origin_of(value: Any) -> str:
    """``scheme://host:port`` of a host field's URL, in the spelling of the connectors'
    origin rule (``connectors.http.origin_of``), so "the same origin" means one thing
    everywhere; a ws(s) URL takes its http(s) twin's, under its own scheme. "" for no URL."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        url = httpx.URL(value.strip())
        twin = _WS_TWINS.get(url.scheme)
        origin = http_origin_of(url.copy_with(scheme=twin) if twin else url)
    except httpx.InvalidURL:
        origin = None
    if origin is None:  # not a URL a secret may go to: bind the value as given
        return value
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    return f"{url.scheme}://{host}:{origin.port}"


def url(
    name: str,
    *,
    required: bool = False,
    read_as: ReadAs = ReadAs.BASE_URL,
    default: str | None = None,
    schemes: tuple[str, ...] = ("http", "https"),
    locates: bool,
) -> FieldSpec:
    """A URL setting; each kind says whether it is a host field (credentials go there)."""
    return FieldSpec(
        name,
        FieldType.URL,
        required=required,
        read_as=read_as,
        default=default,
        schemes=schemes,
        locates=locates,
    )


def text(name: str, *, required: bool = True, read_as: ReadAs = ReadAs.HIDDEN) -> FieldSpec:
    return FieldSpec(name, FieldType.STRING, required=required, read_as=read_as)


def secret(name: str) -> FieldSpec:
    return FieldSpec(name, FieldType.STRING, required=True, secret=True)
