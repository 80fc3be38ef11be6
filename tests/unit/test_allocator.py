"""The malloc tuning a server applies at start: applied where glibc is, refused values
reported, and switched off by its setting."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import pytest

from service import allocator
from service.config import Settings

GLIBC = platform.libc_ver()[0] == "glibc"


def test_the_setting_defaults_to_the_tuned_threshold_and_zero_turns_it_off() -> None:
    assert Settings.from_env({}).malloc_mmap_threshold == allocator.DEFAULT_MMAP_THRESHOLD
    off = Settings.from_env({"CALLVAULT_MALLOC_MMAP_THRESHOLD": "0"})
    assert off.malloc_mmap_threshold == 0
    assert allocator.tune(off.malloc_mmap_threshold) is False
    with pytest.raises(ValueError, match="CALLVAULT_MALLOC_MMAP_THRESHOLD"):
        Settings.from_env({"CALLVAULT_MALLOC_MMAP_THRESHOLD": "4MiB"})


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            *("arena", "ordblks", "smblks", "hblks", "hblkhd"),
            *("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"),
        )
    ]


def _mmapped_bytes() -> int:
    """Bytes glibc holds in chunks mmapped one by one (mallinfo2's hblkhd)."""
    mallinfo2 = ctypes.CDLL(ctypes.util.find_library("c")).mallinfo2
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().hblkhd)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_large_buffers_come_from_the_heap_once_tuned() -> None:
    size = 3 * 1024 * 1024
    try:
        assert allocator.tune(256 * 1024) is True
        before = _mmapped_bytes()
        held = bytearray(size)
        assert _mmapped_bytes() - before >= size  # below the threshold's reach: its own mmap
        del held
        assert allocator.tune(allocator.DEFAULT_MMAP_THRESHOLD) is True
        before = _mmapped_bytes()
        held = bytearray(size)
        assert _mmapped_bytes() - before < size  # from the heap, reused message after message
        del held
    finally:
        allocator.tune(allocator.DEFAULT_MMAP_THRESHOLD)


def test_the_threshold_is_above_the_largest_download_message() -> None:
    from service.recordings.store import DOWNLOAD_CHUNK

    # A message's buffers must come from the heap, not an mmap each: the tuning's point.
    assert allocator.DEFAULT_MMAP_THRESHOLD > DOWNLOAD_CHUNK
