"""Sealed values in format 1, written out from its definition, for compatibility tests."""

from __future__ import annotations

import os
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.sealing import SealContext


def seal_v1(key_id: int, key: bytes, plaintext: str, ctx: SealContext) -> bytes:
    """``1 | key id | nonce | ciphertext+tag``; the associated data is the header and the
    length-prefixed (purpose, business, row, field): format 1 bound no origin."""
    header = struct.pack(">BI", 1, key_id)
    parts = (ctx.purpose, ctx.business_id, ctx.row_id, ctx.field)
    aad = header + b"".join(struct.pack(">I", len(p.encode())) + p.encode() for p in parts)
    nonce = os.urandom(12)
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), aad)
