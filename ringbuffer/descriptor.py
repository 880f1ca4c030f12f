"""Layout of a ringex ring in shared memory: every offset has a name here.

Modelled on Agrona's ``RingBufferDescriptor``.  A ring is one POSIX shared-memory object::

    0                      header (128 bytes): magic, version, slot size, capacity,
                           number of consumers, creator pid, creation time, data offset,
                           total length
    128                    producer cache-line pair (128 bytes):
                             +0   producer cursor (int64)
                             +64  producer pid
                             +72  provenance: the cursor the noted publish sets (-1: none)
                             +80  provenance: source (e.g. which inbound ring)
                             +88  provenance: source position after the publish
    256 + 8*i              waiting words (512 bytes, one per possible consumer, i < 64):
                           consumer i's is 1 while it parks on its doorbell (doorbell.py)
    768 + 128*i            consumer i cache-line pair (128 bytes), i = 0..consumers-1:
                             +0   consumer cursor (int64; UNTETHERED: gates nothing)
                             +64  heartbeat, time.monotonic_ns() of its last poll
                             +72  pid of the process that owns the index (0 = none)
    768 + 128*consumers    data: capacity slots of slot_size bytes each

All fields are little-endian int64 at 8-byte-aligned offsets, so every field is read and
written with one aligned 8-byte load or store through ``memoryview.cast('q')``: the word
index of a field is ``offset >> 3`` (see :func:`word`).  Each cursor has a cache-line pair of
its own (128 bytes: the adjacent-line prefetcher pulls lines in pairs), so the producer's
stores never invalidate the line a consumer's cursor lives in and vice versa.  A consumer's
heartbeat and pid sit in the second line of its own pair: only that consumer writes them.
The waiting words have lines of their own, apart from every cursor and heartbeat: the producer
loads them after every publish, and a consumer writes its word only when it parks and wakes,
so under load those lines stay in every core's cache unmodified (in the heartbeat's line the
load cost the single-message publish a third of its rate).

Provenance is how a forwarding producer (the sequencer) survives its own crash: before each
publish it notes where the batch came from (source, and that source's read position once
the batch is consumed) with the cursor value the publish will store. A restarted forwarder
reads the note: if the ring's cursor has reached the noted value the batch was published, so
its source must be committed up to the noted position, whether or not the dead process got
that far. The cursor word is written -1 first and last with the real value, so a note torn
by a crash reads as no note (and a torn note is never followed by its publish).

A dead subscriber must not hold the producer back forever (Aeron's untethered subscriptions
are the model): the supervisor may write ``UNTETHERED`` over its cursor (``Ring.untether``).
No consumer is ever ahead of the producer, so the producer reads that value as its own
position and the minimum passes over it; the consumer that attaches the index next rejoins
at the producer's position (the rejoin stores a cursor before reading the position it joins
at, so no slot it will read can have been claimed under a gate that left it out), and the
consumer itself, if it was only stopped, is refused its next read or commit
(``UntetheredError``).

Sequences are int64 that only grow.  The producer cursor holds the sequence of the next slot
to be published (= the number of messages ever published); consumer ``i``'s cursor holds the
sequence of the next slot it will read (= the number it has consumed).  The slot of sequence
``s`` is ``s & (capacity - 1)``.  The producer may publish sequence ``s`` only when
``s - min(consumer cursors) < capacity``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

#: ``b"RINGEX\\x00R"`` read as a little-endian int64; identifies a ringex ring.
MAGIC = int.from_bytes(b"RINGEX\x00R", "little")
#: Bump whenever anything in this file changes meaning.
VERSION = 4

WORD_SIZE = 8
CACHE_LINE_SIZE = 64
CACHE_LINE_PAIR_SIZE = 2 * CACHE_LINE_SIZE

# --- header -------------------------------------------------------------------------------
HEADER_OFFSET = 0
MAGIC_OFFSET = HEADER_OFFSET + 0
VERSION_OFFSET = HEADER_OFFSET + 8
SLOT_SIZE_OFFSET = HEADER_OFFSET + 16
CAPACITY_OFFSET = HEADER_OFFSET + 24
CONSUMER_COUNT_OFFSET = HEADER_OFFSET + 32
CREATOR_PID_OFFSET = HEADER_OFFSET + 40
#: ``time.time_ns()`` at creation: guards the creator-pid check against pid reuse.
CREATED_TIME_NS_OFFSET = HEADER_OFFSET + 48
DATA_OFFSET_OFFSET = HEADER_OFFSET + 56
TOTAL_LENGTH_OFFSET = HEADER_OFFSET + 64
HEADER_LENGTH = CACHE_LINE_PAIR_SIZE

# --- producer cache-line pair ---------------------------------------------------------------
PRODUCER_PAIR_OFFSET = HEADER_OFFSET + HEADER_LENGTH
PRODUCER_CURSOR_OFFSET = PRODUCER_PAIR_OFFSET + 0
PRODUCER_PID_OFFSET = PRODUCER_PAIR_OFFSET + CACHE_LINE_SIZE
PROVENANCE_UPTO_OFFSET = PRODUCER_PID_OFFSET + WORD_SIZE
PROVENANCE_SOURCE_OFFSET = PROVENANCE_UPTO_OFFSET + WORD_SIZE
PROVENANCE_POSITION_OFFSET = PROVENANCE_SOURCE_OFFSET + WORD_SIZE
NO_PROVENANCE = -1

# --- waiting words (one per possible consumer) ---------------------------------------------
WAITING_WORDS_OFFSET = PRODUCER_PAIR_OFFSET + CACHE_LINE_PAIR_SIZE
WAITING_WORDS_LENGTH = 512  # MAX_CONSUMERS words: a whole number of cache-line pairs

# --- consumer cache-line pairs (relative to the start of consumer i's pair) -----------------
CONSUMER_PAIRS_OFFSET = WAITING_WORDS_OFFSET + WAITING_WORDS_LENGTH
CONSUMER_CURSOR_FIELD = 0
CONSUMER_HEARTBEAT_FIELD = CACHE_LINE_SIZE
CONSUMER_PID_FIELD = CACHE_LINE_SIZE + WORD_SIZE
#: A consumer cursor that gates nothing (see the module notes).
UNTETHERED = (1 << 63) - 1

# --- limits ---------------------------------------------------------------------------------
MIN_SLOT_SIZE = WORD_SIZE
MAX_SLOT_SIZE = 1 << 20
MIN_CAPACITY = 2
MAX_CAPACITY = 1 << 30
MAX_CONSUMERS = 64
#: The whole object must stay under this (a sanity bound, not a kernel limit).
MAX_TOTAL_LENGTH = 1 << 40

if sys.byteorder != "little":  # pragma: no cover - x86-64 only, see platform.py
    raise ImportError("ringex rings are little-endian; this interpreter is big-endian")


def word(offset: int) -> int:
    """Index of the int64 at byte ``offset`` in a ``memoryview.cast('q')`` of the ring."""
    if offset % WORD_SIZE:
        raise ValueError(f"offset {offset} is not 8-byte aligned")
    return offset >> 3


def consumer_pair_offset(index: int) -> int:
    return CONSUMER_PAIRS_OFFSET + index * CACHE_LINE_PAIR_SIZE


def consumer_cursor_offset(index: int) -> int:
    return consumer_pair_offset(index) + CONSUMER_CURSOR_FIELD


def consumer_heartbeat_offset(index: int) -> int:
    return consumer_pair_offset(index) + CONSUMER_HEARTBEAT_FIELD


def consumer_pid_offset(index: int) -> int:
    return consumer_pair_offset(index) + CONSUMER_PID_FIELD


def consumer_waiting_offset(index: int) -> int:
    return WAITING_WORDS_OFFSET + index * WORD_SIZE


def data_offset(consumers: int) -> int:
    return consumer_pair_offset(consumers)


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass(frozen=True)
class RingLayout:
    """The three numbers that fix a ring's layout, and everything derived from them."""

    slot_size: int
    capacity: int
    consumers: int = 1

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """Why these numbers do not make a valid layout, or ``None``."""
        s, c, n = self.slot_size, self.capacity, self.consumers
        if not isinstance(s, int) or not MIN_SLOT_SIZE <= s <= MAX_SLOT_SIZE or s % WORD_SIZE:
            return (
                f"slot size must be a multiple of {WORD_SIZE} between {MIN_SLOT_SIZE} and "
                f"{MAX_SLOT_SIZE} bytes, got {s!r}"
            )
        if not isinstance(c, int) or not is_power_of_two(c) or not MIN_CAPACITY <= c <= MAX_CAPACITY:
            return (
                f"capacity must be a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}, "
                f"got {c!r}"
            )
        if not isinstance(n, int) or not 1 <= n <= MAX_CONSUMERS:
            return f"number of consumers must be between 1 and {MAX_CONSUMERS}, got {n!r}"
        if self.total_length > MAX_TOTAL_LENGTH:
            return f"ring of {self.total_length} bytes is too large"
        return None

    @property
    def mask(self) -> int:
        return self.capacity - 1

    @property
    def data_offset(self) -> int:
        return data_offset(self.consumers)

    @property
    def data_length(self) -> int:
        return self.slot_size * self.capacity

    @property
    def total_length(self) -> int:
        return self.data_offset + self.data_length

    def slot_offset(self, sequence: int) -> int:
        """Byte offset of the slot that holds ``sequence``."""
        return self.data_offset + (sequence & self.mask) * self.slot_size
assert WAITING_WORDS_LENGTH == MAX_CONSUMERS * WORD_SIZE and WAITING_WORDS_LENGTH % CACHE_LINE_PAIR_SIZE == 0
