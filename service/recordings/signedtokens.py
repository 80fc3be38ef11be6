"""Signed tokens: the one format of callvault's capability URLs (presigned uploads, listen
links), so each link kind states only its own fields and checks.

A token is ``base64url(payload) "." base64url(HMAC-SHA256(key, payload))`` where the payload
is ``v1.<master key id>.<expires (unix s)>.<field>...``. The key is derived (HKDF) from master
key ``<key id>`` for one purpose (``Keyring.derive``), so there is no new secret to keep, every
process and replica with the keyring verifies what another minted, a link minted just before
a rotation verifies while its key is in the ring, and one under a retired key does not.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Protocol

from service.sealing import UnknownKey

VERSION = "v1"
MAX_TOKEN = 400


class SigningKeys(Protocol):
    """What signing needs of a keyring (``Keyring`` or ``LiveKeyring``)."""

    @property
    def primary_id(self) -> int: ...

    def derive(self, purpose: bytes, key_id: int) -> bytes: ...


class BadToken(Exception):
    """Not a token signed for this purpose by a key in the ring: malformed, truncated,
    altered, of another kind, or under a retired key. Callers raise their own domain error."""


@dataclass(frozen=True, slots=True)
class Signed:
    """An authentic token's contents; its expiry is the caller's to check (after its own
    checks, so only an authentic token for the right object is ever called expired)."""

    key_id: int
    expires: int
    fields: tuple[str, ...]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def random_text(data: bytes) -> str:
    """Bytes as token text (a nonce)."""
    return _b64(data)


class TokenSigner:
    def __init__(self, keys: SigningKeys, purpose: bytes) -> None:
        self._keys = keys
        self._purpose = purpose

    def __repr__(self) -> str:
        return f"TokenSigner(purpose={self._purpose!r})"

    def _mac(self, key_id: int, payload: bytes) -> bytes:
        return hmac.new(self._keys.derive(self._purpose, key_id), payload, sha256).digest()

    def sign(self, expires: int, fields: Sequence[str]) -> str:
        """A token under the primary key; fields must not contain "." (ids, base64url)."""
        assert all("." not in f for f in fields), "token fields are dot-separated"
        key_id = self._keys.primary_id
        payload = ".".join([VERSION, str(key_id), str(expires), *fields]).encode()
        return f"{_b64(payload)}.{_b64(self._mac(key_id, payload))}"

    def open(self, token: str, count: int) -> Signed:
        """The ``count`` fields of an authentic token, or ``BadToken``."""
        if len(token) > MAX_TOKEN or token.count(".") != 1:
            raise BadToken()
        encoded, _, mac_text = token.partition(".")
        try:
            payload, mac = _unb64(encoded), _unb64(mac_text)
            parts = payload.decode("ascii").split(".")
        except (binascii.Error, ValueError):
            raise BadToken() from None
        if len(parts) != count + 3 or parts[0] != VERSION or not parts[1].isdigit() or not parts[2].isdigit():
            raise BadToken()
        try:
            expected = self._mac(int(parts[1]), payload)
        except UnknownKey:  # retired, or never ours
            raise BadToken() from None
        if not hmac.compare_digest(expected, mac):
            raise BadToken()
        return Signed(int(parts[1]), int(parts[2]), tuple(parts[3:]))
