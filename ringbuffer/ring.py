"""Lock-free single-producer rings over named POSIX shared memory.

One layout (see :mod:`ringex.ringbuffer.descriptor`) serves both shapes:

* ``consumers=1``: the SPSC ring;
* ``consumers=N``: one-to-many: every consumer sees every message, the producer gates on the
  slowest consumer's cursor (the Disruptor's gating sequences).

Many-to-one is N single-producer rings polled by one consumer (:mod:`.merge`).

Roles::

    with Ring.create("/orders", slot_size=64, capacity=1024, consumers=1) as ring:
        producer = ring.producer()
        producer.offer(payload)                   # Offer.OK or Offer.BACK_PRESSURED
        head, tail = producer.claim(64)           # zero-copy (k, slot_size) uint8 views
        ...fill head and tail...
        producer.publish(len(head) + len(tail))   # one cursor store for the batch

    with Ring.attach("/orders", slot_size=64) as ring:
        consumer = ring.consumer(0)
        head, tail = consumer.read(limit=256)     # zero-copy read-only views up to the cursor
        ...process head then tail...
        consumer.commit(len(head) + len(tail))    # one cursor store for the batch

    with Ring.observe("/orders") as ring:         # read-only: supervisors, ``ringex stat``
        ring.consumer_state(0, stale_after_ns=1_000_000_000)

Memory ordering: slots are written with plain copies, then the cursor is published with ONE
aligned 8-byte store through ``memoryview.cast('q')``; readers load the cursor, then the
slots.  That is sufficient under x86-64 TSO only, which :mod:`.platform` enforces.

A consumer must be finished with the views of a batch before it commits it: once committed,
the producer may overwrite those slots.

The Ring is a ring's lifecycle (create, attach, observe, close, unlink) and the place its
roles are handed out; each concept around it has its own module: :mod:`.producer` and
:mod:`.consumer` (the per-message paths), :mod:`.roles` (who holds a role, takeover),
:mod:`.liveness` (is a pid alive; is a consumer alive, slow, dead or absent),
:mod:`.reclaim` (a stale ring's name), :mod:`.header` (writing and checking the header) and
:mod:`.mapping` (the shared-memory object: names, ``ring_exists``, ``unlink_ring``).
"""

from __future__ import annotations

import time

import numpy as np

from . import descriptor as d
from .consumer import Consumer
from .errors import (
    RingClosedError,
    RingFormatError,
    RingLayoutError,
    RingNotFoundError,
    RingReadOnlyError,
)
from .header import Uninitialised, checked_layout, read_header, write_header
from .idle import BackoffIdleStrategy
from .liveness import ConsumerInfo, ConsumerState, consumer_state, read_consumer_info
from .mapping import SharedMapping, canonical_name, unlink_ring
from .platform import check_lock_free
from .producer import Producer
from .reclaim import make_way
from .roles import claim_role

__all__ = ["Ring"]


class Ring:
    """A mapped ring.  Build one with :meth:`create`, :meth:`attach` or :meth:`observe`."""

    def __init__(self, name: str, mapping: SharedMapping, layout: d.RingLayout, header: dict,
                 *, read_only: bool, owner: bool) -> None:
        self._name = name
        self._map = mapping
        self._q = mapping.q
        self._layout = layout
        self._header = header
        self._read_only = read_only
        self._owner = owner
        self._closed = False
        self._handles: list[Producer | Consumer] = []
        self._observed: dict[int, int] = {}
        slots = np.frombuffer(
            mapping.mm, dtype=np.uint8, count=layout.data_length, offset=layout.data_offset
        ).reshape(layout.capacity, layout.slot_size)
        self._slots = slots
        ro = slots.view()
        ro.flags.writeable = False
        self._slots_ro = ro

    # --- construction ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        *,
        slot_size: int = 64,
        capacity: int = 1024,
        consumers: int = 1,
        reclaim: bool = False,
        unlink_on_close: bool = True,
        mode: int = 0o600,
    ) -> "Ring":
        """Create and initialise a new ring; the caller owns it (unlinked on close).

        If the name is taken by a ring whose creator process is dead, raises
        :class:`StaleRingError` unless ``reclaim=True``, which unlinks it and starts afresh.
        A name held by a live ring, or by an object that is not a ring, raises
        :class:`RingExistsError`.
        """
        name = canonical_name(name)
        check_lock_free(name)
        try:
            layout = d.RingLayout(slot_size, capacity, consumers)
        except ValueError as exc:
            raise RingLayoutError(f"ring {name!r}: {exc}", name) from None
        mapping = None
        for attempt in range(2):
            mapping = SharedMapping.create(name, layout.total_length, mode)
            if mapping is not None:
                break
            make_way(name, reclaim=reclaim and attempt == 0)
        assert mapping is not None  # make_way raises unless it reclaimed the name
        write_header(mapping.q, layout)
        return cls(name, mapping, layout, read_header(mapping.q), read_only=False,
                   owner=unlink_on_close)

    @classmethod
    def attach(
        cls,
        name: str,
        *,
        slot_size: int | None = None,
        capacity: int | None = None,
        consumers: int | None = None,
        wait_s: float = 0.0,
    ) -> "Ring":
        """Map an existing ring read-write (for a producer or consumer role).

        Stated expectations (slot size, capacity, consumers) are checked against the header
        and a mismatch raises :class:`RingLayoutError`.  ``wait_s`` waits (with backoff) for
        a ring that does not exist yet or is still being initialised.
        """
        return cls._open(name, read_only=False, expect=(slot_size, capacity, consumers),
                         wait_s=wait_s)

    @classmethod
    def observe(cls, name: str, *, wait_s: float = 0.0, **expect: int | None) -> "Ring":
        """Map an existing ring read-only (supervisors, stat tools)."""
        return cls._open(name, read_only=True,
                         expect=(expect.get("slot_size"), expect.get("capacity"),
                                 expect.get("consumers")),
                         wait_s=wait_s)

    @classmethod
    def _open(cls, name: str, *, read_only: bool, expect: tuple, wait_s: float) -> "Ring":
        name = canonical_name(name)
        check_lock_free(name)
        deadline = time.monotonic() + wait_s
        idle = BackoffIdleStrategy(max_spins=0, max_yields=10, max_park_ns=10_000_000)
        while True:
            try:
                return cls._open_once(name, read_only=read_only, expect=expect)
            except (RingNotFoundError, Uninitialised) as exc:
                if time.monotonic() >= deadline:
                    if isinstance(exc, Uninitialised):
                        raise RingFormatError(str(exc), name) from None
                    raise
                idle.idle(0)

    @classmethod
    def _open_once(cls, name: str, *, read_only: bool, expect: tuple) -> "Ring":
        mapping = SharedMapping.open(name, read_only=read_only)
        try:
            h = read_header(mapping.q)
            layout = checked_layout(name, h, mapping.size, expect)
        except BaseException:
            mapping.close()
            raise
        return cls(name, mapping, layout, h, read_only=read_only, owner=False)

    # --- properties ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def layout(self) -> d.RingLayout:
        return self._layout

    @property
    def slot_size(self) -> int:
        return self._layout.slot_size

    @property
    def capacity(self) -> int:
        return self._layout.capacity

    @property
    def consumers(self) -> int:
        return self._layout.consumers

    @property
    def creator_pid(self) -> int:
        return self._header["creator_pid"]

    @property
    def created_time_ns(self) -> int:
        """``time.time_ns()`` when the ring was created: tells one incarnation of a name
        from the next (the engine keys its output bookkeeping on it)."""
        return self._header["created_time_ns"]

    @property
    def producer_pid(self) -> int:
        """Pid of the process holding the producer role (0 when none)."""
        self._check_open()
        return self._q[d.word(d.PRODUCER_PID_OFFSET)]

    def provenance(self) -> tuple[int, int] | None:
        """``(source, source_position)`` noted by the producer for its last publish that
        happened (:meth:`Producer.note_provenance`), or ``None`` when there is none."""
        self._check_open()
        q = self._q
        upto = q[d.word(d.PROVENANCE_UPTO_OFFSET)]
        source = q[d.word(d.PROVENANCE_SOURCE_OFFSET)]
        position = q[d.word(d.PROVENANCE_POSITION_OFFSET)]
        # Re-read the guard: a note rewritten meanwhile (a live producer) is not trusted.
        if upto < 0 or q[d.word(d.PROVENANCE_UPTO_OFFSET)] != upto:
            return None
        if q[d.word(d.PRODUCER_CURSOR_OFFSET)] < upto:
            return None  # noted, never published: the process died in between
        return source, position

    def _check_open(self) -> None:
        if self._closed:
            raise RingClosedError(f"ring {self._name!r} is closed", self._name)

    def _check_index(self, index: int) -> None:
        if not isinstance(index, int) or not 0 <= index < self._layout.consumers:
            raise IndexError(
                f"ring {self._name!r} has consumers 0..{self._layout.consumers - 1}, "
                f"not {index!r}"
            )

    # --- cursors -------------------------------------------------------------------------
    @property
    def producer_position(self) -> int:
        self._check_open()
        return self._q[d.word(d.PRODUCER_CURSOR_OFFSET)]

    def consumer_position(self, index: int) -> int:
        self._check_open()
        self._check_index(index)
        return self._q[d.word(d.consumer_cursor_offset(index))]

    def min_consumer_position(self) -> int:
        """The position the producer is gated by (its own when every consumer is untethered)."""
        self._check_open()
        q = self._q
        low = min(q[d.word(d.consumer_cursor_offset(i))] for i in range(self._layout.consumers))
        return min(low, q[d.word(d.PRODUCER_CURSOR_OFFSET)])

    def untether(self, index: int) -> int:
        """Take consumer ``index`` out of the producer's gating (it is dead, or stopped, and
        holding the producer back): its cursor becomes ``UNTETHERED``. Returns the position it
        had. The next consumer of the index rejoins at the producer's position; the stopped
        consumer, should it resume, is refused its next read or commit."""
        self._check_open()
        self._check_writable(f"untether consumer {index}")
        self._check_index(index)
        cell = d.word(d.consumer_cursor_offset(index))
        had = self._q[cell]
        self._q[cell] = d.UNTETHERED
        return had

    def is_untethered(self, index: int) -> bool:
        self._check_open()
        self._check_index(index)
        return self._q[d.word(d.consumer_cursor_offset(index))] == d.UNTETHERED

    def slots(self) -> np.ndarray:
        """Read-only ``(capacity, slot_size)`` view of every slot (tests, diagnostics)."""
        self._check_open()
        return self._slots_ro

    # --- roles --------------------------------------------------------------------------
    def producer(self, *, takeover: bool = False) -> "Producer":
        """The single producer.  It resumes from the published cursor."""
        self._check_open()
        self._check_writable("a producer")
        claim_role(self._q, d.word(d.PRODUCER_PID_OFFSET), self._name, "the producer role",
                   takeover)
        handle = Producer(self, self._map.mm, self._q, self._slots)
        self._handles.append(handle)
        return handle

    def consumer(self, index: int = 0, *, takeover: bool = False) -> "Consumer":
        """Consumer ``index``.  It resumes from its own cursor (restart after a crash), or,
        when the index was untethered, rejoins at the producer's position (``rejoined_at``:
        what was published before it is not for this consumer)."""
        self._check_open()
        self._check_writable(f"consumer {index}")
        self._check_index(index)
        claim_role(self._q, d.word(d.consumer_pid_offset(index)), self._name,
                   f"consumer {index}", takeover)
        rejoined_at = self._rejoin(index) if self.is_untethered(index) else None
        handle = Consumer(self, index, self._map.mm, self._q, self._slots_ro, rejoined_at)
        self._handles.append(handle)
        return handle

    def _rejoin(self, index: int) -> int:
        """Tether an untethered index again, at a position no slot it will read can have been
        claimed before: first a cursor no later than the producer's (from now on the producer
        counts it), then the producer's position read after that store. A producer gate taken
        before the store came from the other consumers, all at or behind that position."""
        q = self._q
        cell = d.word(d.consumer_cursor_offset(index))
        producer = d.word(d.PRODUCER_CURSOR_OFFSET)
        q[cell] = q[producer]
        at = q[producer]
        q[cell] = at
        return at

    def _check_writable(self, what: str) -> None:
        if self._read_only:
            raise RingReadOnlyError(
                f"ring {self._name!r} was attached read-only (observe); it cannot act as {what}",
                self._name,
            )

    # --- liveness -------------------------------------------------------------------------
    def consumer_info(self, index: int) -> ConsumerInfo:
        """Consumer ``index``'s pid, cursor, lag and heartbeat, as of now."""
        self._check_open()
        self._check_index(index)
        return read_consumer_info(self._q, index)

    def consumer_state(
        self, index: int, stale_after_ns: int = 1_000_000_000, slow_lag: int | None = None
    ) -> ConsumerState:
        """Tell a dead consumer from a slow one: ABSENT, DEAD, SLOW or ALIVE, by the rule of
        :func:`.liveness.consumer_state`.  The cursor it compares with is the one this handle
        saw last time; ``slow_lag`` defaults to half the capacity.
        """
        info = self.consumer_info(index)
        previous = self._observed.get(index)
        self._observed[index] = info.cursor
        threshold = max(1, self._layout.capacity // 2) if slow_lag is None else slow_lag
        return consumer_state(info, previous, stale_after_ns, threshold)

    # --- shutdown -------------------------------------------------------------------------
    def unlink(self) -> bool:
        """Remove the ring's name now; False when it was already gone."""
        self._owner = False
        return unlink_ring(self._name)

    def close(self) -> None:
        """Release every handle and the mapping; the creator also unlinks the name."""
        if self._closed:
            return
        self._closed = True
        for handle in self._handles:
            handle._release()
        self._handles.clear()
        self._slots = self._slots_ro = None
        self._q = None
        self._map.close()
        if self._owner:
            self._owner = False
            unlink_ring(self._name)

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("read-only" if self._read_only else "open")
        lay = self._layout
        return (
            f"Ring({self._name!r}, slot_size={lay.slot_size}, capacity={lay.capacity}, "
            f"consumers={lay.consumers}, {state})"
        )
