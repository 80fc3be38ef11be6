"""Settings print without their secrets: the database password, master keys, S3 keys."""

from __future__ import annotations

import base64

import pytest

from service.config import Settings, redact_url

MASTER_KEY = base64.b64encode(b"m" * 32).decode()


def test_repr_and_str_hide_every_secret_and_keep_the_url_readable() -> None:
    settings = Settings.from_env(
        {
            "CALLVAULT_DATABASE_URL": "postgresql://cv:db-pw-7c1e@db.example:5432/callvault?sslmode=require",
            "CALLVAULT_MASTER_KEYS": f"1:{MASTER_KEY}",
            "CALLVAULT_BLOB_BACKEND": "s3",
            "CALLVAULT_S3_ENDPOINT": "https://s3.example",
            "CALLVAULT_S3_BUCKET": "calls",
            "CALLVAULT_S3_ACCESS_KEY": "AKIA-access-1f2e",
            "CALLVAULT_S3_SECRET_KEY": "s3-secret-9d8c",
        }
    )
    for shown in (repr(settings), str(settings), repr(settings.s3), f"{settings}"):
        for secret in ("db-pw-7c1e", MASTER_KEY, "AKIA-access-1f2e", "s3-secret-9d8c"):
            assert secret not in shown
    assert "database_url='postgresql://cv:***@db.example:5432/callvault?sslmode=require'" in repr(settings)
    assert "bucket='calls'" in repr(settings) and "grpc_port=50051" in repr(settings)
    assert settings.resolved_database_url.endswith("db-pw-7c1e@db.example:5432/callvault?sslmode=require")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://cv:p%40ss%3Aw0rd@db/cv", "postgresql://cv:***@db/cv"),
        (
            "postgresql://cv@db/cv?password=in-query&sslmode=require",
            "postgresql://cv@db/cv?password=***&sslmode=require",
        ),
        ("postgresql://cv@db/cv?sslpassword=tls-pass", "postgresql://cv@db/cv?sslpassword=***"),
        ("postgresql://cv@db/cv", "postgresql://cv@db/cv"),
        ("sqlite+aiosqlite:///var/callvault.db", "sqlite+aiosqlite:///var/callvault.db"),
        ("", ""),
        ("host=db password=libpq-style", "<unparsable URL>"),
        ("postgresql://cv:pw-bad-port@db:notaport/cv", "<unparsable URL>"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
