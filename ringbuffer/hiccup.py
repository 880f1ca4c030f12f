"""The hiccup meter: how late each duty cycle started, as a histogram in shared memory.

In the spirit of jHiccup: an agent's loop asks the idle strategy to park for some time (or
not at all) between two duty cycles; anything the gap between them lasts beyond that is
time the platform took (a descheduled process, a page fault storm, a collection, a stop of
the world) and no order could be served. The runner records that excess, in nanoseconds,
once per duty cycle, and the longest ``do_work`` call seen (a pause the agent itself
caused, such as a snapshot written on its thread). It also keeps how long each *working*
duty cycle took (a ``do_work`` call that did some work; the idle ones, a poll that found
nothing, would drown them): a message waits out the cycle in progress when it arrives, so
their tail is part of every hop's. ``ringex stat`` reads all of it from outside, read-only.

Recording must cost less than a duty cycle: a value goes into a log-linear bucket
(``log_buckets.py``: values below 32 ns exact, above them buckets 1/16 of an octave wide, so
a percentile read back is within 6.25% of the value recorded) with a few integer operations
and one store; nothing is allocated.

Layout (one POSIX shared-memory object, every field a little-endian int64)::

    0    magic             b"RGXHICC\\0"
    8    version
    16   sub-bucket bits   SUB_BITS (buckets per octave = 2 ** (SUB_BITS - 1))
    24   bucket count      BUCKETS
    32   cycles recorded
    40   largest hiccup, ns
    48   longest duty cycle (do_work call), ns
    56   owner pid
    64   bucket counts, BUCKETS of them
    64 + 8 * BUCKETS   working duty cycles recorded
    72 + 8 * BUCKETS   their durations' bucket counts, BUCKETS of them (version 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import posix_ipc

from ringex.ringbuffer.counters import COUNTERS_PREFIX
from ringex.ringbuffer.log_buckets import (  # LINEAR and BUCKETS: the layout, as its readers name it here
    BUCKETS, BUCKETS_OFFSET, COUNT_OFFSET, LINEAR, MAX_OFFSET, OWNER_PID_OFFSET, bucket_low, bucket_of, create_meter,
    percentile_of, read_meter,
)


MAGIC = int.from_bytes(b"RGXHICC\0", "little")
VERSION = 2

LONGEST_CYCLE_OFFSET = 48
WORK_COUNT_OFFSET = BUCKETS_OFFSET + 8 * BUCKETS
WORK_BUCKETS_OFFSET = WORK_COUNT_OFFSET + 8
LENGTH = WORK_BUCKETS_OFFSET + 8 * BUCKETS
_W_COUNT, _W_MAX, _W_LONGEST, _W_BUCKETS = COUNT_OFFSET >> 3, MAX_OFFSET >> 3, LONGEST_CYCLE_OFFSET >> 3, BUCKETS_OFFSET >> 3
_W_WORK_COUNT, _W_WORK_BUCKETS = WORK_COUNT_OFFSET >> 3, WORK_BUCKETS_OFFSET >> 3


HICCUP_PREFIX = "ringex-hiccup-"


def hiccup_name(counters_name: str) -> str:
    """The meter of a process lives beside its counters object, named after it (outside
    the counters' own prefix, which ``ringex stat`` lists as counters)."""
    name = counters_name.lstrip("/")
    return HICCUP_PREFIX + (name[len(COUNTERS_PREFIX):] if name.startswith(COUNTERS_PREFIX) else name)


def unlink_hiccups(name: str) -> None:
    """Remove a meter a killed process left behind (absent: nothing to do)."""
    try:
        posix_ipc.unlink_shared_memory("/" + name.lstrip("/"))
    except posix_ipc.ExistentialError:
        pass


class HiccupRecorder:
    """The writing side, owned by one agent runner (one writer: plain stores suffice)."""

    def __init__(self, name: str) -> None:
        self.name = "/" + name.lstrip("/")
        self._mm = create_meter(self.name, LENGTH, MAGIC, VERSION)
        self._q = memoryview(self._mm).cast("q")

    def record(self, hiccup_ns: int, cycle_ns: int, worked: bool = False) -> None:
        """One duty cycle: its start was ``hiccup_ns`` later than the park asked for, and
        its ``do_work`` took ``cycle_ns`` (``worked``: and did some work)."""
        q = self._q
        q[_W_BUCKETS + bucket_of(hiccup_ns)] += 1
        q[_W_COUNT] += 1
        if hiccup_ns > q[_W_MAX]:
            q[_W_MAX] = hiccup_ns
        if cycle_ns > q[_W_LONGEST]:
            q[_W_LONGEST] = cycle_ns
        if worked:
            q[_W_WORK_BUCKETS + bucket_of(cycle_ns)] += 1
            q[_W_WORK_COUNT] += 1

    def close(self, unlink: bool = True) -> None:
        if self._mm is None:
            return
        self._q.release()
        self._mm.close()
        self._mm = None
        if unlink:
            unlink_hiccups(self.name)


@dataclass(frozen=True)
class HiccupSnapshot:
    """What a reader saw: counts per bucket and the extremes."""

    cycles: int
    max_ns: int
    longest_cycle_ns: int
    owner_pid: int
    counts: tuple[int, ...]
    work_cycles: int = 0
    work_counts: tuple[int, ...] = ()

    def since(self, earlier: "HiccupSnapshot") -> "HiccupSnapshot":
        """The cycles recorded after ``earlier`` was read (same meter). The largest of them
        is exact if it set a new maximum, else the low edge of its bucket; the longest duty
        cycle is the meter's, over its whole life."""
        counts = tuple(a - b for a, b in zip(self.counts, earlier.counts))
        top = max((i for i, n in enumerate(counts) if n), default=-1)
        if top < 0:
            largest = 0
        elif self.max_ns != earlier.max_ns:
            largest = self.max_ns
        else:
            largest = bucket_low(top)
        work = tuple(a - b for a, b in zip(self.work_counts, earlier.work_counts))
        return HiccupSnapshot(cycles=sum(counts), max_ns=largest, longest_cycle_ns=self.longest_cycle_ns,
                              owner_pid=self.owner_pid, counts=counts, work_cycles=sum(work), work_counts=work)

    def percentile(self, p: float) -> int:
        """The value (ns, the low edge of its bucket, at most ``max_ns``) at percentile ``p``."""
        return percentile_of(self.counts, self.cycles, self.max_ns, p)

    def work_percentile(self, p: float) -> int:
        """How long a working duty cycle took (ns, the low edge of its bucket, at most the
        longest cycle) at percentile ``p``."""
        return percentile_of(self.work_counts, self.work_cycles, self.longest_cycle_ns, p)


class HiccupError(RuntimeError):
    """Not a hiccup meter (missing, or another layout)."""


def read_hiccups(name: str) -> HiccupSnapshot:
    """A consistent-enough copy of a meter (read-only: the owner keeps writing)."""
    q = read_meter(name, LENGTH, MAGIC, VERSION, "hiccup meter", HiccupError).tolist()
    counts = tuple(q[_W_BUCKETS:_W_BUCKETS + BUCKETS])
    work = tuple(q[_W_WORK_BUCKETS:_W_WORK_BUCKETS + BUCKETS])
    return HiccupSnapshot(cycles=sum(counts), max_ns=q[_W_MAX], longest_cycle_ns=q[_W_LONGEST],
                          owner_pid=q[OWNER_PID_OFFSET >> 3], counts=counts, work_cycles=sum(work), work_counts=work)
