"""Many-to-one: N single-producer rings polled fairly by one consumer."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ringex.ringbuffer.idle import BackoffIdleStrategy
from ringex.ringbuffer.merge import MergePoller
from ringex.ringbuffer.ring import Ring
from test_ring_support import flood_producer, ring_env, trickle_producer, verify  # noqa: F401


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
    flood_name, trickle_name = ring_env.name("flood"), ring_env.name("trickle")
    trickles, limit = 40, 32
    with Ring.create(flood_name, slot_size=64, capacity=1024) as flood, \
            Ring.create(trickle_name, slot_size=64, capacity=64) as trickle:
        merger = MergePoller([flood.consumer(0), trickle.consumer(0)], batch_limit=limit)
        fproc, fconn = ring_env.spawn(flood_producer, flood_name, 30.0)
        # wait until the flood ring is full before the trickle starts
        deadline = time.monotonic() + 30
        while flood.producer_position < 1024:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        tproc, tconn = ring_env.spawn(trickle_producer, trickle_name, trickles, 0.01)

        flood_next = 0
        trickle_seen: list[int] = []
        contended = 0
        idle = BackoffIdleStrategy(max_spins=10, max_yields=10, max_park_ns=100_000)
        deadline = time.monotonic() + 60

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

        while len(trickle_seen) < trickles:
            assert time.monotonic() < deadline, f"trickle starved: got {len(trickle_seen)}"
            backlog = (flood.consumer_position(0), flood.producer_position)
            waiting = trickle.producer_position - trickle.consumer_position(0)
            counts = [0, 0]
            idle.idle(merger.poll_batch(handler))
            assert counts[0] <= limit
            if waiting:
                # whatever the trickle ring held at the start of a round is taken that round
                assert counts[1] >= min(waiting, limit)
                if backlog[1] - backlog[0] > limit:
                    contended += 1
        assert trickle_seen == list(range(trickles))
        # most trickle messages arrived while the flood ring had a backlog beyond one batch
        assert contended >= trickles // 4
        fproc.kill()
        fproc.join(10)
        ring_env.result(tproc, tconn, 30)
