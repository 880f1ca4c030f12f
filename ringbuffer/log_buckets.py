"""Log-linear buckets for latency histograms in shared memory (HdrHistogram's layout).

Values below ``LINEAR`` (32 ns) have a bucket each; above, each octave is cut into ``HALF``
(16) buckets, so a value read back from its bucket is within 6.25% of the one recorded. Up to
2 ** (OCTAVES + SUB_BITS) ns (about ten hours); larger values land in the top bucket. Both
meters that live in shared memory use it: the hiccup meter (``hiccup.py``) and the per-stage
latency histograms (``latency.py``).
"""

from __future__ import annotations

import numpy as np

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


def buckets_of(values: np.ndarray) -> np.ndarray:
    """``bucket_of`` of every value of an int64 array, at once."""
    v = np.clip(values.astype(np.int64), 0, TOP)
    # frexp's exponent is the bit length: exact, as every value here is below 2 ** 53
    bits = np.frexp(v.astype(np.float64))[1].astype(np.int64)
    shift = np.maximum(bits - SUB_BITS, 1)
    big = LINEAR + (shift - 1) * HALF + (v >> shift) - HALF
    return np.where(v < LINEAR, v, big)


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
