"""How the processes that hold data allocate: freed buffers go back to the operating system.

Applied once per process on import (tasks/core/storage.py imports it: every process that reads or writes data).
"""

from __future__ import annotations

import contextlib
import ctypes

import pyarrow as pa

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
# Allocations from this size on get pages of their own, handed back when freed. Decode buffers of
# ordinary photographs (a 1 MP RGB image is 3 MB) stay below it and are reused from the heap.
BIG_BUFFER_BYTES = 4 * 2**20


def return_freed_buffers() -> None:
    # The driver holds every item's columns (10M items: GBs of Arrow buffers, allocated and freed by
    # step): glibc's allocator hands freed buffers back at once, where Arrow's default jemalloc kept them,
    # and the split decision peaked 40% higher at 2M items (bench/driver.py).
    pa.set_memory_pool(pa.system_memory_pool())
    # glibc raises its mmap threshold each time a big buffer is freed (up to 32 MB), after which media
    # of that size comes from the heap and stays there: a worker streaming 16 MB recordings kept ~150 MB
    # more after each shard. A fixed threshold keeps the worker's memory flat (tests/test_engine.py).
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, macOS): their own policies
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, BIG_BUFFER_BYTES)


return_freed_buffers()
