"""The single writer of a ring: :class:`Producer`, and :class:`Offer`, what ``offer`` answers.

A producer never blocks: it publishes into free slots only, a slot being free once every
consumer's cursor has passed it (the slowest consumer gates it), and answers
``Offer.BACK_PRESSURED`` (or a short claim) when the ring is full.  It writes the slots with
plain copies, then publishes with ONE aligned 8-byte store of the producer cursor, so a
consumer that loads the cursor first sees every byte of the slots below it (see the
memory-ordering contract in :mod:`.ring`); then it rings the doorbell of any consumer parked
waiting for it (:mod:`.doorbell`).  It caches the gate (the slowest consumer cursor
it last read) and rereads the consumer cursors only when that leaves too little room.

Build one with :meth:`Ring.producer <ringex.ringbuffer.ring.Ring.producer>`, which claims
the producer role; :meth:`Producer.close` gives the role up.
"""

from __future__ import annotations

import enum
import mmap
from typing import TYPE_CHECKING

import numpy as np

from . import descriptor as d
from .doorbell import BellRinger
from .roles import release_role

if TYPE_CHECKING:
    from .ring import Ring

__all__ = ["Offer", "Producer"]


class Offer(enum.IntEnum):
    """Result of :meth:`Producer.offer`: truthy when the message went in."""

    BACK_PRESSURED = 0
    OK = 1


_OK = Offer.OK
_BACK_PRESSURED = Offer.BACK_PRESSURED


class Producer:
    """The single writer of a ring.  Never blocks: a full ring answers BACK_PRESSURED."""

    __slots__ = (
        "_mm", "_q", "_slots", "_cursor", "_gates", "_gate0", "_seq", "_gate",
        "_cap", "_mask", "_slot", "_data_off", "_claimed", "_empty", "_zeros", "_name",
        "_prov_upto", "_prov_source", "_prov_position", "_ringer", "_waiting", "_waiting0",
    )

    def __init__(self, ring: Ring, mm: mmap.mmap, q: memoryview, slots: np.ndarray) -> None:
        """The producer of ``ring``, whose mapping is ``mm``, int64 view ``q`` and
        writable ``(capacity, slot_size)`` slots ``slots``."""
        lay = ring.layout
        self._name = ring.name
        self._mm = mm
        self._q = q
        self._slots = slots
        self._cursor = d.word(d.PRODUCER_CURSOR_OFFSET)
        self._gates = tuple(d.word(d.consumer_cursor_offset(i)) for i in range(lay.consumers))
        self._gate0 = self._gates[0] if len(self._gates) == 1 else -1
        self._cap = lay.capacity
        self._mask = lay.mask
        self._slot = lay.slot_size
        self._data_off = lay.data_offset
        self._seq = self._q[self._cursor]
        self._gate = 0
        self._refresh_gate()
        self._claimed = 0
        self._empty = self._slots[:0]
        self._zeros = bytes(lay.slot_size)
        self._prov_upto = d.word(d.PROVENANCE_UPTO_OFFSET)
        self._prov_source = d.word(d.PROVENANCE_SOURCE_OFFSET)
        self._prov_position = d.word(d.PROVENANCE_POSITION_OFFSET)
        self._ringer = BellRinger(ring.name, q, lay.consumers)
        self._waiting = self._ringer.words
        # One consumer (most rings): one word to load after a publish, no loop.
        self._waiting0 = self._waiting[0] if len(self._waiting) == 1 else -1

    @property
    def position(self) -> int:
        """Sequence of the next message this producer will publish."""
        return self._seq

    def _refresh_gate(self) -> int:
        q = self._q
        if self._gate0 >= 0:
            g = q[self._gate0]
        else:
            gates = self._gates
            g = q[gates[0]]
            for i in gates:
                v = q[i]
                if v < g:
                    g = v
        if g > self._seq:  # only an untethered cursor reads ahead: it gates nothing
            g = self._seq
        self._gate = g
        return g

    def remaining(self) -> int:
        """Free slots right now (reads every consumer cursor)."""
        return self._cap - (self._seq - self._refresh_gate())

    def offer(self, payload) -> Offer:
        """Copy one message (bytes-like, at most slot_size bytes) into the next slot and
        publish it.  Shorter payloads are zero-padded.  Returns Offer.OK, or
        Offer.BACK_PRESSURED when the slowest consumer is a full ring behind (nothing is
        written then).  Abandons an outstanding :meth:`claim`."""
        seq = self._seq
        cap = self._cap
        if seq - self._gate >= cap and seq - self._refresh_gate() >= cap:
            return _BACK_PRESSURED
        slot = self._slot
        off = self._data_off + (seq & self._mask) * slot
        n = len(payload)
        if n == slot:
            self._mm[off:off + slot] = payload
        else:
            self._write_short(off, payload, n)
        seq += 1
        self._seq = seq
        self._claimed = 0
        q = self._q
        q[self._cursor] = seq
        if self._waiting0 >= 0:
            if q[self._waiting0]:
                self._ringer.ring()
        else:
            self._wake(q)
        return _OK

    def _write_short(self, off: int, payload, n: int) -> None:
        slot = self._slot
        if n > slot:
            raise ValueError(
                f"ring {self._name!r}: message of {n} bytes does not fit a {slot}-byte slot"
            )
        mm = self._mm
        mm[off:off + n] = payload
        mm[off + n:off + slot] = self._zeros[n:]

    def claim(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Claim up to ``n`` free slots as zero-copy writable ``(k, slot_size)`` uint8 views.

        Returns ``(head, tail)``: ``tail`` is empty unless the claim wraps around the end of
        the ring.  ``len(head) + len(tail)`` may be less than ``n`` (or 0 when the ring is
        full).  Nothing is visible to consumers until :meth:`publish`.
        """
        seq = self._seq
        cap = self._cap
        free = cap - (seq - self._gate)
        if free < n:
            free = cap - (seq - self._refresh_gate())
        k = n if n < free else free
        if k <= 0:
            self._claimed = 0
            empty = self._empty
            return empty, empty
        self._claimed = k
        start = seq & self._mask
        end = start + k
        slots = self._slots
        if end <= cap:
            return slots[start:end], self._empty
        return slots[start:], slots[:end - cap]

    def publish(self, count: int) -> None:
        """Publish the first ``count`` slots of the last claim with one cursor store."""
        if count > self._claimed or count < 0:
            raise ValueError(
                f"ring {self._name!r}: cannot publish {count} slots, {self._claimed} claimed"
            )
        seq = self._seq + count
        self._seq = seq
        self._claimed = 0
        q = self._q
        q[self._cursor] = seq
        if self._waiting0 >= 0:  # a consumer parked on its doorbell is woken now
            if q[self._waiting0]:
                self._ringer.ring()
        else:
            self._wake(q)

    def _wake(self, q: memoryview) -> None:
        for w in self._waiting:
            if q[w]:
                self._ringer.ring()
                return

    def note_provenance(self, count: int, source: int, source_position: int) -> None:
        """Record, before ``publish(count)``, that the publish carries ``source``'s messages
        up to ``source_position`` (its read position once they are consumed). A restarted
        forwarder reads it back with :meth:`Ring.provenance` to commit what the dead one
        published but never committed (the layout's notes say why the order of stores is
        crash-safe)."""
        if count > self._claimed or count <= 0:
            raise ValueError(
                f"ring {self._name!r}: provenance for {count} slots, {self._claimed} claimed"
            )
        q = self._q
        q[self._prov_upto] = d.NO_PROVENANCE  # torn from here on reads as no note
        q[self._prov_source] = source
        q[self._prov_position] = source_position
        q[self._prov_upto] = self._seq + count

    def offer_batch(self, messages) -> int:
        """Offer many messages, as many as fit now; returns how many were published.

        ``messages`` is a 2-D uint8 array ``(m, w)`` with ``w <= slot_size`` (rows are
        zero-padded), a 1-D structured array (each record one message), or an iterable of
        bytes-like objects.  Arrays go in with one claim and one cursor store.
        """
        if isinstance(messages, np.ndarray):
            arr = messages
            if arr.ndim == 1:
                arr = np.ascontiguousarray(arr).view(np.uint8).reshape(len(messages), -1)
            elif arr.ndim != 2 or arr.dtype != np.uint8:
                raise ValueError(
                    f"ring {self._name!r}: offer_batch needs (m, w) uint8 rows or a 1-D "
                    f"structured array, got shape {arr.shape} dtype {arr.dtype}"
                )
            m, w = arr.shape
            if w > self._slot:
                raise ValueError(
                    f"ring {self._name!r}: messages of {w} bytes do not fit a "
                    f"{self._slot}-byte slot"
                )
            head, tail = self.claim(m)
            kh = len(head)
            kt = len(tail)
            if kh:
                head[:, :w] = arr[:kh]
                if w < self._slot:
                    head[:, w:] = 0
            if kt:
                tail[:, :w] = arr[kh:kh + kt]
                if w < self._slot:
                    tail[:, w:] = 0
            self.publish(kh + kt)
            return kh + kt
        done = 0
        offer = self.offer
        for message in messages:
            if not offer(message):
                break
            done += 1
        return done

    def _release(self) -> None:
        self._ringer.close()
        q = self._q
        self._mm = self._q = self._slots = self._empty = None
        if q is not None:  # None: closed before, and Ring.close releases every handle again
            release_role(q, d.word(d.PRODUCER_PID_OFFSET))

    def close(self) -> None:
        """Give up the producer role (the ring stays mapped)."""
        if self._mm is not None:
            self._release()
