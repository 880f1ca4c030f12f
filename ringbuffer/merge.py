"""Many-to-one: one consumer polling N single-producer rings fairly.

Python cannot compare-and-swap on shared memory, so there is no multi-producer ring: each
producer gets its own SPSC ring and the consumer merges them.  Fairness is round-robin with
a per-ring batch bound: one :meth:`MergePoller.poll` takes at most ``batch_limit`` messages
from each ring, and the ring polled first rotates on every call, so a flooded ring delays a
trickle ring by at most one bounded batch and can never starve it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .consumer import Consumer


class MergePoller:
    """Poll several rings' consumers round-robin, ``batch_limit`` messages each per call."""

    __slots__ = ("_consumers", "_count", "_limit", "_next")

    def __init__(self, consumers: Sequence[Consumer], batch_limit: int = 64) -> None:
        if not consumers:
            raise ValueError("a merge needs at least one ring")
        if batch_limit < 1:
            raise ValueError(f"batch_limit must be at least 1, got {batch_limit}")
        self._consumers = tuple(consumers)
        self._count = len(self._consumers)
        self._limit = batch_limit
        self._next = 0

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        return self._consumers

    @property
    def batch_limit(self) -> int:
        return self._limit

    def available(self) -> int:
        return sum(c.available() for c in self._consumers)

    def _order(self) -> range:
        start = self._next
        self._next = start + 1 if start + 1 < self._count else 0
        return range(start, start + self._count)

    def poll(self, handler: Callable[[int, memoryview], Any]) -> int:
        """One fair round: ``handler(source, slot_view)`` for at most ``batch_limit``
        messages of each ring, in ring order starting from a rotating ring.  Returns the
        number of messages handled (0 when every ring was empty)."""
        consumers = self._consumers
        n = self._count
        limit = self._limit
        total = 0
        for j in self._order():
            source = j % n if j >= n else j

            def bound(slot, _source=source):
                return handler(_source, slot)

            total += consumers[source].poll(bound, limit)
        return total

    def poll_batch(self, handler: Callable[[int, np.ndarray, int], Any]) -> int:
        """One fair round in batch form: ``handler(source, block, first_sequence)`` per
        contiguous region of each ring (at most ``batch_limit`` messages per ring)."""
        consumers = self._consumers
        n = self._count
        limit = self._limit
        total = 0
        for j in self._order():
            source = j % n if j >= n else j
            consumer = consumers[source]
            head, tail = consumer.read(limit)
            k = len(head) + len(tail)
            if not k:
                continue
            pos = consumer.position
            done = 0
            try:
                handler(source, head, pos)
                done = len(head)
                if len(tail):
                    handler(source, tail, pos + done)
                    done = k
            finally:
                consumer.commit(done)
            total += done
        return total
