"""Log-linear buckets for latency histograms in shared memory (HdrHistogram's layout).

Both meters' objects begin alike: magic, version, sub-bucket bits and bucket count, each an
int64 (``read_meter`` checks them). Values below ``LINEAR`` (32 ns) have a bucket each; above, each octave is cut into ``HALF``
(16) buckets, so a value read back from its bucket is within 6.25% of the one recorded. Up to
2 ** (OCTAVES + SUB_BITS) ns (about ten hours); larger values land in the top bucket. Both
meters that live in shared memory use it: the hiccup meter (``hiccup.py``) and the per-stage
latency histograms (``latency.py``).
"""

from __future__ import annotations

import mmap
import os

import numpy as np
import posix_ipc
from numba import njit

from ringex.engine.kernel.jitcache import guard_module

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

# Every meter's object opens with these int64 words; a meter's own word sits at 48, its
# bucket counts from BUCKETS_OFFSET on (hiccup.py and latency.py draw the byte maps).
MAGIC_OFFSET = 0
VERSION_OFFSET = 8
SUB_BITS_OFFSET = 16
BUCKET_COUNT_OFFSET = 24
COUNT_OFFSET = 32  # values recorded
MAX_OFFSET = 40  # the largest, ns
OWNER_PID_OFFSET = 56
BUCKETS_OFFSET = 64

SUB_BITS = 5
HALF = 1 << (SUB_BITS - 1)  # buckets per octave
LINEAR = 1 << SUB_BITS  # values below this have a bucket each
OCTAVES = 40
BUCKETS = LINEAR + OCTAVES * HALF
TOP = (1 << (OCTAVES + SUB_BITS)) - 1  # the largest value with a bucket of its own


def bucket_of(value: int) -> int:
    """The bucket index of ``value`` (ns; negatives count as 0, the top clamps)."""
    if value < LINEAR:
        return value if value > 0 else 0
    if value > TOP:
        value = TOP
    shift = value.bit_length() - SUB_BITS
    return LINEAR + (shift - 1) * HALF + (value >> shift) - HALF


@njit(cache=True, inline="always")
def bucket_index(value: int) -> int:
    """``bucket_of`` for compiled code (the bit length by shifting: exact at every size)."""
    if value < LINEAR:
        return value if value > 0 else 0
    if value > TOP:
        value = TOP
    bits = 0
    x = value
    while x:
        x >>= 1
        bits += 1
    shift = bits - SUB_BITS
    return LINEAR + (shift - 1) * HALF + (value >> shift) - HALF


def bucket_low(index: int) -> int:
    """The smallest value that lands in bucket ``index``."""
    if index < LINEAR:
        return index
    shift, sub = divmod(index - LINEAR, HALF)
    return (HALF + sub) << (shift + 1)


def percentile_of(counts: tuple[int, ...] | list[int], total: int, largest: int, p: float) -> int:
    """The value (the low edge of its bucket, at most ``largest``) at percentile ``p`` of
    ``total`` values counted in ``counts``; 0 when there are none."""
    if not total:
        return 0
    rank = max(1, -(-total * p // 100))
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return min(bucket_low(i), largest) if i >= LINEAR else i
    return largest


def create_meter(name: str, length: int, magic: int, version: int) -> mmap.mmap:
    """Create (or take over, zeroed) the ``length``-byte meter ``name`` and write its header,
    the magic last: a reader trusts the rest once it is set."""
    shm = posix_ipc.SharedMemory("/" + name.lstrip("/"), posix_ipc.O_CREAT, mode=0o600, size=length)
    try:
        mm = mmap.mmap(shm.fd, length)
    finally:
        shm.close_fd()
    q = np.frombuffer(mm, dtype="<i8")
    q[:] = 0
    q[VERSION_OFFSET >> 3] = version
    q[SUB_BITS_OFFSET >> 3] = SUB_BITS
    q[BUCKET_COUNT_OFFSET >> 3] = BUCKETS
    q[OWNER_PID_OFFSET >> 3] = os.getpid()
    q[MAGIC_OFFSET >> 3] = magic
    del q
    return mm


def read_meter(name: str, length: int, magic: int, version: int, what: str, error: type[Exception]) -> np.ndarray:
    """A copy of the ``length``-byte meter ``name`` as int64 words, read-only (its owner keeps
    writing), once its first four words say it is a version-``version`` ``what`` with these
    buckets; ``error`` (with a message naming the object) when it is missing or not one."""
    path = "/" + name.lstrip("/")
    try:
        shm = posix_ipc.SharedMemory(path, flags=0, read_only=True)
    except posix_ipc.ExistentialError:
        raise error(f"no {what} {path!r}") from None
    try:
        if shm.size < length:
            raise error(f"{path!r} is {shm.size} bytes, not a {what}")
        mm = mmap.mmap(shm.fd, length, prot=mmap.PROT_READ)
    finally:
        shm.close_fd()
    try:
        q = np.frombuffer(mm, dtype="<i8").copy()
    finally:
        mm.close()
    if q[MAGIC_OFFSET >> 3] != magic or q[VERSION_OFFSET >> 3] != version:
        raise error(f"{path!r} is not a version-{version} {what}")
    if q[SUB_BITS_OFFSET >> 3] != SUB_BITS or q[BUCKET_COUNT_OFFSET >> 3] != BUCKETS:
        raise error(f"{path!r} has another bucket layout")
    return q
