"""Sealing of stored secrets: AES-256-GCM under a keyring of master keys.

A sealed value is ``version (1 byte) | key id (uint32 BE) | nonce (12 bytes) | ciphertext+tag``.
The key id travels with the value so keys can be rotated without a flag day, and the
associated data binds the value to (purpose, business id, row id, field, origin): a sealed
value copied to another row, another business or another field, or left in place after the
place it is sent to changed, does not open.

Format 2 binds the origin; format 1 (no origin) still opens, with the associated data it
was sealed with, until ``reseal`` upgrades it (``needs_reseal`` says so).

Master keys come from the environment (``parse_keys_env``) or a key file
(``load_key_file``), never from the database the sealed values live in. Nothing here
holds global state; callers build a ``Keyring`` once and pass it around.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "FORMAT_VERSION",
    "KEY_SIZE",
    "Keyring",
    "SealBroken",
    "SealContext",
    "Sealer",
    "SealingError",
    "UnknownKey",
    "UnsupportedFormat",
    "add_key",
    "create_key_file",
    "generate_key",
    "load_key_file",
    "parse_keys_env",
    "retire_key",
    "write_key_file",
]

FORMAT_VERSION: Final = 2  # what ``seal`` writes
_READABLE_VERSIONS: Final = frozenset({1, FORMAT_VERSION})
KEY_SIZE: Final = 32  # AES-256
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
MAX_KEY_ID: Final = 0xFFFFFFFF

_HEADER = struct.Struct(">BI")  # version, key id
_MIN_SEALED_SIZE: Final = _HEADER.size + NONCE_SIZE + TAG_SIZE


class SealingError(Exception):
    """A sealed value could not be opened. Messages name key ids and fields, never
    plaintext or key bytes, so they are safe to log."""


class UnknownKey(SealingError):
    """The value was sealed with a key this keyring does not hold (retired too early,
    or the wrong key source was configured)."""

    def __init__(self, key_id: int) -> None:
        super().__init__(f"sealed with key {key_id}, which is not in the keyring")
        self.key_id = key_id


class SealBroken(SealingError):
    """Authentication failed: the value was moved to another row, field or origin, or altered."""

    def __init__(self, ctx: SealContext) -> None:
        super().__init__(
            f"sealed value does not open for {ctx.purpose}/{ctx.field}: "
            "wrong row, wrong field, wrong origin or tampered"
        )


class UnsupportedFormat(SealingError):
    """The value is too short or carries a format version this code does not know."""


@dataclass(frozen=True, slots=True)
class SealContext:
    """Where a sealed value belongs; it is authenticated but not stored in the value.

    Every part but ``origin`` must be non-empty: an empty row id would make values
    interchangeable between all rows that forgot to set one. ``origin`` is an extra bound
    part (where the value may be sent, for example); empty binds nothing more. It is bound
    from format 2 on: format 1 values ignore it.
    """

    purpose: str  # e.g. "provider-secret"
    business_id: str
    row_id: str
    field: str
    origin: str = ""

    def __post_init__(self) -> None:
        for name in ("purpose", "business_id", "row_id", "field"):
            part = getattr(self, name)
            if not isinstance(part, str) or not part:
                raise ValueError(f"SealContext.{name} must be a non-empty string")
        if not isinstance(self.origin, str):
            raise ValueError("SealContext.origin must be a string")


def _aad(header: bytes, ctx: SealContext) -> bytes:
    # Length prefixes keep ("ab", "c") and ("a", "bc") apart. The version byte in the
    # header says which parts are bound, and is itself authenticated.
    parts = [ctx.purpose, ctx.business_id, ctx.row_id, ctx.field]
    if header[0] >= 2:
        parts.append(ctx.origin)
    out = bytearray(header)
    for part in parts:
        encoded = part.encode("utf-8")
        out += struct.pack(">I", len(encoded))
        out += encoded
    return bytes(out)


def _parse_header(sealed: bytes) -> tuple[int, int]:
    """Return (format version, key id) of a sealed value after checking its framing."""
    if len(sealed) < _MIN_SEALED_SIZE:
        raise UnsupportedFormat(f"sealed value is too short ({len(sealed)} bytes, need {_MIN_SEALED_SIZE})")
    version, key_id = _HEADER.unpack_from(sealed)
    if version not in _READABLE_VERSIONS:
        raise UnsupportedFormat(f"sealed value has unsupported format version {version}")
    return int(version), int(key_id)


def _check_key_id(key_id: object) -> int:
    if isinstance(key_id, bool) or not isinstance(key_id, int) or not 0 <= key_id <= MAX_KEY_ID:
        raise ValueError(f"key id must be an integer between 0 and {MAX_KEY_ID}")
    return key_id


def generate_key() -> bytes:
    """A fresh random 256-bit master key."""
    return AESGCM.generate_key(bit_length=256)


class Keyring:
    """Master keys by id, one of them primary (used for new seals).

    Immutable: rotation helpers return a new keyring, so a keyring shared between
    requests never changes under them. ``repr`` shows ids only.
    """

    __slots__ = ("_aeads", "_keys", "_primary_id")

    def __init__(self, keys: Mapping[int, bytes], primary_id: int) -> None:
        if not keys:
            raise ValueError("keyring needs at least one key")
        checked: dict[int, bytes] = {}
        for key_id, key in keys.items():
            _check_key_id(key_id)
            if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
                size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
                raise ValueError(f"key {key_id} must be {KEY_SIZE} bytes, got {size}")
            checked[key_id] = bytes(key)
        _check_key_id(primary_id)
        if primary_id not in checked:
            raise ValueError(f"primary key {primary_id} is not in the keyring (ids: {sorted(checked)})")
        self._keys: Mapping[int, bytes] = MappingProxyType(checked)
        self._aeads: Mapping[int, AESGCM] = MappingProxyType({i: AESGCM(k) for i, k in checked.items()})
        self._primary_id = primary_id

    def __repr__(self) -> str:
        return f"Keyring(ids={list(self.ids)}, primary_id={self._primary_id})"

    @property
    def primary_id(self) -> int:
        return self._primary_id

    @property
    def ids(self) -> tuple[int, ...]:
        """Key ids, ascending."""
        return tuple(sorted(self._keys))

    def seal(self, plaintext: str, ctx: SealContext) -> bytes:
        """Seal under the primary key with a fresh random nonce."""
        header = _HEADER.pack(FORMAT_VERSION, self._primary_id)
        nonce = os.urandom(NONCE_SIZE)
        body = self._aeads[self._primary_id].encrypt(nonce, plaintext.encode("utf-8"), _aad(header, ctx))
        return header + nonce + body

    def open(self, sealed: bytes, ctx: SealContext) -> str:
        """Open a value sealed for exactly this context, under any key in the ring."""
        _, key_id = _parse_header(sealed)
        aead = self._aeads.get(key_id)
        if aead is None:
            raise UnknownKey(key_id)
        header = sealed[: _HEADER.size]
        nonce = sealed[_HEADER.size : _HEADER.size + NONCE_SIZE]
        try:
            plaintext = aead.decrypt(nonce, sealed[_HEADER.size + NONCE_SIZE :], _aad(header, ctx))
            return plaintext.decode("utf-8")
        except (InvalidTag, UnicodeDecodeError):
            raise SealBroken(ctx) from None

    def key_id_of(self, sealed: bytes) -> int:
        """The key a value was sealed with; it need not be in this keyring."""
        return _parse_header(sealed)[1]

    def needs_reseal(self, sealed: bytes) -> bool:
        """True when the value is not under the primary key (rotation left it behind) or
        not in the current format (sealed before the origin was bound)."""
        return _parse_header(sealed) != (FORMAT_VERSION, self._primary_id)

    def reseal(self, sealed: bytes, ctx: SealContext) -> bytes:
        """Open and seal again under the primary key, in the current format.

        Always re-seals (fresh nonce), so it also proves the value still opens; use
        ``needs_reseal`` first to skip values already under the primary key, in this format.
        """
        return self.seal(self.open(sealed, ctx), ctx)

    def holds(self, other: Keyring) -> bool:
        """True when every key of ``other`` is here under the same id with the same bytes."""
        return all(
            i in self._keys and hmac.compare_digest(self._keys[i], key) for i, key in other._keys.items()
        )

    def derive(self, purpose: bytes, key_id: int) -> bytes:
        """A 256-bit key for one purpose (HKDF-SHA256 of master key ``key_id``), so a feature
        that signs rather than seals needs no secret of its own; the master key never leaves."""
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownKey(key_id)
        return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=purpose).derive(key)

    def only(self, key_id: int) -> Keyring:
        """A keyring of just this key, primary: to seal under one key that is not primary."""
        if key_id not in self._keys:
            raise UnknownKey(key_id)
        return Keyring({key_id: self._keys[key_id]}, key_id)


class Sealer(Protocol):
    """What a store needs of a keyring: a fixed ``Keyring``, or one that follows the key
    file while the process runs (``service.livekeys.LiveKeyring``)."""

    @property
    def primary_id(self) -> int: ...

    @property
    def ids(self) -> tuple[int, ...]: ...

    def seal(self, plaintext: str, ctx: SealContext) -> bytes: ...

    def open(self, sealed: bytes, ctx: SealContext) -> str: ...

    def key_id_of(self, sealed: bytes) -> int: ...

    def needs_reseal(self, sealed: bytes) -> bool: ...

    def reseal(self, sealed: bytes, ctx: SealContext) -> bytes: ...


def _decode_key(text: str) -> bytes:
    """Strict base64 to a 32-byte key; errors never include the text."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("key is not valid base64") from None
    if len(key) != KEY_SIZE:
        raise ValueError(f"key must be {KEY_SIZE} bytes, got {len(key)}")
    return key


def _encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def parse_keys_env(value: str) -> Keyring:
    """Parse ``"2:<base64>,1:<base64>"`` (e.g. CALLVAULT_MASTER_KEYS); the first entry is primary.

    Errors name the 1-based entry position only: an entry may be key material with a
    typo, so no part of it is echoed.
    """
    if not value.strip():
        raise ValueError("master keys are empty: expected '<id>:<base64 key>[,<id>:<base64 key>...]'")
    entries = value.split(",")
    keys: dict[int, bytes] = {}
    primary: int | None = None
    for position, entry in enumerate(entries, start=1):
        id_text, sep, key_text = entry.strip().partition(":")
        if not sep:
            raise ValueError(f"master keys entry {position}: expected '<id>:<base64 key>'")
        id_text = id_text.strip()
        if not id_text.isascii() or not id_text.isdigit():
            raise ValueError(f"master keys entry {position}: key id must be a non-negative integer")
        key_id = int(id_text)
        try:
            _check_key_id(key_id)
            key = _decode_key(key_text)
        except ValueError as exc:
            raise ValueError(f"master keys entry {position}: {exc}") from None
        if key_id in keys:
            raise ValueError(f"master keys entry {position}: key id {key_id} appears more than once")
        keys[key_id] = key
        if primary is None:
            primary = key_id
    assert primary is not None  # value is non-empty, so there is at least one entry
    return Keyring(keys, primary)


def _keyring_from_json(data: object, source: str) -> Keyring:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object with 'primary' and 'keys'")
    primary = data.get("primary")
    raw_keys = data.get("keys")
    if isinstance(primary, bool) or not isinstance(primary, int):
        raise ValueError(f"{source}: 'primary' must be an integer key id")
    if not isinstance(raw_keys, dict) or not raw_keys:
        raise ValueError(f"{source}: 'keys' must be a non-empty object of id -> base64 key")
    keys: dict[int, bytes] = {}
    for position, (id_text, key_text) in enumerate(raw_keys.items(), start=1):
        if not id_text.isascii() or not id_text.isdigit():
            raise ValueError(f"{source}: keys entry {position}: key id must be a non-negative integer")
        if not isinstance(key_text, str):
            raise ValueError(f"{source}: key {id_text}: key must be a base64 string")
        try:
            key_id = _check_key_id(int(id_text))
            key = _decode_key(key_text)
        except ValueError as exc:
            raise ValueError(f"{source}: key {id_text}: {exc}") from None
        if key_id in keys:
            raise ValueError(f"{source}: key id {key_id} appears more than once")
        keys[key_id] = key
    try:
        return Keyring(keys, primary)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def load_key_file(path: str | os.PathLike[str]) -> Keyring:
    """Read a key file: ``{"primary": 2, "keys": {"1": "<base64>", "2": "<base64>"}}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        # The decoder's message quotes the document, which holds keys.
        raise ValueError(f"key file {path} is not valid JSON") from None
    return _keyring_from_json(data, f"key file {path}")


def _key_file_bytes(keyring: Keyring) -> bytes:
    doc = {
        "primary": keyring.primary_id,
        "keys": {str(i): _encode_key(keyring._keys[i]) for i in keyring.ids},
    }
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def _write_temp(directory: Path, name: str, content: bytes) -> Path:
    """Write a 0600 temp file next to the target and fsync it; the caller moves it in place."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; best effort where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_key_file(path: str | os.PathLike[str], keyring: Keyring) -> None:
    """Replace the key file atomically (temp file, fsync, rename), mode 0600.

    A crash leaves either the old file or the new one, never a half-written keyring.
    """
    path = Path(path)
    tmp = _write_temp(path.parent, path.name, _key_file_bytes(keyring))
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def create_key_file(path: str | os.PathLike[str]) -> Keyring:
    """Create a key file holding one fresh key (id 1); refuse to overwrite an existing file.

    Uses a hard link to publish the temp file, which fails atomically if the path exists,
    so two concurrent creators cannot both win and a crash never leaves a partial file.
    """
    path = Path(path)
    keyring = Keyring({1: generate_key()}, 1)
    tmp = _write_temp(path.parent, path.name, _key_file_bytes(keyring))
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"key file {path} already exists; refusing to overwrite it") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return keyring


def add_key(keyring: Keyring) -> Keyring:
    """A new keyring with a fresh key (id = max + 1) made primary; old keys still open."""
    new_id = max(keyring.ids) + 1
    if new_id > MAX_KEY_ID:
        raise ValueError(f"no key id left after {MAX_KEY_ID}")
    return Keyring({**keyring._keys, new_id: generate_key()}, new_id)


def retire_key(keyring: Keyring, key_id: int) -> Keyring:
    """A new keyring without ``key_id``. Re-seal everything under the primary first:
    values still sealed with the retired key will raise ``UnknownKey``."""
    if key_id == keyring.primary_id:
        raise ValueError(f"key {key_id} is the primary key; add and promote a new key before retiring it")
    if key_id not in keyring.ids:
        raise ValueError(f"key {key_id} is not in the keyring (ids: {list(keyring.ids)})")
    return Keyring({i: k for i, k in keyring._keys.items() if i != key_id}, keyring.primary_id)
