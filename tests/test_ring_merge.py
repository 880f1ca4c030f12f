"""Many-to-one: N single-producer rings polled fairly by one consumer."""

from __future__ import annotations

import numpy as np
import pytest

from ringex.ringbuffer.merge import MergePoller
from ringex.ringbuffer.ring import Ring
from test_ring_support import flood_producer, ring_env, verify, wait_until  # noqa: F401


def _rows(a: int, b: int) -> np.ndarray:
    return np.arange(a, b, dtype="<u8").view(np.uint8).reshape(b - a, 8)


def test_round_robin_bounds_each_ring_and_rotates(ring_env):
    names = [ring_env.name(f"m{i}") for i in range(3)]
    rings = [Ring.create(n, slot_size=8, capacity=1024) for n in names]
    try:
        prods = [r.producer() for r in rings]
        merger = MergePoller([r.consumer(0) for r in rings], batch_limit=16)
        assert prods[0].offer_batch(_rows(0, 1024)) == 1024  # flooded
        prods[1].offer_batch(_rows(0, 3))  # trickle
        got: list[tuple[int, int]] = []
        assert merger.poll(lambda src, slot: got.append((src, int.from_bytes(slot, "little")))) == 19
        assert got == [(0, i) for i in range(16)] + [(1, 0), (1, 1), (1, 2)]
        got.clear()
        prods[1].offer_batch(_rows(3, 4))
        prods[2].offer_batch(_rows(0, 1))
        merger.poll(lambda src, slot: got.append((src, int.from_bytes(slot, "little"))))
        # the next round starts from ring 1: the flooded ring does not go first every time
        assert got == [(1, 3), (2, 0)] + [(0, i) for i in range(16, 32)]
        calls = []
        prods[2].offer_batch(_rows(1, 41))
        n = merger.poll_batch(lambda src, block, first: calls.append((src, first, len(block))))
        assert n == 32 and calls == [(2, 1, 16), (0, 32, 16)]
    finally:
        for r in rings:
            r.close()


@pytest.mark.slow
def test_flooded_ring_does_not_starve_trickle_ring(ring_env):
    """A producer process keeps one ring flooded while the test, round after round, makes sure
    that ring holds more than a batch, puts one to three messages on a second ring, and polls:
    every round takes exactly one batch from the flood and everything the trickle ring held.
    Each round waits for its backlog rather than counting how often one happened to exist, so
    nothing here depends on how the processes are scheduled."""
    flood_name, trickle_name = ring_env.name("flood"), ring_env.name("trickle")
    rounds, limit = 60, 32
    with Ring.create(flood_name, slot_size=64, capacity=1024) as flood, \
            Ring.create(trickle_name, slot_size=8, capacity=64) as trickle:
        merger = MergePoller([flood.consumer(0), trickle.consumer(0)], batch_limit=limit)
        trickle_prod = trickle.producer()
        fproc, _ = ring_env.spawn(flood_producer, flood_name, 120.0)

        flood_next = 0
        sent = 0
        trickle_seen: list[int] = []

        def handler(src, block, first):
            nonlocal flood_next
            if src == 0:
                verify(block, first)
                assert first == flood_next
                flood_next += len(block)
                counts[0] += len(block)
            else:
                trickle_seen.extend(int(x) for x in block.view("<u8")[:, 0])
                counts[1] += len(block)

        for r in range(rounds):
            wait_until(lambda: flood.producer_position - flood.consumer_position(0) > limit, 30,
                       f"a flood backlog in round {r}")
            k = 1 + r % 3
            assert trickle_prod.offer_batch(_rows(sent, sent + k)) == k
            sent += k
            counts = [0, 0]
            assert merger.poll_batch(handler) == limit + k
            assert counts == [limit, k], r  # one batch of the flood, all of the trickle
        assert trickle_seen == list(range(sent))
        # more than the flood ring holds went through it: its producer ran all along
        assert flood_next == rounds * limit > flood.capacity
        fproc.kill()
        fproc.join(10)
