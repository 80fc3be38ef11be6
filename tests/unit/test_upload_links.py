"""Presigned upload URL settings and the keyring's purpose keys, without a server."""

from __future__ import annotations

import uuid

import pytest

from service.config import Settings, listener_base_url
from service.errors import UploadUrlExpired, UploadUrlInvalid
from service.recordings.uploadlinks import UploadLinks
from service.sealing import Keyring, UnknownKey, generate_key
from service.storage.db import Database


def test_public_base_url_is_validated_at_start() -> None:
    assert Settings.from_env({}).public_base_url == ""
    ok = Settings.from_env({"CALLVAULT_PUBLIC_BASE_URL": "https://calls.example.com/vault/"})
    assert ok.public_base_url == "https://calls.example.com/vault"
    for bad in (
        "calls.example.com",
        "ftp://calls.example.com",
        "https://",
        "https://h/?a=1",
        "https://u:p@h",
    ):
        with pytest.raises(ValueError, match="CALLVAULT_PUBLIC_BASE_URL"):
            Settings.from_env({"CALLVAULT_PUBLIC_BASE_URL": bad})


def test_upload_url_expiry_is_bounded() -> None:
    assert Settings.from_env({}).upload_url_ttl_seconds == 900
    assert Settings.from_env({"CALLVAULT_UPLOAD_URL_TTL_SECONDS": "60"}).upload_url_ttl_seconds == 60
    for bad in ("0", "-5", str(24 * 3600 + 1)):
        with pytest.raises(ValueError, match="CALLVAULT_UPLOAD_URL_TTL_SECONDS"):
            Settings.from_env({"CALLVAULT_UPLOAD_URL_TTL_SECONDS": bad})


def test_the_default_base_url_is_the_listener() -> None:
    assert listener_base_url("127.0.0.1", 8080, tls=False) == "http://127.0.0.1:8080"
    assert listener_base_url("0.0.0.0", 8443, tls=True) == "https://127.0.0.1:8443"
    assert listener_base_url("::", 80, tls=False) == "http://[::1]:80"


def test_purpose_keys_differ_by_purpose_and_key_and_stay_out_of_reprs() -> None:
    one, two = generate_key(), generate_key()
    ring = Keyring({1: one, 2: two}, primary_id=2)
    a = ring.derive(b"callvault upload-url v1", 1)
    assert len(a) == 32 and a == Keyring({1: one}, 1).derive(b"callvault upload-url v1", 1)
    assert a not in (one, two)
    assert a != ring.derive(b"callvault upload-url v1", 2)
    assert a != ring.derive(b"something else", 1)
    with pytest.raises(UnknownKey):
        ring.derive(b"callvault upload-url v1", 3)
    assert a.hex() not in repr(ring) and one.hex() not in repr(ring)


def test_a_link_works_until_its_expiry_and_names_its_recording() -> None:
    now = [1_800_000_000.0]
    links = UploadLinks(
        Keyring({1: generate_key()}, 1),
        Database("sqlite+aiosqlite:///:memory:"),
        ttl_seconds=900,
        base_url="https://calls.example.com",
        clock=lambda: now[0],
    )
    business, recording = str(uuid.uuid4()), str(uuid.uuid4())
    link = links.mint(business, recording)
    assert (
        link.url == f"https://calls.example.com/api/v1/recordings/{recording}/audio?uploadToken={link.token}"
    )
    assert link.expires_at.timestamp() == now[0] + 900
    now[0] += 899
    grant = links.verify(link.token, recording)
    assert (grant.business_id, grant.recording_id) == (business, recording)
    with pytest.raises(UploadUrlInvalid):
        links.verify(link.token, str(uuid.uuid4()))
    now[0] += 1
    with pytest.raises(UploadUrlExpired):
        links.verify(link.token, recording)
    with pytest.raises(ValueError, match="own ids"):
        links.mint(business, "../other")
