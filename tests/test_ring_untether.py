"""Untethered consumers (ringbuffer/descriptor.py, Ring.untether): a dead subscriber stops
gating the producer, a stopped one is refused when it resumes, and its successor rejoins at
the producer's position without ever reading a slot claimed under a gate that left it out."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ringex.ringbuffer import descriptor as d
from ringex.ringbuffer.errors import UntetheredError
from ringex.ringbuffer.liveness import ConsumerState
from ringex.ringbuffer.ring import Ring
from test_ring_support import RingEnv, ring_env  # noqa: F401

CAP = 8


def msg(i: int) -> bytes:
    return i.to_bytes(8, "little")


def seqs(head: np.ndarray, tail: np.ndarray) -> list[int]:
    return [int.from_bytes(bytes(r[:8]), "little") for part in (head, tail) for r in part]


def test_an_untethered_consumer_no_longer_holds_the_producer(ring_env: RingEnv) -> None:
    with Ring.create(ring_env.name(), slot_size=8, capacity=CAP, consumers=2) as ring:
        prod = ring.producer()
        fast, dead = ring.consumer(0), ring.consumer(1)
        for i in range(CAP):
            assert prod.offer(msg(i))
        assert not prod.offer(msg(CAP))  # both consumers hold every slot
        head, tail = fast.read()
        fast.commit(len(head) + len(tail))
        assert not prod.offer(msg(CAP))  # the dead one still does
        assert ring.untether(1) == 0
        assert ring.is_untethered(1) and ring.consumer_position(1) == d.UNTETHERED
        assert ring.consumer_state(1) is ConsumerState.UNTETHERED
        for i in range(CAP, 2 * CAP):
            assert prod.offer(msg(i))  # gated by the live consumer only
        assert not prod.offer(msg(2 * CAP))
        assert ring.min_consumer_position() == CAP
        with pytest.raises(UntetheredError, match="consumer 1 was untethered at position 0"):
            dead.read()  # a stopped consumer that resumes is told, not handed overwritten slots
        with pytest.raises(UntetheredError):
            dead.commit(0)
        assert ring.is_untethered(1)  # and it did not tether itself again


def test_with_every_consumer_untethered_a_claim_is_still_at_most_the_ring(ring_env: RingEnv) -> None:
    with Ring.create(ring_env.name(), slot_size=8, capacity=CAP, consumers=1) as ring:
        prod = ring.producer()
        ring.consumer(0)
        ring.untether(0)
        for lap in range(3):
            head, tail = prod.claim(3 * CAP)
            assert len(head) + len(tail) == CAP  # never more than one ring ahead of itself
            prod.publish(CAP)
        assert prod.remaining() == CAP and ring.min_consumer_position() == 3 * CAP


def test_the_next_consumer_of_the_index_rejoins_at_the_head(ring_env: RingEnv) -> None:
    with Ring.create(ring_env.name(), slot_size=8, capacity=CAP, consumers=1) as ring:
        prod = ring.producer()
        old = ring.consumer(0)
        assert old.rejoined_at is None  # an ordinary attach resumes from its cursor
        for i in range(5):
            prod.offer(msg(i))
        ring.untether(0)
        for i in range(5, 13):
            prod.offer(msg(i))
        new = ring.consumer(0, takeover=True)
        assert new.rejoined_at == 13 and new.position == 13 and not ring.is_untethered(0)
        assert ring.consumer_state(0) is not ConsumerState.UNTETHERED
        for i in range(13, 13 + CAP):
            assert prod.offer(msg(i))
        assert not prod.offer(msg(99))  # gated by the rejoined consumer again
        head, tail = new.read()
        assert seqs(head, tail) == list(range(13, 13 + CAP))
        new.commit(CAP)


def _free_running_producer(name: str, seconds: float) -> dict:
    """Child: publish increasing sequence numbers as fast as the gate allows, for a while."""
    ring = Ring.attach(name, wait_s=10.0)
    prod = ring.producer(takeover=True)
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        head, tail = prod.claim(64)
        k = 0
        for part in (head, tail):
            for row in part:
                row[:8] = np.frombuffer(msg(n + k), np.uint8)
                k += 1
        prod.publish(k)
        n += k
        if k == 0:
            time.sleep(0.0001)  # gated: let the reader run (2 cores)
    prod.close()
    ring.close()
    return {"published": n}


def test_rejoining_under_a_running_producer_never_reads_an_overwritten_slot(ring_env: RingEnv) -> None:
    """The rejoin's order of stores, tried against a producer that runs free while the index
    is untethered: each consumer rejoins, reads, and finds in every slot exactly the sequence
    number of its position (an overwritten slot would hold a later one)."""
    name = ring_env.name()
    with Ring.create(name, slot_size=8, capacity=64, consumers=1) as ring:
        ring.consumer(0).close()
        ring.untether(0)
        proc, conn = ring_env.spawn(_free_running_producer, name, 1.5)
        rejoins = checked = 0
        deadline = time.monotonic() + 60
        while proc.is_alive() or ring.producer_position == 0:
            assert time.monotonic() < deadline
            c = ring.consumer(0, takeover=True)
            rejoins += 1
            for _ in range(3):
                head, tail = c.read()
                got = seqs(head, tail)
                assert got == list(range(c.position, c.position + len(got)))
                c.commit(len(got))
                checked += len(got)
            c.close()
            ring.untether(0)
        assert ring_env.result(proc, conn)["ok"]
    assert rejoins > 10 and checked > 0
