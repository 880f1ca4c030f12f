"""Consumer ``i`` of a ring: :class:`Consumer` reads every message in order, in batches.

A consumer loads the producer cursor, then reads the slots below it through zero-copy
read-only views, and commits a batch with ONE aligned 8-byte store of its own cursor, which
frees those slots for the producer: so it must be finished with a batch's views before it
commits it (see the memory-ordering contract in :mod:`.ring`).  Every read and commit also
stamps its heartbeat (``time.monotonic_ns()``), which :mod:`.liveness` reads to tell a slow
consumer from a dead one.  A consumer resumes from its committed cursor, so one restarted
after a crash sees every message it had not committed.

Build one with :meth:`Ring.consumer <ringex.ringbuffer.ring.Ring.consumer>`, which claims
the index; :meth:`Consumer.close` gives it up.
"""

from __future__ import annotations

import mmap
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import descriptor as d
from .doorbell import Bell, open_bell
from .errors import UntetheredError
from .roles import release_role

if TYPE_CHECKING:
    from .ring import Ring

__all__ = ["Consumer"]

_monotonic_ns = time.monotonic_ns
_UNTETHERED = d.UNTETHERED
#: How often a consumer without a bell tries to bind it again.
BELL_RETRY_NS = 1_000_000_000


class Consumer:
    """Consumer ``index`` of a ring: reads every message in order, zero-copy, in batches."""

    __slots__ = (
        "_index", "_name", "_mm", "_mv", "_q", "_slots", "_prod", "_cur", "_hb",
        "_pos", "_pending", "_cap", "_mask", "_slot", "_data_off", "_empty", "_limit",
        "rejoined_at", "_bell", "_bell_retry_ns",
    )

    def __init__(self, ring: Ring, index: int, mm: mmap.mmap, q: memoryview,
                 slots: np.ndarray, rejoined_at: int | None = None) -> None:
        """Consumer ``index`` of ``ring``, whose mapping is ``mm``, int64 view ``q`` and
        read-only ``(capacity, slot_size)`` slots ``slots``; ``rejoined_at``: the position an
        untethered index rejoined at (None: it resumes from its own cursor)."""
        lay = ring.layout
        self._index = index
        self._name = ring.name
        self._mm = mm
        self._mv = memoryview(mm).toreadonly()
        self._q = q
        self._slots = slots
        self._prod = d.word(d.PRODUCER_CURSOR_OFFSET)
        self._cur = d.word(d.consumer_cursor_offset(index))
        self._hb = d.word(d.consumer_heartbeat_offset(index))
        self._cap = lay.capacity
        self._mask = lay.mask
        self._slot = lay.slot_size
        self._data_off = lay.data_offset
        self._limit = lay.capacity
        self._empty = self._slots[:0]
        self.rejoined_at = rejoined_at
        self._pos = self._q[self._cur]
        self._pending = 0
        self._q[self._hb] = _monotonic_ns()
        self._bell: Bell | None = None
        self._bell_retry_ns = 0

    @property
    def index(self) -> int:
        return self._index

    @property
    def capacity(self) -> int:
        """The ring's slots."""
        return self._cap

    @property
    def position(self) -> int:
        """Sequence of the next message this consumer will read (its committed cursor)."""
        return self._pos

    def heartbeat(self) -> None:
        """Stamp the heartbeat (reads and commits do it too)."""
        self._q[self._hb] = _monotonic_ns()

    def bell(self) -> Bell | None:
        """This index's doorbell (bound at the first call), for a runner that parks on it; None
        while it cannot be bound (the process this one took the index over from still holds
        the address): tried again each ``BELL_RETRY_NS`` (see :mod:`.doorbell`)."""
        if self._bell is None and self._q is not None:
            now = _monotonic_ns()
            if now >= self._bell_retry_ns:
                self._bell_retry_ns = now + BELL_RETRY_NS
                self._bell = open_bell(self._name, self._q, self._index)
        return self._bell

    def available(self) -> int:
        return self._q[self._prod] - self._pos

    def read(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Zero-copy read-only views of up to ``limit`` published, unread messages.

        Returns ``(head, tail)`` ``(k, slot_size)`` uint8 arrays; ``tail`` is non-empty only
        when the batch wraps.  The first message is sequence :attr:`position`.  The cursor
        does not move until :meth:`commit`; views must not be used after committing.
        """
        q = self._q
        q[self._hb] = _monotonic_ns()
        if q[self._cur] == _UNTETHERED:
            self._untethered()
        pos = self._pos
        k = q[self._prod] - pos
        lim = self._limit if limit is None else limit
        if k > lim:
            k = lim
        if k <= 0:
            self._pending = 0
            empty = self._empty
            return empty, empty
        self._pending = k
        start = pos & self._mask
        end = start + k
        slots = self._slots
        cap = self._cap
        if end <= cap:
            return slots[start:end], self._empty
        return slots[start:], slots[:end - cap]

    def commit(self, count: int) -> None:
        """Advance the cursor over ``count`` messages of the last read (one store)."""
        if count > self._pending or count < 0:
            raise ValueError(
                f"ring {self._name!r} consumer {self._index}: cannot commit {count} "
                f"messages, {self._pending} read"
            )
        q = self._q
        if q[self._cur] == _UNTETHERED:  # the batch may have been overwritten under it
            self._untethered()
        pos = self._pos + count
        self._pos = pos
        self._pending -= count
        q[self._cur] = pos
        q[self._hb] = _monotonic_ns()

    def _untethered(self) -> None:
        self._pending = 0
        raise UntetheredError(
            f"ring {self._name!r} consumer {self._index} was untethered at position {self._pos} "
            "(judged dead while it held the producer back); attach the index again to rejoin",
            self._name,
        )

    def advance_to(self, position: int) -> None:
        """Move the cursor forward to ``position`` without reading: reconciliation after a
        crash, when another record (a ring's provenance) proves those messages consumed."""
        produced = self._q[self._prod]
        if not self._pos <= position <= produced:
            raise ValueError(
                f"ring {self._name!r} consumer {self._index}: cannot advance from "
                f"{self._pos} to {position} (published up to {produced})"
            )
        self._pos = position
        self._pending = 0
        q = self._q
        q[self._cur] = position
        q[self._hb] = _monotonic_ns()

    def poll(self, handler: Callable[[memoryview], Any], limit: int | None = None) -> int:
        """Call ``handler(slot)`` with a read-only memoryview of each message, in order,
        then commit the batch once.  If the handler raises, the messages it finished are
        committed and the rest are read again next time."""
        head, tail = self.read(limit)
        k = self._pending
        if not k:
            return 0
        mv = self._mv
        slot = self._slot
        mask = self._mask
        data_off = self._data_off
        pos = self._pos
        done = 0
        try:
            for seq in range(pos, pos + k):
                off = data_off + (seq & mask) * slot
                handler(mv[off:off + slot])
                done += 1
        finally:
            self.commit(done)
        return done

    def poll_batch(self, handler: Callable[[np.ndarray, int], Any],
                   limit: int | None = None) -> int:
        """Call ``handler(block, first_sequence)`` once per contiguous region (one, or two on
        wrap-around) with a ``(k, slot_size)`` read-only view, then commit once.  This is the
        shape a numba kernel consumes."""
        head, tail = self.read(limit)
        k = self._pending
        if not k:
            return 0
        pos = self._pos
        done = 0
        try:
            handler(head, pos)
            done = len(head)
            if len(tail):
                handler(tail, pos + done)
                done = k
        finally:
            self.commit(done)
        return done

    def _release(self) -> None:
        if self._bell is not None:
            self._bell.close()
            self._bell = None
        mv = self._mv
        q = self._q
        self._mm = self._mv = self._q = self._slots = self._empty = None
        if mv is not None:
            mv.release()
        if q is not None:  # None: closed before, and Ring.close releases every handle again
            release_role(q, d.word(d.consumer_pid_offset(self._index)))

    def close(self) -> None:
        """Detach cleanly: the cursor stays (the producer still gates on it), the pid
        cell is cleared so supervisors see ABSENT rather than DEAD."""
        if self._q is not None:
            self._release()
