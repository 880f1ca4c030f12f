"""Cross-process ring tests: real processes (spawn), real shared memory."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import psutil
import pytest

from ringex.ringbuffer.liveness import ConsumerState
from ringex.ringbuffer.producer import Offer
from ringex.ringbuffer.ring import Ring
from test_ring_support import (  # noqa: F401
    cursor_reader,
    cursor_writer,
    idle_consumer,
    recording_consumer,
    ring_env,
    stream_consumer,
    stream_producer,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_ten_million_messages_across_wraparounds(ring_env):
    total = 10_000_000
    name = ring_env.name("10m")
    with Ring.create(name, slot_size=64, capacity=1024):
        cproc, cconn = ring_env.spawn(stream_consumer, name, 0, total, 512, 0.0, 120.0)
        pproc, pconn = ring_env.spawn(stream_producer, name, total, 256, 120.0)
        prod = ring_env.result(pproc, pconn, 150)
        cons = ring_env.result(cproc, cconn, 150)
    assert prod["count"] == cons["count"] == total
    assert prod["checksum"] == cons["checksum"]
    assert prod["max_outstanding"] <= 1024  # ten million through 1024 slots: ~9800 wraparounds


def test_cursor_stores_never_tear(ring_env):
    iterations = 3_000_000
    name = ring_env.name("tear")
    with Ring.create(name, slot_size=64, capacity=16):
        ready = ring_env.ctx.Event()
        rproc, rconn = ring_env.spawn(cursor_reader, name, iterations * 0x1_0000_0001, 120.0, ready)
        assert ready.wait(30), "the reader never started reading"
        wproc, wconn = ring_env.spawn(cursor_writer, name, iterations)  # into a spinning reader
        ring_env.result(wproc, wconn, 120)
        ring_env.result(rproc, rconn, 120)
    # The reader checked every value it read (untorn, never backwards) up to the writer's last.
    # How many of the writer's values it happened to see is the scheduler's business, not a
    # property of the ring, so it is not asserted.


def _stopped(pid: int) -> bool:
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


def test_back_pressure_with_stalled_consumer(ring_env):
    cap, total = 64, 5000
    name = ring_env.name("bp")
    with Ring.create(name, slot_size=16, capacity=cap) as ring:
        prod = ring.producer()
        cproc, cconn = ring_env.spawn(idle_consumer, name, 0, total)
        wait_until(lambda: ring.consumer_info(0).pid == cproc.pid, 20, "consumer attach")
        os.kill(cproc.pid, signal.SIGSTOP)
        wait_until(lambda: _stopped(cproc.pid), 10, "consumer stop")
        for seq in range(cap):
            assert prod.offer(seq.to_bytes(16, "little")) is Offer.OK
        for _ in range(100):
            assert prod.offer(b"\xee" * 16) is Offer.BACK_PRESSURED
        head, tail = prod.claim(10)
        assert len(head) + len(tail) == 0
        assert ring.producer_position == cap and ring.consumer_position(0) == 0
        words = ring.slots().view("<u8")
        assert list(words[:, 0]) == list(range(cap)) and not words[:, 1].any()  # intact
        os.kill(cproc.pid, signal.SIGCONT)
        seq = cap
        deadline = time.monotonic() + 60
        while seq < total:
            if prod.offer(seq.to_bytes(16, "little")):
                seq += 1
            else:
                assert time.monotonic() < deadline, "consumer never drained"
                time.sleep(0.0005)
        res = ring_env.result(cproc, cconn, 60)
    assert res["count"] == total  # the consumer checked 0..total-1 in order


def test_sigkill_and_restart_consumer_loses_and_repeats_nothing(ring_env, tmp_path):
    total = 200_000
    name = ring_env.name("kill")
    out_path = str(tmp_path / "out.bin")
    np.zeros(total, np.int8).tofile(out_path)
    with Ring.create(name, slot_size=64, capacity=1024) as ring:
        c1, c1conn = ring_env.spawn(recording_consumer, name, out_path, total, 1, 128, 0.0005)
        # the first producer publishes only the first half: however the processes are
        # scheduled, the kill lands with the stream neither untouched nor finished
        pproc, pconn = ring_env.spawn(stream_producer, name, total // 2, 64, 120.0)
        wait_until(lambda: ring.consumer_position(0) >= total // 3, 60, "first third consumed")
        os.kill(c1.pid, signal.SIGKILL)
        c1.join(10)
        assert c1.exitcode == -signal.SIGKILL
        committed = ring.consumer_position(0)
        assert total // 3 <= committed <= total // 2
        assert ring.consumer_state(0) is ConsumerState.DEAD
        time.sleep(0.2)
        assert ring.consumer_position(0) == committed  # the producer never passes it
        assert ring.producer_position - committed <= ring.capacity
        c2, c2conn = ring_env.spawn(recording_consumer, name, out_path, total, 2, 512, 0.0)
        assert ring_env.result(pproc, pconn, 120)["count"] == total // 2
        pproc, pconn = ring_env.spawn(stream_producer, name, total, 64, 120.0)  # the second half
        res2 = ring_env.result(c2, c2conn, 120)
        ring_env.result(pproc, pconn, 120)
    assert res2["first"] == committed  # resumed exactly at the committed cursor
    assert res2["count"] == total - committed
    out = np.fromfile(out_path, np.int8)
    assert (out[:committed] == 1).all()  # committed by the first: never redelivered
    assert (out[committed:] == 2).all()  # everything after: delivered to the second


def test_one_to_many_three_consumers_at_different_speeds(ring_env):
    total, cap = 300_000, 256
    name = ring_env.name("spmc")
    with Ring.create(name, slot_size=64, capacity=cap, consumers=3):
        consumers = [
            ring_env.spawn(stream_consumer, name, 0, total, 256, 0.0, 120.0),
            ring_env.spawn(stream_consumer, name, 1, total, 64, 0.0002, 120.0),
            ring_env.spawn(stream_consumer, name, 2, total, 128, 0.001, 120.0),
        ]
        pproc, pconn = ring_env.spawn(stream_producer, name, total, 128, 120.0)
        with Ring.observe(name) as obs:
            samples = 0
            while pproc.is_alive() and samples < 20_000:
                p = obs.producer_position  # producer first, then the consumers
                assert p - obs.min_consumer_position() <= cap, "producer overran a consumer"
                samples += 1
                time.sleep(0.0005)
        prod = ring_env.result(pproc, pconn, 120)
        results = [ring_env.result(p, c, 120) for p, c in consumers]
    for res in results:
        assert res["count"] == total
        assert res["checksum"] == prod["checksum"]
    assert prod["max_outstanding"] <= cap
    # each read at most its own batch limit at a time (how many it found waiting, and so how
    # many batches it took, depends on the scheduler and is not asserted)
    for res, limit in zip(results, (256, 64, 128)):
        assert res["batches"] >= -(-total // limit)
