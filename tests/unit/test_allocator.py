"""The malloc tuning a server applies at start: applied where glibc is, refused values
reported, and switched off by its setting."""

from __future__ import annotations

import platform
import subprocess
import sys

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


# Run in a fresh interpreter: this process's heap may hold free chunks big enough to serve
# the allocation below whatever the threshold. mallinfo2's hblkhd: bytes glibc holds in
# chunks mmapped one by one.
_PROBE = """
import ctypes, ctypes.util, sys
from service import allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(ctypes.util.find_library("c")).mallinfo2
mallinfo2.restype = MallInfo2
threshold, size = int(sys.argv[1]), 3 * 1024 * 1024
assert allocator.tune(threshold)
before = mallinfo2().hblkhd
held = bytearray(size)
print(mallinfo2().hblkhd - before >= size)
"""


def _mmapped(threshold: int) -> bool:
    """Whether a 3 MiB buffer gets its own mmap after tune(threshold), in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(threshold)], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip() == "True"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_large_buffers_come_from_the_heap_once_tuned() -> None:
    assert _mmapped(256 * 1024) is True  # a threshold below the buffer: its own mmap, faulted in anew
    assert _mmapped(allocator.DEFAULT_MMAP_THRESHOLD) is False  # the server's: from the heap, reused


def test_the_threshold_is_above_the_largest_download_message() -> None:
    from service.recordings.store import DOWNLOAD_CHUNK

    # A message's buffers must come from the heap, not an mmap each: the tuning's point.
    assert allocator.DEFAULT_MMAP_THRESHOLD > DOWNLOAD_CHUNK
