"""Memory for the engine's arena: zeroed, cache-line aligned, on huge pages, faulted in.

The arena is read at random (orders, accounts, positions, heaps spread over ~100 MB at the
defaults): with 4 KiB pages nearly every first touch of a row also misses the TLB, and a
prefetch has to walk the page tables before it can fetch anything. On 2 MiB pages the whole
arena needs a few dozen TLB entries. Every page is faulted in here, at start-up, so the hot
path never takes a page fault (and never zeroes a page). The huge pages are asked for with
``madvise`` (transparent huge pages in ``madvise`` or ``always`` mode); where the kernel
has none to give, the arena is the same memory on small pages, still faulted in.
"""

from __future__ import annotations

import mmap

import numpy as np

HUGE_PAGE = 2 << 20
PAGE_WORDS = 4096 // 8
# below this an arena is a small test engine: plain numpy memory, no mapping of its own
MAPPED_FROM_BYTES = 4 << 20
LINE_BYTES = 64


def zeroed_words(n: int) -> np.ndarray:
    """``n`` zeroed int64 words whose first starts a cache line (a huge page if mapped)."""
    nbytes = n * 8
    if nbytes < MAPPED_FROM_BYTES:
        raw = np.zeros(n + LINE_BYTES // 8, dtype=np.int64)
        skip = (-raw.ctypes.data % LINE_BYTES) // 8
        return raw[skip: skip + n]
    size = -(-nbytes // HUGE_PAGE) * HUGE_PAGE + HUGE_PAGE  # room to align the start
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    advise = getattr(m, "madvise", None)
    huge = getattr(mmap, "MADV_HUGEPAGE", None)
    if advise is not None and huge is not None:
        try:
            advise(huge)
        except OSError:
            pass  # a kernel without THP: small pages
    raw = np.frombuffer(m, dtype=np.int64)
    skip = (-raw.ctypes.data % HUGE_PAGE) // 8
    words = raw[skip: skip + n]
    words[::PAGE_WORDS] = 0  # fault every page in now (the mapping is zero-filled)
    return words
