"""Counters in shared memory: layout, allocation, read-only readers, clear errors."""

from __future__ import annotations

import mmap
import multiprocessing
import os
import struct

import posix_ipc
import pytest

from ringex.ringbuffer.counters import (
    COUNTERS_PREFIX,
    HEADER_LENGTH,
    LABEL_LENGTH,
    RECORD_LENGTH,
    TYPE_BACK_PRESSURE,
    TYPE_USER,
    CountersError,
    CountersFormatError,
    CountersManager,
    CountersNotFoundError,
    CountersReader,
    discover_counters,
)
from test_agent_kit import WAIT_S, cleanup_shm, unique_name, wait_for


@pytest.fixture
def name():
    return unique_name("ctr")


def test_allocate_update_and_read_back(name):
    with CountersManager(name, capacity=8) as mgr:
        a = mgr.allocate("sequencer: messages")
        b = mgr.allocate("sequencer: back-pressure", TYPE_BACK_PRESSURE)
        a.increment()
        a.increment(41)
        b.set(7)
        assert (a.get(), b.get()) == (42, 7)
        assert (a.id, b.id) == (0, 1)
        assert b.type_id == TYPE_BACK_PRESSURE and a.type_id == TYPE_USER
        with CountersReader(name) as reader:
            assert list(reader) == [
                (0, "sequencer: messages", 42),
                (1, "sequencer: back-pressure", 7),
            ]
            assert reader.records()[1].type_id == TYPE_BACK_PRESSURE
            assert reader.value("sequencer: messages") == 42
            assert reader.owner_pid == os.getpid()
            assert reader.capacity == 8
            a.increment()
            assert reader.get(a.id) == 43  # live, no refresh call needed
        assert name in discover_counters()
    assert not os.path.exists(f"/dev/shm/{name}")


def test_values_are_aligned_in_their_own_record(name):
    with CountersManager(name, capacity=4) as mgr:
        counters = [mgr.allocate(f"c{i}") for i in range(4)]
        offsets = [c._index * 8 for c in counters]
        assert offsets == [HEADER_LENGTH + i * RECORD_LENGTH for i in range(4)]
        # 128-byte records: no two values share a cache line (or its prefetch pair).
        assert all(o % 128 == 0 for o in offsets)


def test_free_then_reallocate_reuses_slot_with_zero_value(name):
    with CountersManager(name, capacity=2) as mgr, CountersReader(name) as reader:
        a = mgr.allocate("a")
        b = mgr.allocate("b")
        a.set(99)
        a.free()
        assert [r[1] for r in reader] == ["b"]  # a freed record is invisible
        c = mgr.allocate("c")
        assert c.id == a.id and c.get() == 0
        assert [r[1:] for r in reader] == [("c", 0), ("b", 0)]
        with pytest.raises(CountersError, match="full"):
            mgr.allocate("d")
        assert b.get() == 0


def test_labels_are_truncated_on_a_character_boundary(name):
    with CountersManager(name, capacity=2) as mgr, CountersReader(name) as reader:
        long = "é" * 100  # 200 bytes of UTF-8
        c = mgr.allocate(long)
        assert len(c.label.encode()) <= LABEL_LENGTH
        assert reader.label(c.id) == c.label == "é" * (LABEL_LENGTH // 2)
        with pytest.raises(ValueError, match="NUL"):
            mgr.allocate("bad\x00label")


def test_reader_cannot_write(name):
    with CountersManager(name, capacity=2) as mgr, CountersReader(name) as reader:
        c = mgr.allocate("x")
        c.set(5)
        with pytest.raises(TypeError):
            reader.buffer[HEADER_LENGTH] = 1
        with pytest.raises(TypeError):
            reader._longs[HEADER_LENGTH // 8] = 1
        with pytest.raises(TypeError):
            reader._mm.write(b"x")
        with pytest.raises(TypeError):
            struct.pack_into("<q", reader._mm, HEADER_LENGTH, 1)
        assert c.get() == 5 and reader.get(c.id) == 5


def test_closed_manager_unlinks_and_handles_fail_loudly(name):
    mgr = CountersManager(name, capacity=2)
    c = mgr.allocate("x")
    reader = CountersReader(name)
    c.set(11)
    mgr.close()
    assert not os.path.exists(f"/dev/shm/{name}")
    with pytest.raises(ValueError):
        c.increment()
    with pytest.raises(CountersError, match="closed"):
        mgr.allocate("y")
    # The reader's mapping outlives the unlink: the final values stay readable.
    assert reader.value("x") == 11
    reader.close()
    mgr.close()  # idempotent


def test_duplicate_name_is_refused(name):
    with CountersManager(name, capacity=1):
        with pytest.raises(CountersError, match="already exists"):
            CountersManager(name, capacity=1)


def _own_and_die(name: str) -> None:
    mgr = CountersManager(name, capacity=4)
    mgr.allocate("left behind").increment(7)
    os.kill(os.getpid(), 9)  # SIGKILL: no close, no unlink


def test_an_object_left_by_a_killed_owner_is_taken_over(name):
    """An owner SIGKILLed (and nobody to reap its object, as when a whole exchange is killed)
    leaves its counters object behind; the next owner of the name takes it over rather than
    refusing to start. One whose owner lives is still refused."""
    p = multiprocessing.get_context("spawn").Process(target=_own_and_die, args=(name,))
    p.start()
    p.join(WAIT_S)
    assert p.exitcode == -9
    try:
        with CountersReader(name) as left:
            assert left.value("left behind") == 7  # it is there
        with CountersManager(name, capacity=2) as mgr:
            mgr.allocate("fresh").increment()
            with CountersReader(name) as reader:
                assert [label for _, label, _ in reader] == ["fresh"]
            with pytest.raises(CountersError, match="already exists"):
                CountersManager(name, capacity=2)  # its owner (this process) is alive
    finally:
        cleanup_shm(name)


def test_missing_object_is_a_clear_error(name):
    with pytest.raises(CountersNotFoundError, match="no counters object"):
        CountersReader(name)
    with pytest.raises(FileNotFoundError):
        CountersReader(name)


@pytest.fixture
def raw_object(name):
    """Makes a shared-memory object called ``name`` holding the given bytes (not a counters
    manager's, so nothing of ringex removes it: the fixture does)."""

    def make(data: bytes) -> None:
        shm = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, size=len(data))
        try:
            with mmap.mmap(shm.fd, len(data)) as mm:
                mm[:] = data
        finally:
            shm.close_fd()

    yield make
    cleanup_shm(name)


def test_garbage_is_a_clear_error(name, raw_object):
    raw_object(b"\xab" * 4096)
    with pytest.raises(CountersFormatError, match="not a ringex counters object"):
        CountersReader(name)


def test_too_small_is_a_clear_error(name, raw_object):
    raw_object(b"\x00" * 16)
    with pytest.raises(CountersFormatError, match="smaller than"):
        CountersReader(name)


def test_wrong_version_is_a_clear_error(name):
    with CountersManager(name, capacity=2) as mgr:
        mgr._ints[8 // 4] = 99  # the version field
        with pytest.raises(CountersFormatError, match="version 99"):
            CountersReader(name)


def test_capacity_must_be_positive(name):
    with pytest.raises(ValueError):
        CountersManager(name, capacity=0)
    assert not os.path.exists(f"/dev/shm/{name}")


def test_discovery_uses_the_prefix(name):
    assert name.startswith(COUNTERS_PREFIX)
    with CountersManager(name, capacity=1):
        assert name in discover_counters()
    assert name not in discover_counters()


def _writer(name: str, ready, stop) -> None:
    with CountersManager(name, capacity=4) as mgr:
        c = mgr.allocate("writer: ticks")
        ready.set()
        while not stop.wait(0.002):
            c.increment()


def test_counters_read_live_from_another_process(name):
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_writer, args=(name, ready, stop), daemon=True)
    child.start()
    try:
        assert ready.wait(WAIT_S), "writer did not start"
        with CountersReader(name) as reader:
            assert reader.owner_pid == child.pid
            first = reader.value("writer: ticks")
            wait_for(lambda: reader.value("writer: ticks") > first + 5, what="ticks to advance")
            stop.set()
            child.join(WAIT_S)
            assert child.exitcode == 0
            final = reader.value("writer: ticks")
            assert final > first
    finally:
        stop.set()
        child.join(WAIT_S)
        if child.is_alive():
            child.kill()
            child.join(WAIT_S)
    assert not os.path.exists(f"/dev/shm/{name}")
