"""glibc malloc tuning for large transfers, applied once per server process at start.

glibc serves allocations of 128 KiB or more with their own mmap and returns them with
munmap when freed, so every download chunk (the read, the HttpBody, its serialised
bytes, gRPC's copy) costs fresh pages and their page faults: about 510 faults per MiB
sent, 1.36 s of CPU per GiB over gRPC where 0.45 s do once the pages are reused.
Raising the mmap threshold above the largest chunk lets those buffers come from the heap
and be reused; raising the trim threshold with it keeps the heap from handing the same
pages back to the kernel after every message. What the heap may then keep idle is
bounded by the trim threshold per malloc arena.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger("callvault.allocator")

# From glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Above the largest download message (service/recordings/store.py: 2 MiB) and its
# serialised copy.
DEFAULT_MMAP_THRESHOLD = 4 * 1024 * 1024
# The trim threshold, as a multiple of the mmap threshold. One 2 MiB message lives as
# about four buffers at once (read, HttpBody, serialised, gRPC's slice); freed together
# they pass glibc's own 2x, and the heap was trimmed, and faulted back, every message.
# Measured with 2 MiB messages: 510 page faults per MiB at 2x, 3 at 4x and above.
TRIM_FACTOR = 4


def tune(mmap_threshold: int) -> bool:
    """Set glibc's mmap threshold to `mmap_threshold` bytes and its trim threshold to
    TRIM_FACTOR times that. 0 leaves malloc as it is. False where it does not apply
    (not glibc) or glibc refused the value."""
    if mmap_threshold <= 0 or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied: bool = mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
    applied = applied and mallopt(M_TRIM_THRESHOLD, TRIM_FACTOR * mmap_threshold) == 1
    if not applied:
        log.warning("glibc refused malloc tuning", extra={"mmap_threshold": mmap_threshold})
    return applied
