"""Every setting callvault reads, from the environment, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from service.allocator import DEFAULT_MMAP_THRESHOLD
from service.connectors.http import NetworkPolicy

_TRUE = {"1", "true", "yes", "on"}


def _flag(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    return default if raw is None or raw == "" else raw.strip().lower() in _TRUE


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


def _choice(env: dict[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "") or allowed[0]
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _path(env: dict[str, str], name: str) -> Path | None:
    raw = env.get(name, "")
    return Path(raw) if raw else None


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


_MASK = "***"
_PASSWORD_PARAMS = frozenset({"password", "sslpassword"})


def redact_url(url: str) -> str:
    """A database URL fit to print: the password (in the authority or a `password=`
    query parameter) replaced by ***, the rest as given. A URL that does not parse is
    not printed at all: where its password would be is unknown."""
    if not url:
        return url
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "<unparsable URL>"
    hidden = {name: _MASK for name in parsed.query if name.lower() in _PASSWORD_PARAMS}
    shown = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return shown.replace("%2A%2A%2A", _MASK)


UPLOAD_URL_TTL_RANGE = (1, 24 * 3600)
LONGEST_AUDIO_LINK_SECONDS = 3600  # the most a listen link may live, whatever the settings say


def check_public_base_url(url: str) -> str:
    """CALLVAULT_PUBLIC_BASE_URL: an absolute http(s) URL with a host and no query or
    fragment (presigned upload URLs are built on it); "" is allowed (derived at start)."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(
            f"CALLVAULT_PUBLIC_BASE_URL must be an absolute http(s) URL like https://calls.example.com, got {url!r}"
        )
    if parts.username or parts.password:
        raise ValueError("CALLVAULT_PUBLIC_BASE_URL must not carry a user or password")
    return url.rstrip("/")


def check_link_seconds(default_seconds: int, max_seconds: int) -> tuple[int, int]:
    """CALLVAULT_AUDIO_LINK_TTL_SECONDS within 1..CALLVAULT_AUDIO_LINK_MAX_SECONDS within 1..3600."""
    if not 1 <= max_seconds <= LONGEST_AUDIO_LINK_SECONDS:
        raise ValueError(
            f"CALLVAULT_AUDIO_LINK_MAX_SECONDS must be between 1 and {LONGEST_AUDIO_LINK_SECONDS}, got {max_seconds}"
        )
    if not 1 <= default_seconds <= max_seconds:
        raise ValueError(
            f"CALLVAULT_AUDIO_LINK_TTL_SECONDS must be between 1 and {max_seconds}, got {default_seconds}"
        )
    return default_seconds, max_seconds


def check_upload_url_ttl(seconds: int) -> int:
    low, high = UPLOAD_URL_TTL_RANGE
    if not low <= seconds <= high:
        raise ValueError(f"CALLVAULT_UPLOAD_URL_TTL_SECONDS must be between {low} and {high}, got {seconds}")
    return seconds


def listener_base_url(host: str, port: int, *, tls: bool) -> str:
    """The default public base URL: the HTTP listener itself (a wildcard host as loopback)."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    if ":" in shown:
        shown = f"[{shown}]"
    return f"{'https' if tls else 'http'}://{shown}:{port}"


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """How recordings are pulled from providers."""

    enabled: bool = True
    tick_seconds: float = 5.0
    default_interval_minutes: float = 15.0
    initial_lookback_days: int = 30
    # Listing restarts this far before the cursor: providers report late calls, and
    # upserts are idempotent, so the overlap costs nothing but finds them.
    overlap_minutes: int = 10
    concurrency: int = 8
    per_provider_concurrency: int = 2
    lease_seconds: float = 120.0
    retry_attempts: int = 5
    retry_base_seconds: float = 0.5
    retry_cap_seconds: float = 30.0
    recording_attempts: int = 10
    # Audio a provider lists but cannot serve yet (AudioNotReady) stays pending this long
    # after the call was first listed, tried on every pull, then fails with the reason.
    audio_wait_hours: float = 48.0
    max_recording_bytes: int = 4 * 1024**3


@dataclass(frozen=True, slots=True)
class S3Settings:
    """An S3-compatible bucket for the blobs (CALLVAULT_BLOB_BACKEND=s3)."""

    endpoint_url: str = ""
    bucket: str = ""
    region: str = "us-east-1"
    prefix: str = "blobs/"
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    create_bucket: bool = False

    def check(self) -> None:
        missing = [
            name
            for name, value in (
                ("CALLVAULT_S3_ENDPOINT", self.endpoint_url),
                ("CALLVAULT_S3_BUCKET", self.bucket),
                ("CALLVAULT_S3_ACCESS_KEY", self.access_key),
                ("CALLVAULT_S3_SECRET_KEY", self.secret_key),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"CALLVAULT_BLOB_BACKEND=s3 needs {', '.join(missing)}")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Certificate and key (PEM files) for both listeners; a client CA turns on
    client-certificate verification for gRPC callers."""

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    def check(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both CALLVAULT_TLS_CERT and CALLVAULT_TLS_KEY, or neither")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("CALLVAULT_TLS_CLIENT_CA needs CALLVAULT_TLS_CERT and CALLVAULT_TLS_KEY")
        for path in (self.cert_file, self.key_file, self.client_ca_file):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Embedded defaults (SQLite and files under ./var) unless the environment says otherwise.

    Its repr (and str) leave out the master keys and the S3 keys, and show the database
    URL with its password masked."""

    env: str = "dev"
    data_dir: Path = Path("var")
    database_url: str = ""
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    master_keys: str = field(default="", repr=False)
    key_file: Path | None = None
    # How often a server process looks at the key file for a rotated keyring (also on SIGHUP).
    key_reload_seconds: float = 2.0
    grace_seconds: float = 10.0
    health_interval_seconds: float = 5.0
    # Every server process beats its row this often; one silent for dead_after is gone.
    heartbeat_seconds: float = 2.0
    dead_after_seconds: float = 10.0
    log_level: str = "INFO"
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    sync: SyncSettings = field(default_factory=SyncSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    blob_dir: Path | None = None
    blob_backend: str = "local"
    s3: S3Settings = field(default_factory=S3Settings)
    # Bytes no recording uses any more are freed after this long, by a sweep this often.
    blob_grace_seconds: float = 3600.0
    blob_sweep_seconds: float = 300.0
    phone_region: str = "TH"
    rate_limit_per_minute: int = 600
    workers: int = 1
    timezone: str = "Asia/Bangkok"
    # Presigned upload URLs: where clients reach this service ("" derives it from the HTTP
    # listener) and how long a URL is good for.
    public_base_url: str = ""
    upload_url_ttl_seconds: int = 900
    # Listen links (CreateAudioLink): how long one lives unless asked, and at most.
    audio_link_ttl_seconds: int = 600
    audio_link_max_seconds: int = 3600
    # glibc's mmap threshold, set at server start (service/allocator.py); 0 leaves malloc be.
    malloc_mmap_threshold: int = DEFAULT_MMAP_THRESHOLD

    def __repr__(self) -> str:
        shown: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self) if f.repr}
        shown["database_url"] = redact_url(self.database_url)
        return f"Settings({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'callvault.db'}"

    @property
    def resolved_blob_dir(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "master-keys.json"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        data_dir = Path(env.get("CALLVAULT_DATA_DIR") or "var")
        mode = env.get("CALLVAULT_ENV", "dev")
        if mode not in ("dev", "production"):
            raise ValueError(f"CALLVAULT_ENV must be dev or production, got {mode!r}")
        link_seconds = check_link_seconds(
            _int(env, "CALLVAULT_AUDIO_LINK_TTL_SECONDS", 600),
            _int(env, "CALLVAULT_AUDIO_LINK_MAX_SECONDS", 3600),
        )
        return cls(
            env=mode,
            data_dir=data_dir,
            database_url=env.get("CALLVAULT_DATABASE_URL", ""),
            grpc_host=env.get("CALLVAULT_GRPC_HOST", "127.0.0.1"),
            grpc_port=_int(env, "CALLVAULT_GRPC_PORT", 50051),
            http_host=env.get("CALLVAULT_HTTP_HOST", "127.0.0.1"),
            http_port=_int(env, "CALLVAULT_HTTP_PORT", 8080),
            master_keys=env.get("CALLVAULT_MASTER_KEYS", ""),
            key_file=_path(env, "CALLVAULT_KEY_FILE"),
            key_reload_seconds=_float(env, "CALLVAULT_KEY_RELOAD_SECONDS", 2.0),
            grace_seconds=_float(env, "CALLVAULT_GRACE_SECONDS", 10.0),
            health_interval_seconds=_float(env, "CALLVAULT_HEALTH_INTERVAL_SECONDS", 5.0),
            heartbeat_seconds=_float(env, "CALLVAULT_HEARTBEAT_SECONDS", 2.0),
            dead_after_seconds=_float(env, "CALLVAULT_PROCESS_DEAD_AFTER_SECONDS", 10.0),
            log_level=env.get("CALLVAULT_LOG_LEVEL", "INFO").upper(),
            blob_dir=_path(env, "CALLVAULT_BLOB_DIR"),
            blob_backend=_choice(env, "CALLVAULT_BLOB_BACKEND", ("local", "s3")),
            s3=S3Settings(
                endpoint_url=env.get("CALLVAULT_S3_ENDPOINT", ""),
                bucket=env.get("CALLVAULT_S3_BUCKET", ""),
                region=env.get("CALLVAULT_S3_REGION", "us-east-1"),
                prefix=env.get("CALLVAULT_S3_PREFIX", "blobs/"),
                access_key=env.get("CALLVAULT_S3_ACCESS_KEY", ""),
                secret_key=env.get("CALLVAULT_S3_SECRET_KEY", ""),
                create_bucket=_flag(env, "CALLVAULT_S3_CREATE_BUCKET", False),
            ),
            blob_grace_seconds=_float(env, "CALLVAULT_BLOB_GRACE_SECONDS", 3600.0),
            blob_sweep_seconds=_float(env, "CALLVAULT_BLOB_SWEEP_SECONDS", 300.0),
            phone_region=env.get("CALLVAULT_PHONE_REGION", "TH").upper(),
            rate_limit_per_minute=_int(env, "CALLVAULT_RATE_LIMIT_PER_MINUTE", 600),
            workers=_int(env, "CALLVAULT_WORKERS", 1),
            timezone=env.get("CALLVAULT_TIMEZONE", "Asia/Bangkok"),
            public_base_url=check_public_base_url(env.get("CALLVAULT_PUBLIC_BASE_URL", "")),
            upload_url_ttl_seconds=check_upload_url_ttl(_int(env, "CALLVAULT_UPLOAD_URL_TTL_SECONDS", 900)),
            audio_link_ttl_seconds=link_seconds[0],
            audio_link_max_seconds=link_seconds[1],
            malloc_mmap_threshold=_int(env, "CALLVAULT_MALLOC_MMAP_THRESHOLD", DEFAULT_MMAP_THRESHOLD),
            tls=TlsSettings(
                cert_file=_path(env, "CALLVAULT_TLS_CERT"),
                key_file=_path(env, "CALLVAULT_TLS_KEY"),
                client_ca_file=_path(env, "CALLVAULT_TLS_CLIENT_CA"),
            ),
            sync=SyncSettings(
                enabled=_flag(env, "CALLVAULT_SYNC_ENABLED", True),
                tick_seconds=_float(env, "CALLVAULT_SYNC_TICK_SECONDS", 5.0),
                default_interval_minutes=_float(env, "CALLVAULT_SYNC_INTERVAL_MINUTES", 15.0),
                lease_seconds=_float(env, "CALLVAULT_SYNC_LEASE_SECONDS", 120.0),
                initial_lookback_days=_int(env, "CALLVAULT_SYNC_LOOKBACK_DAYS", 30),
                audio_wait_hours=_float(env, "CALLVAULT_SYNC_AUDIO_WAIT_HOURS", 48.0),
                concurrency=_int(env, "CALLVAULT_SYNC_CONCURRENCY", 8),
                per_provider_concurrency=_int(env, "CALLVAULT_SYNC_PER_PROVIDER_CONCURRENCY", 2),
            ),
            network=NetworkPolicy(
                allow_private=_flag(env, "CALLVAULT_ALLOW_PRIVATE_NETWORKS", False),
                connect_timeout=_float(env, "CALLVAULT_CONNECT_TIMEOUT_SECONDS", 5.0),
                read_timeout=_float(env, "CALLVAULT_READ_TIMEOUT_SECONDS", 30.0),
                total_timeout=_float(env, "CALLVAULT_TOTAL_TIMEOUT_SECONDS", 60.0),
            ),
        )
