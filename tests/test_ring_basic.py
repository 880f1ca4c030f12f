"""In-process ring tests: API semantics, layout, attach errors, stale rings, platform."""

from __future__ import annotations

import mmap
import os
import platform
from collections import deque

import numpy as np
import posix_ipc
import pytest
from hypothesis import given, settings, strategies as st

from ringex.ringbuffer import descriptor as d
from ringex.ringbuffer.errors import (
    RingBusyError,
    RingError,
    RingExistsError,
    RingFormatError,
    RingLayoutError,
    RingNotFoundError,
    RingReadOnlyError,
    RingVersionError,
    StaleRingError,
    UnsupportedPlatformError,
)
from ringex.ringbuffer.liveness import ConsumerState
from ringex.ringbuffer.mapping import ring_exists, unlink_ring
from ringex.ringbuffer.producer import Offer
from ringex.ringbuffer.ring import Ring
from test_ring_support import RingEnv, attach_consumer_and_wait, create_and_die, ring_env  # noqa: F401
from test_ring_support import wait_until


# --- descriptor ---------------------------------------------------------------------------

def test_descriptor_offsets_are_aligned_and_cursors_own_cache_line_pairs():
    lay = d.RingLayout(slot_size=64, capacity=1024, consumers=3)
    cursors = [d.PRODUCER_CURSOR_OFFSET] + [d.consumer_cursor_offset(i) for i in range(3)]
    for a, b in zip(cursors[1:], cursors[2:]):
        assert b - a == d.CACHE_LINE_PAIR_SIZE
    # between the producer's pair and the first consumer's: the waiting words' own lines
    assert cursors[1] - cursors[0] == d.CACHE_LINE_PAIR_SIZE + d.WAITING_WORDS_LENGTH
    waiting = [d.consumer_waiting_offset(i) for i in range(d.MAX_CONSUMERS)]
    assert waiting[0] == d.PRODUCER_PAIR_OFFSET + d.CACHE_LINE_PAIR_SIZE
    assert waiting[-1] + d.WORD_SIZE <= d.consumer_pair_offset(0)
    for off in cursors:
        assert off % d.CACHE_LINE_PAIR_SIZE == 0
    assert d.PRODUCER_PAIR_OFFSET >= d.HEADER_LENGTH
    assert lay.data_offset % d.CACHE_LINE_PAIR_SIZE == 0
    assert lay.data_offset >= d.consumer_pair_offset(2) + d.CACHE_LINE_PAIR_SIZE
    assert lay.total_length == lay.data_offset + 64 * 1024
    assert lay.slot_offset(1025) == lay.data_offset + 64
    # heartbeat and pid sit in the consumer's own pair, away from its cursor's line
    for i in range(3):
        pair = d.consumer_pair_offset(i)
        assert pair + d.CACHE_LINE_SIZE <= d.consumer_heartbeat_offset(i) < pair + 128
        assert pair + d.CACHE_LINE_SIZE <= d.consumer_pid_offset(i) < pair + 128


@pytest.mark.parametrize(
    "slot_size, capacity, consumers",
    [(60, 1024, 1), (0, 1024, 1), (64, 1000, 1), (64, 1, 1), (64, 1024, 0), (64, 1024, 65)],
)
def test_invalid_layouts_are_refused(ring_env, slot_size, capacity, consumers):
    name = ring_env.name("bad")
    with pytest.raises(RingLayoutError, match=name):
        Ring.create(name, slot_size=slot_size, capacity=capacity, consumers=consumers)
    assert not ring_exists(name)


# --- producer / consumer semantics --------------------------------------------------------

def _resident_kib(path: str) -> int:
    """Rss of this process's mappings of ``path``, summed (from /proc/self/smaps)."""
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
    starts = [i for i, line in enumerate(lines) if line.endswith(path)]
    assert starts, f"{path} is not mapped"
    return sum(next(int(x.split()[1]) for x in lines[i + 1:] if x.startswith("Rss:")) for i in starts)


@pytest.mark.skipif(not hasattr(mmap, "MAP_POPULATE"), reason="Linux only")
def test_rings_are_resident_from_the_start_no_first_touch_in_a_duty_cycle(ring_env):
    name = ring_env.name("populate")
    ring = Ring.create(name, slot_size=128, capacity=1 << 14)  # 2 MiB of slots, none touched
    other = Ring.attach(name)
    try:
        whole = ring.layout.total_length // 1024
        assert _resident_kib("/dev/shm" + name) >= 2 * whole  # both mappings, every page
    finally:
        other.close()
        ring.close()


def test_offer_poll_roundtrip_and_padding(ring_env):
    name = ring_env.name()
    with Ring.create(name, slot_size=64, capacity=8) as ring:
        prod = ring.producer()
        cons = ring.consumer(0)
        assert prod.offer(bytes(range(64))) is Offer.OK
        assert prod.offer(b"\xff" * 64)
        assert prod.offer(b"short")
        got = []
        assert cons.poll(lambda m: got.append(bytes(m))) == 3
        assert got[0] == bytes(range(64))
        assert got[2] == b"short" + bytes(59)  # zero-padded, not stale bytes
        with pytest.raises(ValueError, match="does not fit"):
            prod.offer(bytes(65))
        assert cons.position == 3 == ring.consumer_position(0) == ring.producer_position


def test_back_pressure_never_overwrites_in_process(ring_env):
    name = ring_env.name()
    with Ring.create(name, slot_size=16, capacity=4) as ring:
        prod, cons = ring.producer(), ring.consumer(0)
        for i in range(4):
            assert prod.offer(i.to_bytes(16, "little")) is Offer.OK
        assert prod.offer(b"x" * 16) is Offer.BACK_PRESSURED
        assert not prod.offer(b"x" * 16)
        head, tail = prod.claim(3)
        assert len(head) + len(tail) == 0
        assert [int.from_bytes(bytes(r[:8]), "little") for r in ring.slots()] == [0, 1, 2, 3]
        head, tail = cons.read(2)
        cons.commit(2)
        assert prod.offer((4).to_bytes(16, "little")) is Offer.OK


def test_claim_publish_wraps_into_two_regions(ring_env):
    name = ring_env.name()
    with Ring.create(name, slot_size=8, capacity=8) as ring:
        prod, cons = ring.producer(), ring.consumer(0)
        assert prod.offer_batch(np.arange(6, dtype="<u8").view(np.uint8).reshape(6, 8)) == 6
        head, tail = cons.read()
        assert head.shape == (6, 8) and tail.shape == (0, 8)
        assert not head.flags.writeable  # consumers get read-only views
        cons.commit(6)
        head, tail = prod.claim(5)  # slots 6,7 then 0,1,2
        assert head.shape == (2, 8) and tail.shape == (3, 8)
        assert np.shares_memory(head, ring.slots()) and np.shares_memory(tail, ring.slots())
        head.view("<u8")[:, 0] = [6, 7]
        tail.view("<u8")[:, 0] = [8, 9, 10]
        assert cons.available() == 0  # nothing visible before publish
        prod.publish(5)
        head, tail = cons.read(limit=100)
        assert list(head.view("<u8")[:, 0]) == [6, 7]
        assert list(tail.view("<u8")[:, 0]) == [8, 9, 10]
        cons.commit(5)
        with pytest.raises(ValueError):
            prod.publish(1)  # nothing claimed
        with pytest.raises(ValueError):
            cons.commit(1)  # nothing read


def test_poll_batch_hands_regions_with_first_sequence(ring_env):
    name = ring_env.name()
    with Ring.create(name, slot_size=8, capacity=4) as ring:
        prod, cons = ring.producer(), ring.consumer(0)
        rows = lambda a, b: np.arange(a, b, dtype="<u8").view(np.uint8).reshape(b - a, 8)
        prod.offer_batch(rows(0, 3))
        cons.poll_batch(lambda block, first: None)
        prod.offer_batch(rows(3, 7))
        calls = []
        assert cons.poll_batch(lambda b, f: calls.append((f, list(b.view("<u8")[:, 0])))) == 4
        assert calls == [(3, [3]), (4, [4, 5, 6])]


def test_handler_exception_commits_only_finished_messages(ring_env):
    name = ring_env.name()
    with Ring.create(name, slot_size=8, capacity=8) as ring:
        prod, cons = ring.producer(), ring.consumer(0)
        for i in range(5):
            prod.offer(i.to_bytes(8, "little"))

        def handler(slot):
            if int.from_bytes(slot, "little") == 2:
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            cons.poll(handler)
        assert cons.position == 2 == ring.consumer_position(0)
        got = []
        cons.poll(lambda s: got.append(int.from_bytes(s, "little")))
        assert got == [2, 3, 4]


def test_offer_batch_structured_and_list(ring_env):
    name = ring_env.name()
    dt = np.dtype([("a", "<i8"), ("b", "<i4"), ("c", "<i4")])
    with Ring.create(name, slot_size=32, capacity=8) as ring:
        prod, cons = ring.producer(), ring.consumer(0)
        recs = np.zeros(3, dt)
        recs["a"] = [1, 2, 3]
        assert prod.offer_batch(recs) == 3
        assert prod.offer_batch([b"x" * 32] * 10) == 5  # the rest is back-pressured
        head, _ = cons.read()
        assert list(head[:3, :16].copy().view(dt)["a"].ravel()) == [1, 2, 3]
        assert not head[:3, 16:].any()


def test_one_to_many_gates_on_slowest_in_process(ring_env):
    name = ring_env.name()
    with Ring.create(name, slot_size=8, capacity=4, consumers=2) as ring:
        prod, c0, c1 = ring.producer(), ring.consumer(0), ring.consumer(1)
        assert prod.offer_batch(np.zeros((4, 8), np.uint8)) == 4
        h, t = c0.read()
        c0.commit(len(h) + len(t))
        assert not prod.offer(bytes(8))  # consumer 1 still holds every slot
        c1.read(1)
        c1.commit(1)
        assert prod.offer(bytes(8)) and not prod.offer(bytes(8))
        assert ring.min_consumer_position() == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["offer", "batch", "read"]), st.integers(0, 9)),
                max_size=60))
def test_ring_matches_a_queue_model(ops):
    env = RingEnv()
    try:
        with Ring.create(env.name("model"), slot_size=8, capacity=8) as ring:
            prod, cons = ring.producer(), ring.consumer(0)
            model: deque[int] = deque()
            nxt = 0
            for op, n in ops:
                if op == "offer":
                    ok = prod.offer(nxt.to_bytes(8, "little"))
                    assert bool(ok) == (len(model) < 8)
                    if ok:
                        model.append(nxt)
                        nxt += 1
                elif op == "batch":
                    h, t = prod.claim(n)
                    k = len(h) + len(t)
                    assert k == min(n, 8 - len(model))
                    vals = np.arange(nxt, nxt + k, dtype="<u8")
                    h.view("<u8")[:, 0] = vals[: len(h)]
                    t.view("<u8")[:, 0] = vals[len(h):]
                    prod.publish(k)
                    model.extend(range(nxt, nxt + k))
                    nxt += k
                else:
                    h, t = cons.read(n)
                    got = list(h.view("<u8")[:, 0]) + list(t.view("<u8")[:, 0])
                    assert got == [model.popleft() for _ in range(len(got))]
                    assert len(got) == min(n, len(got) + len(model))
                    cons.commit(len(got))
    finally:
        env.cleanup()


# --- attach errors ------------------------------------------------------------------------

def test_attach_missing_ring(ring_env):
    name = ring_env.name("missing")
    with pytest.raises(RingNotFoundError, match=f"ring '{name}' does not exist"):
        Ring.attach(name)
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError
        Ring.observe(name)


def _raw_object(name: str, data: bytes) -> None:
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=len(data))
    with mmap.mmap(shm.fd, len(data)) as mm:
        mm[:] = data
    shm.close_fd()


def test_attach_garbage_and_tiny_objects(ring_env):
    garbage = ring_env.name("garbage")
    _raw_object(garbage, os.urandom(8) + bytes(4088))
    with pytest.raises(RingFormatError, match=f"ring '{garbage}' is not a ringex ring: bad magic"):
        Ring.attach(garbage)
    tiny = ring_env.name("tiny")
    _raw_object(tiny, b"RINGEX")
    with pytest.raises(RingFormatError, match="smaller than the 128-byte header"):
        Ring.attach(tiny)
    zero = ring_env.name("zero")
    _raw_object(zero, bytes(4096))
    with pytest.raises(RingFormatError, match="magic is 0"):
        Ring.attach(zero, wait_s=0.05)
    # and a garbage object blocks creation with a clear error, stale or not
    with pytest.raises(RingExistsError, match="not a ringex ring"):
        Ring.create(garbage, reclaim=True)


def _poke(name: str, offset: int, value: int) -> None:
    shm = posix_ipc.SharedMemory(name)
    with mmap.mmap(shm.fd, shm.size) as mm:
        mm[offset:offset + 8] = value.to_bytes(8, "little", signed=True)
    shm.close_fd()


def test_attach_wrong_version(ring_env):
    name = ring_env.name("ver")
    with Ring.create(name, slot_size=64, capacity=16):
        _poke(name, d.VERSION_OFFSET, d.VERSION + 1)
        with pytest.raises(RingVersionError, match=f"'{name}' has layout version {d.VERSION + 1}"):
            Ring.attach(name)


def test_attach_corrupt_header(ring_env):
    name = ring_env.name("corrupt")
    with Ring.create(name, slot_size=64, capacity=16):
        _poke(name, d.CAPACITY_OFFSET, 1 << 20)
        with pytest.raises(RingFormatError, match="corrupt header|do not match"):
            Ring.attach(name)


@pytest.mark.parametrize(
    "expect, message",
    [
        ({"slot_size": 128}, "slot size is 64, expected 128"),
        ({"capacity": 32}, "capacity is 16, expected 32"),
        ({"consumers": 3}, "number of consumers is 2, expected 3"),
    ],
)
def test_attach_layout_mismatch(ring_env, expect, message):
    name = ring_env.name("layout")
    with Ring.create(name, slot_size=64, capacity=16, consumers=2):
        with pytest.raises(RingLayoutError, match=f"ring '{name}' layout mismatch: {message}"):
            Ring.attach(name, **expect)
        with Ring.attach(name, slot_size=64, capacity=16, consumers=2) as ok:
            assert ok.layout == d.RingLayout(64, 16, 2)


def test_create_over_live_ring_is_refused(ring_env):
    name = ring_env.name("live")
    with Ring.create(name, capacity=16):
        with pytest.raises(RingExistsError, match="already exists and is in use"):
            Ring.create(name, capacity=16, reclaim=True)  # never reclaims a live ring


def test_stale_ring_detected_and_reclaimed(ring_env):
    name = ring_env.name("stale")
    proc, conn = ring_env.spawn(create_and_die, name)
    dead_pid = ring_env.result(proc, conn)["pid"]
    wait_until(lambda: not proc.is_alive(), 10, "creator exit")
    assert ring_exists(name)
    with pytest.raises(StaleRingError, match=f"creator pid {dead_pid} is no longer running") as ei:
        Ring.create(name, capacity=16)
    assert ei.value.creator_pid == dead_pid and ei.value.ring_name == name
    assert "reclaim=True" in str(ei.value)
    with Ring.create(name, slot_size=128, capacity=16, reclaim=True) as ring:
        assert ring.creator_pid == os.getpid() and ring.slot_size == 128
    assert not ring_exists(name)


def test_close_unlinks_and_attachers_do_not(ring_env):
    name = ring_env.name("close")
    ring = Ring.create(name, capacity=16)
    other = Ring.attach(name)
    other.close()
    assert ring_exists(name)
    held = ring.consumer(0).read()  # a view still held does not block close
    ring.close()
    assert not ring_exists(name)
    del held
    ring.close()  # idempotent
    with pytest.raises(RingError, match="closed"):
        ring.producer()
    name2 = ring_env.name("unlink")
    with Ring.create(name2, capacity=16) as r2:
        assert r2.unlink() and not ring_exists(name2)
    assert not unlink_ring(name2)


def test_roles_busy_and_read_only(ring_env):
    name = ring_env.name("roles")
    with Ring.create(name, capacity=16, consumers=2) as ring:
        proc, conn = ring_env.spawn(attach_consumer_and_wait, name, 1, 30)
        wait_until(lambda: ring.consumer_info(1).pid == proc.pid, 20, "child attach")
        with pytest.raises(RingBusyError, match=f"consumer 1 is held by live process {proc.pid}"):
            ring.consumer(1)
        assert ring.consumer(1, takeover=True).index == 1
        proc.kill()
        proc.join(10)
        with Ring.observe(name) as obs:
            with pytest.raises(RingReadOnlyError, match="read-only"):
                obs.producer()
            with pytest.raises(RingReadOnlyError):
                obs.consumer(0)
            assert obs.consumer_state(0) is ConsumerState.ABSENT
        with pytest.raises(IndexError):
            ring.consumer(2)


# --- platform -----------------------------------------------------------------------------

@pytest.mark.parametrize("machine", ["aarch64", "arm64", "ppc64le", "riscv64", ""])
def test_non_x86_is_refused(ring_env, monkeypatch, machine):
    name = ring_env.name("arch")
    with Ring.create(name, capacity=16):
        monkeypatch.setattr(platform, "machine", lambda: machine)
        with pytest.raises(UnsupportedPlatformError, match="x86-64 total store order"):
            Ring.attach(name)
        with pytest.raises(UnsupportedPlatformError, match=f"ring '{name}'"):
            Ring.observe(name)
        other = ring_env.name("arch2")
        with pytest.raises(UnsupportedPlatformError, match="TSO"):
            Ring.create(other)
        assert not ring_exists(other)
        monkeypatch.setattr(platform, "machine", lambda: "x86_64")
        Ring.attach(name).close()
