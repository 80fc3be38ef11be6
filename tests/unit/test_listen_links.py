"""Listen link tokens without a server: lifetime bounds, expiry on an injected clock, every
part of the token tampered with, another recording, another or a retired master key."""

from __future__ import annotations

import base64
import uuid

import pytest

from service.config import Settings, check_link_seconds
from service.errors import InvalidArgument, LinkExpired, LinkInvalid
from service.recordings.listenlinks import ListenLinks
from service.recordings.signedtokens import TokenSigner
from service.sealing import Keyring, generate_key

NOW = 1_800_000_000.5
BUSINESS, RECORDING, KEY = (str(uuid.uuid4()) for _ in range(3))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def links(ring: Keyring, now: list[float], **bounds: int) -> ListenLinks:
    return ListenLinks(
        ring,
        default_seconds=bounds.get("default_seconds", 600),
        max_seconds=bounds.get("max_seconds", 3600),
        base_url="https://calls.example.com",
        clock=lambda: now[0],
    )


def test_lifetime_is_the_default_or_the_request_within_bounds() -> None:
    made = links(Keyring({1: generate_key()}, 1), [NOW], default_seconds=600, max_seconds=900)
    assert made.lifetime(None) == 600
    assert made.lifetime(1) == 1 and made.lifetime(900) == 900
    for bad in (0, -1, 901, 3601):
        with pytest.raises(InvalidArgument) as refused:
            made.lifetime(bad)
        assert refused.value.field == "expiresInSeconds"
        assert refused.value.message == "expiresInSeconds: must be between 1 and 900 seconds"


def test_settings_bound_the_default_and_the_most() -> None:
    settings = Settings.from_env({})
    assert (settings.audio_link_ttl_seconds, settings.audio_link_max_seconds) == (600, 3600)
    custom = Settings.from_env(
        {"CALLVAULT_AUDIO_LINK_TTL_SECONDS": "60", "CALLVAULT_AUDIO_LINK_MAX_SECONDS": "120"}
    )
    assert (custom.audio_link_ttl_seconds, custom.audio_link_max_seconds) == (60, 120)
    with pytest.raises(
        ValueError, match="CALLVAULT_AUDIO_LINK_TTL_SECONDS must be between 1 and 120, got 121"
    ):
        Settings.from_env(
            {"CALLVAULT_AUDIO_LINK_TTL_SECONDS": "121", "CALLVAULT_AUDIO_LINK_MAX_SECONDS": "120"}
        )
    with pytest.raises(ValueError, match="CALLVAULT_AUDIO_LINK_MAX_SECONDS"):
        Settings.from_env({"CALLVAULT_AUDIO_LINK_MAX_SECONDS": "7200"})
    with pytest.raises(ValueError, match="CALLVAULT_AUDIO_LINK_MAX_SECONDS"):
        check_link_seconds(600, 3601)  # never more than an hour
    with pytest.raises(ValueError, match="CALLVAULT_AUDIO_LINK_TTL_SECONDS"):
        check_link_seconds(700, 600)
    with pytest.raises(ValueError, match="CALLVAULT_AUDIO_LINK_TTL_SECONDS"):
        check_link_seconds(0, 600)


def test_a_link_plays_its_recording_until_it_expires() -> None:
    now = [NOW]
    made = links(Keyring({1: generate_key()}, 1), now)
    link = made.mint(BUSINESS, RECORDING, KEY, 600)
    assert link.url == f"https://calls.example.com/api/v1/recordings/{RECORDING}/audio?linkToken={link.token}"
    assert link.expires_at.timestamp() == 1_800_000_601  # at least the seconds asked for
    now[0] = 1_800_000_600.9
    grant = made.verify(link.token, RECORDING)
    assert (grant.business_id, grant.recording_id, grant.key_id) == (BUSINESS, RECORDING, KEY)
    assert grant.expires_at == link.expires_at
    with pytest.raises(LinkInvalid):  # the right token, another recording
        made.verify(link.token, str(uuid.uuid4()))
    now[0] = 1_800_000_601
    with pytest.raises(LinkExpired):
        made.verify(link.token, RECORDING)
    with pytest.raises(LinkInvalid):  # expired and for another recording: only invalid
        made.verify(link.token, str(uuid.uuid4()))


def _tampered(token: str) -> list[str]:
    """The token with each part changed: every payload field, the MAC, the framing."""
    encoded, mac = token.split(".")
    fields = _unb64(encoded).decode().split(".")
    out = []
    replacements = [
        "v2",
        "2",
        str(int(fields[2]) + 3600),
        str(uuid.uuid4()),
        RECORDING[:-1] + "0",
        str(uuid.uuid4()),
    ]
    for index, value in enumerate(replacements):
        changed = list(fields)
        changed[index] = value if value != fields[index] else value[::-1]
        out.append(f"{_b64('.'.join(changed).encode())}.{mac}")
    raw_mac = bytearray(_unb64(mac))
    raw_mac[0] ^= 1
    out += [
        f"{encoded}.{_b64(bytes(raw_mac))}",  # one bit of the MAC
        f"{encoded}.{mac[:-4]}",  # truncated MAC
        token[: len(token) // 2],  # truncated token
        encoded,  # no MAC at all
        f"{encoded}.",
        f"{_b64(('.'.join(fields) + '.extra').encode())}.{mac}",  # a field added
        f"{_b64('.'.join(fields[:-1]).encode())}.{mac}",  # a field dropped
        f"{encoded}.{mac}.x",
        "%%%.@@@",
        "",
        token + "A" * 400,
    ]
    return out


def test_every_tampered_part_is_invalid() -> None:
    now = [NOW]
    made = links(Keyring({1: generate_key()}, 1), now)
    token = made.mint(BUSINESS, RECORDING, KEY, 600).token
    cases = _tampered(token)
    assert len(set(cases)) == len(cases) and token not in cases
    for case in cases:
        with pytest.raises(LinkInvalid):
            made.verify(case, RECORDING)
    now[0] += 10_000  # tampered and past its time: still invalid, never "expired"
    for case in cases:
        with pytest.raises(LinkInvalid):
            made.verify(case, RECORDING)


def test_other_purposes_and_master_keys_do_not_verify() -> None:
    key = generate_key()
    now = [NOW]
    made = links(Keyring({1: key}, 1), now)
    # Same fields, signed for presigned uploads: another purpose's key.
    upload_like = TokenSigner(Keyring({1: key}, 1), b"callvault upload-url v1").sign(
        int(NOW) + 600, (BUSINESS, RECORDING, KEY)
    )
    with pytest.raises(LinkInvalid):
        made.verify(upload_like, RECORDING)
    with pytest.raises(LinkInvalid):  # another keyring (another deployment) with a key 1
        links(Keyring({1: generate_key()}, 1), now).verify(
            made.mint(BUSINESS, RECORDING, KEY, 60).token, RECORDING
        )


def test_rotation_keeps_links_of_keys_in_the_ring_and_drops_retired_ones() -> None:
    old, new = generate_key(), generate_key()
    now = [NOW]
    before = links(Keyring({1: old}, 1), now).mint(BUSINESS, RECORDING, KEY, 600).token
    rotated = links(Keyring({1: old, 2: new}, 2), now)
    assert rotated.verify(before, RECORDING).key_id == KEY
    after = rotated.mint(BUSINESS, RECORDING, KEY, 600).token
    assert _unb64(after.split(".")[0]).decode().split(".")[1] == "2"
    retired = links(Keyring({2: new}, 2), now)
    assert retired.verify(after, RECORDING).recording_id == RECORDING
    with pytest.raises(LinkInvalid):
        retired.verify(before, RECORDING)


def test_the_token_and_keys_stay_out_of_reprs() -> None:
    key = generate_key()
    made = links(Keyring({1: key}, 1), [NOW])
    link = made.mint(BUSINESS, RECORDING, KEY, 600)
    for shown in (repr(made), repr(link)):
        assert link.token not in shown and key.hex() not in shown
