"""Sealing: values open only in the context they were sealed for, keys rotate, keys never leak."""

from __future__ import annotations

import base64
import os
import stat
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from service.sealing import (
    FORMAT_VERSION,
    Keyring,
    SealBroken,
    SealContext,
    SealingError,
    UnknownKey,
    UnsupportedFormat,
    add_key,
    create_key_file,
    generate_key,
    load_key_file,
    parse_keys_env,
    retire_key,
    write_key_file,
)
from tests.support.seals import seal_v1

KEY1 = bytes(range(32))
KEY2 = bytes(range(100, 132))
CTX = SealContext("provider-secret", "biz-1", "row-1", "api_token")
SECRET = "s3cr3t-päss"


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def leaks(text: str, key: bytes) -> bool:
    """Whether text shows the key in any usual encoding."""
    return any(form in text for form in (b64(key), key.hex(), repr(key), str(key)))


@pytest.fixture
def ring() -> Keyring:
    return Keyring({1: KEY1}, primary_id=1)


# --- sealing ---------------------------------------------------------------


def test_round_trip(ring: Keyring) -> None:
    assert ring.open(ring.seal(SECRET, CTX), CTX) == SECRET
    assert ring.open(ring.seal("", CTX), CTX) == ""


def test_layout_is_version_key_id_nonce_ciphertext_tag() -> None:
    ring = Keyring({7: KEY1}, primary_id=7)
    sealed = ring.seal(SECRET, CTX)
    assert sealed[0] == FORMAT_VERSION == 2
    assert sealed[1:5] == struct.pack(">I", 7)
    assert len(sealed) == 1 + 4 + 12 + len(SECRET.encode()) + 16
    assert ring.key_id_of(sealed) == 7
    assert SECRET.encode() not in sealed


@pytest.mark.parametrize(
    "other",
    [
        SealContext("provider-secret", "biz-2", "row-1", "api_token"),
        SealContext("provider-secret", "biz-1", "row-2", "api_token"),
        SealContext("provider-secret", "biz-1", "row-1", "password"),
        SealContext("webhook-secret", "biz-1", "row-1", "api_token"),
    ],
    ids=["other-business", "other-row", "other-field", "other-purpose"],
)
def test_value_does_not_open_in_another_context(ring: Keyring, other: SealContext) -> None:
    sealed = ring.seal(SECRET, CTX)
    with pytest.raises(SealBroken) as info:
        ring.open(sealed, other)
    message = str(info.value)
    assert message == (
        f"sealed value does not open for {other.purpose}/{other.field}: "
        "wrong row, wrong field, wrong origin or tampered"
    )
    assert SECRET not in message


def test_context_parts_are_length_prefixed(ring: Keyring) -> None:
    a = SealContext("provider-secret", "ab", "c", "api_token")
    b = SealContext("provider-secret", "a", "bc", "api_token")
    with pytest.raises(SealBroken):
        ring.open(ring.seal(SECRET, a), b)


def test_every_tampered_byte_fails() -> None:
    ring = Keyring({1: KEY1}, primary_id=1)
    sealed = ring.seal(SECRET, CTX)
    for i in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        # Header bytes change the version or key id; the rest must fail authentication.
        expected: type[SealingError] = SealBroken if i >= 5 else SealingError
        with pytest.raises(expected):
            ring.open(bytes(tampered), CTX)


def test_key_id_rewritten_to_another_held_key_fails() -> None:
    ring = Keyring({1: KEY1, 2: KEY2}, primary_id=1)
    sealed = ring.seal(SECRET, CTX)
    moved = sealed[:1] + struct.pack(">I", 2) + sealed[5:]
    with pytest.raises(SealBroken):
        ring.open(moved, CTX)


def test_header_is_authenticated() -> None:
    # Two ids holding the same key bytes: only the header's inclusion in the AAD stops this.
    ring = Keyring({1: KEY1, 2: KEY1}, primary_id=1)
    sealed = ring.seal(SECRET, CTX)
    relabelled = sealed[:1] + struct.pack(">I", 2) + sealed[5:]
    with pytest.raises(SealBroken):
        ring.open(relabelled, CTX)


def test_truncated_and_unknown_version_are_unsupported(ring: Keyring) -> None:
    sealed = ring.seal(SECRET, CTX)
    with pytest.raises(UnsupportedFormat, match="too short"):
        ring.open(sealed[:32], CTX)
    with pytest.raises(UnsupportedFormat, match="too short"):
        ring.open(b"", CTX)
    with pytest.raises(UnsupportedFormat, match="version 3"):
        ring.open(b"\x03" + sealed[1:], CTX)
    with pytest.raises(UnsupportedFormat, match="version 0"):
        ring.open(b"\x00" + sealed[1:], CTX)
    with pytest.raises(SealBroken):  # long enough to parse, but the tag is cut
        ring.open(sealed[:-1], CTX)


def test_unknown_key_id(ring: Keyring) -> None:
    other = Keyring({3: KEY2}, primary_id=3)
    with pytest.raises(UnknownKey) as info:
        ring.open(other.seal(SECRET, CTX), CTX)
    assert str(info.value) == "sealed with key 3, which is not in the keyring"
    assert info.value.key_id == 3
    assert isinstance(info.value, SealingError)


def test_nonces_are_random(ring: Keyring) -> None:
    first, second = ring.seal(SECRET, CTX), ring.seal(SECRET, CTX)
    assert first != second
    assert first[5:17] != second[5:17]
    assert ring.open(first, CTX) == ring.open(second, CTX) == SECRET


@pytest.mark.parametrize("part", ["purpose", "business_id", "row_id", "field"])
def test_context_parts_must_be_non_empty(part: str) -> None:
    parts = {"purpose": "p", "business_id": "b", "row_id": "r", "field": "f", part: ""}
    with pytest.raises(ValueError, match=part):
        SealContext(**parts)


# --- the origin (format 2) and format 1 values ------------------------------

WHERE = "baseUrl=https://pbx.example.com:443"
AT_PBX = replace(CTX, origin=WHERE)


@pytest.mark.parametrize(
    "elsewhere",
    [
        "baseUrl=https://evil.example.com:443",
        "baseUrl=https://pbx.example.com:8443",
        "baseUrl=http://pbx.example.com:443",
        "",
    ],
    ids=["other-host", "other-port", "other-scheme", "no-origin"],
)
def test_value_does_not_open_for_another_origin(ring: Keyring, elsewhere: str) -> None:
    sealed = ring.seal(SECRET, AT_PBX)
    assert ring.open(sealed, AT_PBX) == SECRET
    with pytest.raises(SealBroken, match="wrong origin") as info:
        ring.open(sealed, replace(CTX, origin=elsewhere))
    assert SECRET not in str(info.value) and WHERE not in str(info.value)


def test_origin_is_length_prefixed_after_the_field(ring: Keyring) -> None:
    # Without its own prefix the origin could lend characters to the field, or take them.
    a = SealContext("provider-secret", "biz-1", "row-1", "api_tokenx", origin="y")
    b = SealContext("provider-secret", "biz-1", "row-1", "api_token", origin="xy")
    with pytest.raises(SealBroken):
        ring.open(ring.seal(SECRET, a), b)


def test_format_1_values_still_open_and_reseal_to_format_2() -> None:
    ring = Keyring({1: KEY1}, primary_id=1)
    old = seal_v1(1, KEY1, SECRET, CTX)
    # Sealed before origins were bound, it opens whatever the origin now is...
    assert ring.open(old, AT_PBX) == ring.open(old, CTX) == SECRET
    # ...but not in another row, and it is due for re-sealing though its key is primary.
    with pytest.raises(SealBroken):
        ring.open(old, replace(AT_PBX, row_id="row-2"))
    assert ring.key_id_of(old) == ring.primary_id and ring.needs_reseal(old)

    new = ring.reseal(old, AT_PBX)
    assert new[0] == 2 and ring.key_id_of(new) == 1 and not ring.needs_reseal(new)
    assert ring.open(new, AT_PBX) == SECRET
    with pytest.raises(SealBroken):
        ring.open(new, CTX)


def test_format_2_value_relabelled_as_format_1_does_not_open(ring: Keyring) -> None:
    # The version byte is authenticated: dropping the origin binding by relabelling fails.
    sealed = ring.seal(SECRET, AT_PBX)
    with pytest.raises(SealBroken):
        ring.open(b"\x01" + sealed[1:], AT_PBX)


# --- rotation --------------------------------------------------------------


def test_rotation_add_reseal_retire() -> None:
    ring1 = Keyring({1: KEY1}, primary_id=1)
    old = ring1.seal(SECRET, CTX)
    assert not ring1.needs_reseal(old)

    ring2 = add_key(ring1)
    assert ring2.ids == (1, 2)
    assert ring2.primary_id == 2
    assert ring1.ids == (1,)  # the original is untouched
    assert ring2.needs_reseal(old)
    assert ring2.open(old, CTX) == SECRET

    new = ring2.reseal(old, CTX)
    assert ring2.key_id_of(new) == 2
    assert not ring2.needs_reseal(new)

    ring3 = retire_key(ring2, 1)
    assert ring3.ids == (2,)
    assert ring3.open(new, CTX) == SECRET
    with pytest.raises(UnknownKey, match="key 1"):
        ring3.open(old, CTX)


def test_reseal_checks_the_context(ring: Keyring) -> None:
    sealed = ring.seal(SECRET, CTX)
    wrong = SealContext("provider-secret", "biz-1", "row-9", "api_token")
    with pytest.raises(SealBroken):
        add_key(ring).reseal(sealed, wrong)


def test_holds_compares_ids_and_bytes_and_only_seals_under_one_key() -> None:
    both = Keyring({1: KEY1, 2: KEY2}, primary_id=2)
    assert both.holds(Keyring({1: KEY1}, 1)) and both.holds(both)
    assert not Keyring({1: KEY1}, 1).holds(both)
    assert not both.holds(Keyring({1: KEY2}, 1))  # same id, other bytes
    one = both.only(1)
    assert (one.ids, one.primary_id) == ((1,), 1)
    sealed = one.seal(SECRET, CTX)
    assert both.key_id_of(sealed) == 1 and both.open(sealed, CTX) == SECRET
    with pytest.raises(UnknownKey):
        both.only(3)


def test_retire_refuses_primary_and_unknown() -> None:
    ring = Keyring({1: KEY1, 2: KEY2}, primary_id=2)
    with pytest.raises(ValueError, match="key 2 is the primary key"):
        retire_key(ring, 2)
    with pytest.raises(ValueError, match="key 5 is not in the keyring"):
        retire_key(ring, 5)
    assert ring.ids == (1, 2)


def test_generate_key_is_random_256_bit() -> None:
    a, b = generate_key(), generate_key()
    assert len(a) == len(b) == 32
    assert a != b


# --- keyring validation and repr ------------------------------------------


@pytest.mark.parametrize(
    ("keys", "primary", "message"),
    [
        ({}, 1, "at least one key"),
        ({1: KEY1[:16]}, 1, "key 1 must be 32 bytes, got 16"),
        ({1: KEY1}, 2, "primary key 2 is not in the keyring"),
        ({-1: KEY1}, -1, "key id must be an integer"),
        ({2**32: KEY1}, 2**32, "key id must be an integer"),
    ],
)
def test_keyring_validation(keys: dict[int, bytes], primary: int, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Keyring(keys, primary)
    assert not leaks(str(info.value), KEY1)
    assert not leaks(str(info.value), KEY1[:16])


def test_repr_shows_ids_only() -> None:
    ring = Keyring({1: KEY1, 2: KEY2}, primary_id=2)
    text = repr(ring)
    assert text == "Keyring(ids=[1, 2], primary_id=2)"
    assert str(ring) == text
    assert not leaks(text, KEY1)
    assert not leaks(text, KEY2)


# --- environment -----------------------------------------------------------


def test_parse_keys_env_first_entry_is_primary() -> None:
    ring = parse_keys_env(f"2:{b64(KEY2)}, 1:{b64(KEY1)}")
    assert ring.primary_id == 2
    assert ring.ids == (1, 2)
    sealed = Keyring({1: KEY1}, 1).seal(SECRET, CTX)
    assert ring.open(sealed, CTX) == SECRET  # key 1 is the same key


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        (f"{b64(KEY1)}", "entry 1: expected '<id>:<base64 key>'"),
        (f"1:{b64(KEY1)},x:{b64(KEY2)}", "entry 2: key id must be a non-negative integer"),
        (f"1:{b64(KEY1)},-2:{b64(KEY2)}", "entry 2: key id must be a non-negative integer"),
        (f"1:{b64(KEY1)}!", "entry 1: key is not valid base64"),
        (f"1:{b64(KEY1[:31])}", "entry 1: key must be 32 bytes, got 31"),
        (f"1:{b64(KEY1)},1:{b64(KEY2)}", "entry 2: key id 1 appears more than once"),
        (f"1:{b64(KEY1)},", "entry 2: expected"),
        (f"{2**32}:{b64(KEY1)}", "entry 1: key id must be an integer between"),
    ],
    ids=[
        "empty",
        "no-id",
        "bad-id",
        "negative-id",
        "bad-base64",
        "short-key",
        "duplicate",
        "trailing-comma",
        "big-id",
    ],
)
def test_parse_keys_env_errors_name_position_not_material(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_keys_env(value)
    text = str(info.value)
    for key in (KEY1, KEY2, KEY1[:31]):
        assert not leaks(text, key)
    # No chained exception (e.g. from binascii or int()) shows in the traceback.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


# --- key file --------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_load_round_trip_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    created = create_key_file(path)
    assert created.ids == (1,)
    assert created.primary_id == 1
    assert mode(path) == 0o600
    loaded = load_key_file(path)
    assert loaded.ids == (1,)
    assert loaded.open(created.seal(SECRET, CTX), CTX) == SECRET
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temp file left


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    create_key_file(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        create_key_file(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]


def test_write_replaces_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    ring = add_key(Keyring({1: KEY1}, primary_id=1))
    write_key_file(path, ring)
    assert mode(path) == 0o600
    loaded = load_key_file(path)
    assert loaded.ids == (1, 2)
    assert loaded.primary_id == 2
    assert loaded.open(ring.seal(SECRET, CTX), CTX) == SECRET
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]


def test_key_file_format(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(f'{{"primary": 2, "keys": {{"1": "{b64(KEY1)}", "2": "{b64(KEY2)}"}}}}')
    ring = load_key_file(path)
    assert ring.primary_id == 2
    assert ring.open(Keyring({1: KEY1}, 1).seal(SECRET, CTX), CTX) == SECRET


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (f'{{"primary": 1, "keys": {{"1": "{b64(KEY1)}"', "not valid JSON"),
        ("[]", "expected a JSON object"),
        (f'{{"primary": "1", "keys": {{"1": "{b64(KEY1)}"}}}}', "'primary' must be an integer"),
        ('{"primary": 1, "keys": {}}', "'keys' must be a non-empty object"),
        (f'{{"primary": 1, "keys": {{"one": "{b64(KEY1)}"}}}}', "key id must be a non-negative integer"),
        (f'{{"primary": 1, "keys": {{"1": "{b64(KEY1[:31])}"}}}}', "key 1: key must be 32 bytes"),
        (f'{{"primary": 2, "keys": {{"1": "{b64(KEY1)}"}}}}', "primary key 2 is not in the keyring"),
    ],
    ids=[
        "truncated-json",
        "not-object",
        "string-primary",
        "no-keys",
        "bad-id",
        "short-key",
        "missing-primary",
    ],
)
def test_bad_key_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_key_file(path)
    assert not leaks(str(info.value), KEY1)
    assert not leaks(str(info.value), KEY1[:31])
