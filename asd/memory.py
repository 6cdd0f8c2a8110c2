"""Hand memory that arrays have freed back to the operating system.

glibc's malloc keeps freed blocks for reuse, and arrays of a few tens of MB (one (N, L) float64
grid at 10^6 requests × 4 tiers is 32 MB, under glibc's adaptive mmap threshold) are carved out
of its heap: once such a temporary is freed between arrays still alive, its pages stay resident.
After a phase that built and dropped large temporaries (reading a bundle, a cost grid), asd asks
glibc (`malloc_trim`) and Arrow's allocator to return what is free — the practice Dask's workers
follow for the same fragmentation. Elsewhere (no glibc) only Arrow's pool is released.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pyarrow as pa


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Return freed heap pages (glibc) and Arrow's unused buffers to the operating system."""
    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
