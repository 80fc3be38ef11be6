"""The sealed-audio format: round trips, ranges at segment boundaries, and every way a
segment can be moved, cut, dropped or swapped failing with a clear error."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from service.audiocrypt.stream import (
    HEADER_SIZE,
    TAG_SIZE,
    Layout,
    SealedAudioError,
    SegmentOpener,
    associated_data,
    decrypt_segments,
    encrypt_stream,
    new_data_key,
)

SEG = 1024  # small segments, so boundaries are cheap to hit
AAD = associated_data("biz", "rec-1")


def audio(size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def seal(key: bytes, data: bytes, *, aad: bytes = AAD, piece: int = 777) -> bytes:
    return b"".join([c async for c in encrypt_stream(key, aad, chunks(data, piece), segment_size=SEG)])


async def read(
    key: bytes, sealed: bytes, size: int, start: int, end: int, *, aad: bytes = AAD, piece: int = 500
) -> tuple[bytes, SegmentOpener]:
    opener = SegmentOpener(key, aad, sealed[:HEADER_SIZE], size)
    _, _, lo, hi = opener.layout.span(start, end)
    out = b"".join([c async for c in decrypt_segments(opener, chunks(sealed[lo:hi], piece), start, end)])
    return out, opener


@pytest.mark.parametrize("size", [1, SEG - 1, SEG, SEG + 1, 3 * SEG, 5 * SEG + 17])
async def test_round_trip_and_size(size: int) -> None:
    key, data = new_data_key(), audio(size)
    sealed = await seal(key, data)
    assert len(sealed) == Layout(size, SEG).sealed_size
    assert size < 32 or data[:32] not in sealed  # shorter runs may occur by chance
    out, opener = await read(key, sealed, size, 0, size)
    assert out == data
    assert opener.decrypted == Layout(size, SEG).segments


async def test_same_audio_seals_differently() -> None:
    key, data = new_data_key(), audio(3 * SEG)
    assert await seal(key, data) != await seal(key, data)  # fresh salt and nonce prefix


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, 1),
        (SEG - 1, SEG),
        (SEG - 1, SEG + 1),
        (SEG, SEG + 1),
        (2 * SEG, 3 * SEG),
        (3 * SEG - 5, 4 * SEG + 9),
    ],
)
async def test_ranges_at_segment_boundaries(start: int, end: int) -> None:
    size = 4 * SEG + 9
    key, data = new_data_key(), audio(size)
    sealed = await seal(key, data)
    out, opener = await read(key, sealed, size, start, end, piece=SEG + TAG_SIZE)
    assert out == data[start:end]
    assert opener.decrypted == (end - 1) // SEG - start // SEG + 1


async def test_range_at_the_end_of_a_large_recording_decrypts_at_most_two_segments() -> None:
    """64 KiB at the end of a 64 MiB recording, in the real segment size."""
    size = 64 * 1024 * 1024 + 12345
    key = new_data_key()
    block = audio(1 << 20)

    async def big() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield block
        yield block[:12345]

    sealed = b"".join([c async for c in encrypt_stream(key, AAD, big())])
    opener = SegmentOpener(key, AAD, sealed[:HEADER_SIZE], size)
    start = size - 64 * 1024
    _, _, lo, hi = opener.layout.span(start, size)
    assert hi - lo <= 2 * (opener.layout.segment_size + TAG_SIZE)  # only those bytes are fetched

    async def ranged() -> AsyncIterator[bytes]:
        yield sealed[lo:hi]

    out = b"".join([c async for c in decrypt_segments(opener, ranged(), start, size)])
    assert out == (block * 64 + block[:12345])[start:]
    assert 1 <= opener.decrypted <= 2


async def expect_broken(key: bytes, sealed: bytes, size: int, match: str, *, aad: bytes = AAD) -> None:
    with pytest.raises(SealedAudioError, match=match):
        await read(key, sealed, size, 0, size, aad=aad)


async def test_tampered_byte_fails() -> None:
    key, data = new_data_key(), audio(3 * SEG)
    sealed = bytearray(await seal(key, data))
    sealed[HEADER_SIZE + SEG + TAG_SIZE + 5] ^= 1
    await expect_broken(key, bytes(sealed), len(data), "segment 1 .* does not authenticate")


async def test_moved_segments_fail() -> None:
    key, data = new_data_key(), audio(3 * SEG)
    sealed = await seal(key, data)
    seg = SEG + TAG_SIZE
    body = sealed[HEADER_SIZE:]
    swapped = sealed[:HEADER_SIZE] + body[seg : 2 * seg] + body[:seg] + body[2 * seg :]
    await expect_broken(key, swapped, len(data), "segment 0 .* does not authenticate")


async def test_truncated_and_dropped_last_segment_fail() -> None:
    key, data = new_data_key(), audio(3 * SEG)
    sealed = await seal(key, data)
    await expect_broken(key, sealed[:-1], len(data), "truncated")
    # Dropping the last segment and claiming the shorter size: the new last was not flagged last.
    dropped = sealed[: HEADER_SIZE + 2 * (SEG + TAG_SIZE)]
    await expect_broken(key, dropped, 2 * SEG, "segment 1 .* does not authenticate")


async def test_swapped_between_recordings_fails() -> None:
    key_a, key_b, data = new_data_key(), new_data_key(), audio(2 * SEG)
    other = await seal(key_b, data, aad=associated_data("biz", "rec-2"))
    await expect_broken(key_a, other, len(data), "does not authenticate")
    # Even under the same data key, another recording's associated data does not open it.
    same_key = await seal(key_a, data, aad=associated_data("biz", "rec-2"))
    await expect_broken(key_a, same_key, len(data), "does not authenticate")


async def test_header_edits_fail() -> None:
    key, data = new_data_key(), audio(2 * SEG)
    sealed = bytearray(await seal(key, data))
    salt_edit = bytearray(sealed)
    salt_edit[10] ^= 1
    await expect_broken(key, bytes(salt_edit), len(data), "does not authenticate")
    version_edit = bytearray(sealed)
    version_edit[0] = 9
    await expect_broken(key, bytes(version_edit), len(data), "unsupported format version 9")


def test_associated_data_keeps_parts_apart() -> None:
    assert associated_data("ab", "c") != associated_data("a", "bc")
    with pytest.raises(ValueError):
        associated_data("", "x")
