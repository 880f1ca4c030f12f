"""The per-stage latency histograms in shared memory (ringbuffer/latency.py): buckets, the
writer and the reader, and the egress marks a gateway uses to learn when the engine
published an event."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ringex.ringbuffer.latency import (
    MARKS,
    record_stages,
    EgressMarks,
    LatencyRecorder,
    latency_name,
    list_latency,
    read_latency,
    unlink_latency,
)
from ringex.ringbuffer.log_buckets import LINEAR, TOP, bucket_index, bucket_low, bucket_of


def test_compiled_buckets_equal_the_scalar_ones():
    edges = [0, 1, LINEAR - 1, LINEAR, LINEAR + 1]
    edges += [v for b in range(5, 46) for v in ((1 << b) - 1, 1 << b, (1 << b) + 1)]
    values = np.array(edges + [-7, TOP, TOP + 1, 1 << 60], np.int64)
    assert [bucket_index(int(v)) for v in values] == [bucket_of(int(v)) for v in values]  # the compiled one
    for v in (100, 12_345, 10**9):
        low = bucket_low(bucket_of(v))
        assert low <= v < low * 1.0625 + 1


@pytest.fixture
def name():
    n = latency_name(f"lt{os.getpid()}", "sequencer_to_engine_output")
    yield n
    unlink_latency(n)


def test_a_recorded_distribution_reads_back_within_the_bucket_resolution(name):
    r = LatencyRecorder(name)
    try:
        r.record(np.arange(1, 10_001, dtype=np.int64) * 100)  # 100 ns .. 1 ms
        r.record(np.array([5], np.int64))  # a short batch takes the per-value path
        first = read_latency(name)
        assert first.count == 10_001 and first.max_ns == 1_000_000
        for p, want in ((50, 500_000), (99, 990_000)):
            assert want * 0.93 <= first.percentile(p) <= want
        r.record(np.full(100, 7_000_000, np.int64))
        delta = read_latency(name).since(first)
        assert delta.count == 100 and 6_500_000 <= delta.percentile(50) <= 7_000_000
        assert [(p, s) for p, s, _ in list_latency(f"lt{os.getpid()}")] == [(f"lt{os.getpid()}", "sequencer_to_engine_output")]
    finally:
        r.close()
    assert not os.path.exists(f"/dev/shm/{name}")


def test_egress_marks_give_each_position_the_time_its_batch_was_published(name):
    r = LatencyRecorder(name)
    marks = EgressMarks(name)
    try:
        for end, t in ((10, 100), (25, 200), (30, 300)):
            r.mark(end, t)
        got = marks.published_at(np.array([0, 9, 10, 24, 25, 29, 30], np.int64))
        assert got.tolist() == [100, 100, 200, 200, 300, 300, 0]  # 30: not published yet
        for i in range(MARKS + 5):  # the marks wrap: the oldest batches are no longer known
            r.mark(40 + 2 * (i + 1), 1000 + i)
        got = marks.published_at(np.array([9, 41, 40 + 2 * (MARKS + 5) - 1], np.int64))
        assert got.tolist() == [0, 0, 1000 + MARKS + 4]
    finally:
        marks.close()
        r.close()


def test_a_missing_writer_is_not_an_error_for_the_reader(name):
    marks = EgressMarks(name)
    assert marks.published_at(np.array([1, 2], np.int64)).tolist() == [0, 0]
    marks.close()


def test_stage_latencies_of_a_batch_count_its_orders_only(name):
    from ringex.engine.wire import messages as m

    def slot(b: bytes) -> np.ndarray:
        r = np.zeros(m.SLOT_SIZE, np.uint8)
        r[:len(b)] = np.frombuffer(b, np.uint8)
        return r

    rows = np.stack([slot(m.NewOrder.encode(timestampNs=5_000, ingressNs=3_000, side="Buy", ordType="Limit")),
                     slot(m.Funds.encode(timestampNs=5_000, ingressNs=1, action="Deposit")),  # admin: not an order
                     slot(m.CancelOrder.encode(timestampNs=9_000, ingressNs=8_000))])
    rows.flags.writeable = False
    a, b = LatencyRecorder(name), LatencyRecorder(name + "-b")
    try:
        record_stages(rows.view("<i8"), 4, m.NewOrder.offset("timestampNs") // 8, m.NewOrder.offset("ingressNs") // 8,
                      10_000, a.words, b.words)
        to_sequencer, to_output = read_latency(name), read_latency(name + "-b")
        assert to_sequencer.count == 2 and to_sequencer.max_ns == 2_000 and to_sequencer.percentile(0) == bucket_low(bucket_of(1_000))
        assert to_output.count == 2 and to_output.max_ns == 5_000 and to_output.percentile(0) == bucket_low(bucket_of(1_000))
    finally:
        a.close()
        b.close()
