"""Doorbells (ringbuffer/doorbell.py): a parked consumer is woken by the producer's publish or
by its agent's descriptors, never later than its park would have ended, and a bell that is
missing or gone costs nothing but that park."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from ringex.ringbuffer import descriptor as d
from ringex.ringbuffer.agent import Agent, CompositeAgent
from ringex.ringbuffer.doorbell import Doorbell, bell_address
from ringex.ringbuffer.idle import BackoffIdleStrategy
from ringex.ringbuffer.ring import Ring
from ringex.ringbuffer.runner import AgentRunner, RunnerConfig
from test_ring_support import RingEnv, ring_env  # noqa: F401

LONG_PARK_S = 30.0  # what a park lasts when nothing wakes it: far longer than any bound below
WAKE_BOUND_S = 10.0  # a woken park returns well within this on the slowest host


def msg(i: int) -> bytes:
    return i.to_bytes(8, "little")


def later(delay: float, action) -> threading.Thread:
    t = threading.Timer(delay, action)
    t.start()
    return t


def test_the_waiting_word_is_where_the_byte_map_puts_it() -> None:
    # descriptor.py: the waiting words at 256 + 8*i, apart from every cursor and heartbeat
    # (consumer i's pair at 768 + 128*i), which the consumers write on every read
    for i in (0, 1, 5, 63):
        assert d.consumer_waiting_offset(i) == 256 + 8 * i
        assert d.consumer_pair_offset(i) == 768 + 128 * i
    assert d.consumer_waiting_offset(d.MAX_CONSUMERS - 1) + 8 <= d.CONSUMER_PAIRS_OFFSET
    assert d.VERSION == 4


def test_a_publish_ends_a_park(ring_env: RingEnv) -> None:
    with Ring.create(ring_env.name(), slot_size=8, capacity=8) as ring:
        prod, cons = ring.producer(), ring.consumer(0)
        bell = Doorbell(lambda: [cons])
        t = later(0.1, lambda: prod.offer(msg(1)))
        start = time.monotonic()
        bell.park(LONG_PARK_S)
        took = time.monotonic() - start
        t.join(WAKE_BOUND_S)
        assert took < WAKE_BOUND_S
        assert cons.available() == 1
        assert ring._q[d.word(d.consumer_waiting_offset(0))] == 0  # disarmed once awake


def test_a_batch_publish_ends_a_park_in_another_ring_of_the_same_agent(ring_env: RingEnv) -> None:
    with Ring.create(ring_env.name("a"), slot_size=8, capacity=8) as a, \
            Ring.create(ring_env.name("b"), slot_size=8, capacity=8, consumers=2) as b:
        a.producer()
        pb = b.producer()
        ca, cb = a.consumer(0), b.consumer(1)
        bell = Doorbell(lambda: [ca, cb])

        def publish() -> None:
            head, _ = pb.claim(2)
            head[:, 0] = 7
            pb.publish(2)

        t = later(0.1, publish)
        start = time.monotonic()
        bell.park(LONG_PARK_S)
        assert time.monotonic() - start < WAKE_BOUND_S
        t.join(WAKE_BOUND_S)
        assert cb.available() == 2 and ca.available() == 0


def test_a_message_already_waiting_means_no_park(ring_env: RingEnv) -> None:
    with Ring.create(ring_env.name(), slot_size=8, capacity=8) as ring:
        prod, cons = ring.producer(), ring.consumer(0)
        assert prod.offer(msg(1))
        start = time.monotonic()
        Doorbell(lambda: [cons]).park(LONG_PARK_S)
        assert time.monotonic() - start < WAKE_BOUND_S
        assert ring._q[d.word(d.consumer_waiting_offset(0))] == 0


def test_a_readable_descriptor_ends_a_park(ring_env: RingEnv) -> None:
    a, b = socket.socketpair()
    try:
        with Ring.create(ring_env.name(), slot_size=8, capacity=8) as ring:
            cons = ring.consumer(0)
            t = later(0.1, lambda: b.send(b"x"))
            start = time.monotonic()
            Doorbell(lambda: [cons, a]).park(LONG_PARK_S)
            assert time.monotonic() - start < WAKE_BOUND_S
            t.join(WAKE_BOUND_S)
            assert a.recv(1) == b"x"  # the agent's own descriptor is left for the agent to read
    finally:
        a.close()
        b.close()


def test_a_waiting_word_with_no_bell_behind_it_is_cleared_by_the_producer(ring_env: RingEnv) -> None:
    # A consumer that died parked leaves its word set and its bell gone: the producer's first
    # send is refused, and it stops trying.
    with Ring.create(ring_env.name(), slot_size=8, capacity=8, consumers=2) as ring:
        prod = ring.producer()
        ring.consumer(0)
        word = d.word(d.consumer_waiting_offset(1))
        ring._q[word] = 1
        assert prod.offer(msg(1))
        assert ring._q[word] == 0


def test_a_taken_bell_leaves_the_park_timed_until_it_is_free(ring_env: RingEnv) -> None:
    with Ring.create(ring_env.name(), slot_size=8, capacity=8) as ring:
        first = ring.consumer(0)
        assert first.bell() is not None
        second = ring.consumer(0, takeover=True)  # the first still holds the address
        assert second.bell() is None
        start = time.monotonic()
        Doorbell(lambda: [second]).park(0.05)  # no bell: the park's length, no error
        assert time.monotonic() - start >= 0.04
        first.close()  # its process is gone: the address is free
        assert second.bell() is None  # not tried again before the retry interval
        second._bell_retry_ns = 0  # as if BELL_RETRY_NS had passed
        assert second.bell() is not None


def test_closing_a_consumer_frees_its_bell(ring_env: RingEnv) -> None:
    with Ring.create(ring_env.name(), slot_size=8, capacity=8) as ring:
        first = ring.consumer(0)
        assert first.bell() is not None
        first.close()
        again = ring.consumer(0)
        assert again.bell() is not None  # the same address, bound again
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with pytest.raises(OSError):
                probe.bind(bell_address(ring.name, 0))
        finally:
            probe.close()


class RingReader(Agent):
    role_name = "reader"

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.seen: list[int] = []
        self.got = threading.Event()

    def on_start(self) -> None:
        self.consumer = self.ring.consumer(0)

    def do_work(self) -> int:
        head, tail = self.consumer.read()
        k = len(head) + len(tail)
        for r in (*head, *tail):
            self.seen.append(int.from_bytes(bytes(r), "little"))
        if k:
            self.consumer.commit(k)
            self.got.set()
        return k

    def on_close(self) -> None:
        self.consumer.close()

    def doorbell_sources(self) -> list:
        return [self.consumer]


def test_a_runner_parked_for_long_is_woken_by_each_publish(ring_env: RingEnv) -> None:
    with Ring.create(ring_env.name(), slot_size=8, capacity=8) as ring:
        prod = ring.producer()
        agent = RingReader(ring)
        idle = BackoffIdleStrategy(max_park_ns=int(LONG_PARK_S * 1e9))
        runner = AgentRunner(agent, RunnerConfig(idle_strategy=idle, counters=False, handle_signals=False))
        t = threading.Thread(target=runner.run)
        t.start()
        try:
            assert runner.wait_started(WAKE_BOUND_S)
            time.sleep(0.1)  # parked by now, for LONG_PARK_S unless rung
            for i in (1, 2):
                agent.got.clear()
                assert prod.offer(msg(i))
                assert agent.got.wait(WAKE_BOUND_S), "the publish did not end the park"
            assert agent.seen == [1, 2]
        finally:
            runner.stop()
            prod.offer(msg(3))  # wake it to see the stop
            t.join(WAKE_BOUND_S)
        assert not t.is_alive()


def test_an_agent_without_sources_keeps_the_timed_backoff() -> None:
    class Quiet(Agent):
        def do_work(self) -> int:
            return 0

    assert Quiet().doorbell_sources() == ()
    idle = BackoffIdleStrategy()
    runner = AgentRunner(Quiet(), RunnerConfig(idle_strategy=idle, counters=False, handle_signals=False))
    timer = threading.Timer(0.2, runner.stop)
    timer.start()
    runner.run()
    timer.join()
    assert idle.max_spins == 100 and idle._doorbell is None


def test_a_composite_names_every_agents_sources() -> None:
    class Source(Agent):
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def do_work(self) -> int:
            return 0

        def doorbell_sources(self) -> list:
            return [self.tag]

    assert CompositeAgent([Source("a"), Source("b")]).doorbell_sources() == ["a", "b"]
