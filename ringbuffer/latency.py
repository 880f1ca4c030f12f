"""Per-stage latency of the exchange itself, as histograms in shared memory.

Every order carries its own timing through the pipeline: the gateway writes its receive time
into the Stamp (``ingressNs``), the sequencer its time (``timestampNs``), and each event
keeps the Stamp of the message that caused it. Three stages are measured from it, each by
the process that sees its end, and each into a histogram of its own that ``ringex stat``
and ``ringex bench e2e`` read from outside:

==============================  ======================================  ==================
stage                           from .. to                              recorded by
==============================  ======================================  ==================
``gateway_to_sequencer``        gateway receive .. sequencer stamp      the engine agent
``sequencer_to_engine_output``  sequencer stamp .. events published     the engine agent
``engine_output_to_socket``     events published .. written to socket   each gateway
==============================  ======================================  ==================

The engine's publish time is not in the events (they are the deterministic output a replay
reproduces byte for byte); the engine agent keeps it beside its histogram instead, as
*egress marks*: before each publish, ``(end position, time)`` of the batch, in a ring of
``MARKS`` entries. A gateway looks up the publish time of each event it sends by its
output-ring position; an event older than the marks kept is not measured.

Clocks: ``time.time_ns()`` in every process (one host, one clock; the sequencer's stamp is
wall time too). Values are ns; buckets as ``log_buckets.py``.

Layout (one POSIX shared-memory object per stage and writer, every field a little-endian
int64)::

    0    magic             b"RGXLATN\\0"
    8    version
    16   sub-bucket bits
    24   bucket count
    32   values recorded
    40   largest value, ns
    48   marks written (the next mark goes to entry marks_written % MARKS)
    56   owner pid
    64   bucket counts, BUCKETS of them
    ..   marks: MARKS pairs (end position, publish time ns)
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

import numpy as np
import posix_ipc
from numba import njit

from ringex.engine.kernel.jitcache import guard_module
from ringex.ringbuffer.log_buckets import (
    BUCKETS, BUCKETS_OFFSET, COUNT_OFFSET, MAGIC_OFFSET, MAX_OFFSET, bucket_index, create_meter,
    percentile_of, read_meter,
)

guard_module(__file__)  # numba checks this file only; this checks the folder and engine/wire

__all__ = ["STAGES", "EgressMarks", "LatencyRecorder", "LatencySnapshot", "latency_name", "list_latency",
           "read_latency", "unlink_latency"]

STAGES = ("gateway_to_sequencer", "sequencer_to_engine_output", "engine_output_to_socket")
LATENCY_PREFIX = "ringex-latency-"
MAGIC = int.from_bytes(b"RGXLATN\0", "little")
VERSION = 1
MARKS = 4096

MARKS_WRITTEN_OFFSET = 48
MARKS_OFFSET = BUCKETS_OFFSET + 8 * BUCKETS
LENGTH = MARKS_OFFSET + 16 * MARKS
_W = {name: offset >> 3 for name, offset in (("count", COUNT_OFFSET), ("max", MAX_OFFSET),
                                             ("marks", MARKS_WRITTEN_OFFSET))}


def latency_name(prefix: str, stage: str, writer: str = "") -> str:
    """The shared-memory name of one stage's histogram (``writer``: a gateway's name, when
    several processes record the same stage)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}")
    return f"{LATENCY_PREFIX}{prefix}-{stage}" + (f"-{writer}" if writer else "")


def unlink_latency(name: str) -> None:
    try:
        posix_ipc.unlink_shared_memory("/" + name.lstrip("/"))
    except posix_ipc.ExistentialError:
        pass


def list_latency(prefix: str | None = None) -> list[tuple[str, str, str]]:
    """``(exchange prefix, stage, object name)`` of every histogram in /dev/shm, or of
    exchange ``prefix``'s only."""
    out = []
    try:
        names = sorted(os.listdir("/dev/shm"))
    except OSError:
        return out
    for name in names:
        if not name.startswith(LATENCY_PREFIX):
            continue
        rest = name[len(LATENCY_PREFIX):]
        for stage in STAGES:
            at = rest.find("-" + stage)
            end = at + 1 + len(stage)
            if at > 0 and (end == len(rest) or rest[end] == "-"):
                if prefix is None or rest[:at] == prefix:
                    out.append((rest[:at], stage, name))
                break
    return out


_W_COUNT, _W_MAX, _W_BUCKETS = COUNT_OFFSET >> 3, MAX_OFFSET >> 3, BUCKETS_OFFSET >> 3


@njit(cache=True, inline="always")
def _record_one(q: np.ndarray, v: int) -> None:
    q[_W_BUCKETS + bucket_index(v)] += 1
    q[_W_COUNT] += 1
    if v > q[_W_MAX]:
        q[_W_MAX] = v


@njit(cache=True, nogil=True)
def record_into(q: np.ndarray, values: np.ndarray) -> None:
    """Count ``values`` into the histogram whose words are ``q`` (a recorder's ``words``)."""
    for i in range(values.shape[0]):
        _record_one(q, values[i])


@njit(cache=True, nogil=True)
def record_stages(slots: np.ndarray, last_template: int, ts_word: int, ingress_word: int, now: int,
                  to_sequencer: np.ndarray, to_output: np.ndarray) -> None:
    """For each order-entry message (template ids 1..``last_template``) of ``slots`` (ring
    slots as int64 words): gateway receive to sequencer stamp into ``to_sequencer``, stamp
    to ``now`` into ``to_output`` (both recorders' ``words``). One pass, no allocation."""
    for i in range(slots.shape[0]):
        tid = (slots[i, 0] >> 16) & 0xFFFF  # messageHeader.templateId
        if tid < 1 or tid > last_template:
            continue
        ts = slots[i, ts_word]
        _record_one(to_sequencer, ts - slots[i, ingress_word])
        _record_one(to_output, now - ts)


_W_MARKS, _W_MARKS_AT = MARKS_WRITTEN_OFFSET >> 3, MARKS_OFFSET >> 3
#: The oldest marks a reader skips once they wrap: a writer may be overwriting them.
MARKS_SLACK = 8


@njit(cache=True, nogil=True)
def published_into(q: np.ndarray, positions: np.ndarray, out: np.ndarray) -> None:
    """``out[i]``: the publish time of the batch holding output position ``positions[i]``,
    0 where it is not known: a binary search in the marks as they lie, oldest at the write
    index once they wrap (written in increasing end position: no copy, no sort)."""
    written = q[_W_MARKS]
    first = written - MARKS + MARKS_SLACK if written > MARKS else 0
    for i in range(positions.shape[0]):
        p = positions[i]
        lo, hi = first, written  # the first mark whose batch ends after p
        while lo < hi:
            mid = (lo + hi) >> 1
            if q[_W_MARKS_AT + 2 * (mid % MARKS)] > p:
                hi = mid
            else:
                lo = mid + 1
        if lo >= written or (lo == first and first > 0):  # not published yet; or begun before the marks kept
            out[i] = 0
        else:
            out[i] = q[_W_MARKS_AT + 2 * (lo % MARKS) + 1]


def warm_up() -> None:
    """Compile (or load from numba's cache) the recorders, with the duty cycle's argument
    types: a process calls it before taking any ring role."""
    q = np.zeros(LENGTH // 8, np.int64)
    slots = np.zeros((1, 16), np.int64)
    slots.flags.writeable = False  # what a ring consumer's read gives
    record_into(q, np.zeros(1, np.int64))
    marks = q.copy()
    marks.flags.writeable = False  # EgressMarks maps the writer's object read-only
    published_into(marks, np.zeros(1, np.int64), np.zeros(1, np.int64))
    record_stages(slots, 4, 2, 3, 0, q, q.copy())


class LatencyRecorder:
    """The writing side of one stage's histogram (one writer: plain stores suffice). A new
    recorder (a restarted process) starts the histogram afresh."""

    def __init__(self, name: str) -> None:
        self.name = "/" + name.lstrip("/")
        self._mm = create_meter(self.name, LENGTH, MAGIC, VERSION)
        q = self._q = np.frombuffer(self._mm, dtype="<i8")
        self._buckets = q[BUCKETS_OFFSET >> 3: (BUCKETS_OFFSET >> 3) + BUCKETS]
        self._marks = q[MARKS_OFFSET >> 3:].reshape(MARKS, 2)

    @property
    def words(self) -> np.ndarray:
        """The whole object as int64 words, for the compiled recorders (``record_into``)."""
        return self._q

    def record(self, values_ns: np.ndarray) -> None:
        """Record every value of an int64 array (negative values count as 0): one compiled pass."""
        if len(values_ns):
            record_into(self._q, values_ns)

    def mark(self, end_position: int, time_ns: int) -> None:
        """Events up to (not including) output position ``end_position`` are published at
        ``time_ns``: written before the publish, so a reader that sees them finds it."""
        q = self._q
        n = int(q[_W["marks"]])
        self._marks[n % MARKS] = (end_position, time_ns)
        q[_W["marks"]] = n + 1

    def close(self, unlink: bool = True) -> None:
        if self._mm is None:
            return
        self._buckets = self._marks = self._q = None
        self._mm.close()
        self._mm = None
        if unlink:
            unlink_latency(self.name)


class EgressMarks:
    """The reading side of a recorder's egress marks: when was the event at a position
    published (another process's object, mapped read-only, attached lazily)."""

    def __init__(self, name: str) -> None:
        self.name = "/" + name.lstrip("/")
        self._mm: mmap.mmap | None = None
        self._q: np.ndarray | None = None

    def _attach(self) -> bool:
        try:
            shm = posix_ipc.SharedMemory(self.name, flags=0, read_only=True)
        except posix_ipc.ExistentialError:
            return False
        try:
            if shm.size < LENGTH:
                return False
            self._mm = mmap.mmap(shm.fd, LENGTH, prot=mmap.PROT_READ)
        finally:
            shm.close_fd()
        self._q = np.frombuffer(self._mm, dtype="<i8")
        return True

    def published_at(self, positions: np.ndarray) -> np.ndarray:
        """The publish time of the event at each output position; 0 where not known (the
        marks moved on, or the engine restarted and wrote its marks afresh)."""
        if self._q is None and not self._attach():
            return np.zeros(len(positions), np.int64)
        q = self._q
        out = np.zeros(len(positions), np.int64)
        if q[MAGIC_OFFSET >> 3] == MAGIC:
            published_into(q, np.ascontiguousarray(positions, np.int64), out)
        return out

    def close(self) -> None:
        self._q = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None


@dataclass(frozen=True)
class LatencySnapshot:
    """What a reader saw of one histogram."""

    count: int
    max_ns: int
    counts: tuple[int, ...]

    def since(self, earlier: "LatencySnapshot") -> "LatencySnapshot":
        """The values recorded after ``earlier`` was read (the same histogram, not restarted)."""
        counts = tuple(a - b for a, b in zip(self.counts, earlier.counts))
        if any(c < 0 for c in counts):  # the writer restarted: everything is new
            return self
        return LatencySnapshot(sum(counts), self.max_ns, counts)

    def merged(self, other: "LatencySnapshot") -> "LatencySnapshot":
        return LatencySnapshot(self.count + other.count, max(self.max_ns, other.max_ns),
                               tuple(a + b for a, b in zip(self.counts, other.counts)))

    def percentile(self, p: float) -> int:
        return percentile_of(self.counts, self.count, self.max_ns, p)

    def summary(self) -> dict[str, float]:
        """count, p50/p99/p99.9 and max in microseconds."""
        return {"count": self.count, "p50_us": self.percentile(50) / 1000, "p99_us": self.percentile(99) / 1000,
                "p999_us": self.percentile(99.9) / 1000, "max_us": self.max_ns / 1000}


EMPTY = LatencySnapshot(0, 0, (0,) * BUCKETS)


class LatencyError(RuntimeError):
    """Not a latency histogram (missing, or another layout)."""


def read_latency(name: str) -> LatencySnapshot:
    """A copy of one stage's histogram (read-only: the owner keeps writing)."""
    q = read_meter(name, LENGTH, MAGIC, VERSION, "latency histogram", LatencyError).tolist()
    counts = tuple(q[BUCKETS_OFFSET >> 3:(BUCKETS_OFFSET >> 3) + BUCKETS])
    return LatencySnapshot(sum(counts), q[MAX_OFFSET >> 3], counts)
