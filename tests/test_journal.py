"""The engine's input journal: round trips, durability policies, torn tails, corruption."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringex.engine.storage import journal_format as jf
from ringex.engine.storage import journal_writer as jw
from ringex.engine.storage.journal_format import (
    RECORD_HEADER,
    RECORD_HEADER_LENGTH,
    RECORD_MAGIC,
    SEGMENT_HEADER_LENGTH,
    JournalCorruptError,
    JournalLockedError,
    JournalSequenceError,
    list_segments,
    segment_name,
)
from ringex.engine.storage.journal_reader import JournalReader, replay_from
from ringex.engine.storage.journal_repair import repair_journal
from ringex.engine.storage.journal_retention import retire_segments
from ringex.engine.storage.journal_writer import JournalWriter

SLOT = 64


def batch(first_seq: int, count: int, slot: int = SLOT) -> np.ndarray:
    """``count`` slots whose bytes depend on their sequence (so misplaced data shows)."""
    out = np.zeros((count, slot // 8), dtype="<i8")
    seqs = np.arange(first_seq, first_seq + count, dtype="<i8")
    out[:, 0] = seqs
    out[:, 1:] = (seqs[:, None] * 1_000_003 + np.arange(1, slot // 8)) % 251
    return out


def write_batches(directory, sizes, *, segment_bytes=1 << 20, durability="none", start=0,
                  slot=SLOT):
    """Append one batch per size; return the appended records as (first_seq, count, bytes)."""
    records = []
    seq = start
    with JournalWriter(directory, segment_bytes, durability, slot_size=slot) as w:
        for k in sizes:
            b = batch(seq, k, slot)
            w.append(seq, b, k)
            records.append((seq, k, b.tobytes()))
            seq += k
    return records


def read_all(directory, **kw):
    return [(r.first_seq, r.count, bytes(r.payload)) for r in JournalReader(directory).records(**kw)]


def record_bounds(path: Path) -> list[tuple[int, int]]:
    """(start, end) byte offsets of every record in a (healthy) segment file."""
    data = path.read_bytes()
    out = []
    off = SEGMENT_HEADER_LENGTH
    while off < len(data):
        length = RECORD_HEADER.unpack_from(data, off)[1]
        end = off + RECORD_HEADER_LENGTH + length
        out.append((off, end))
        off = end
    return out


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def craft_record(first_seq: int, count: int, payload: bytes) -> bytes:
    body = RECORD_HEADER.pack(RECORD_MAGIC, len(payload), first_seq, count,
                              zlib.crc32(payload), 0, 0)[:jf.RECORD_HEADER_CRC_SPAN]
    return body + zlib.crc32(body).to_bytes(4, "little") + payload


# --- round trips --------------------------------------------------------------------------


def test_round_trip_across_segment_rolls(tmp_path):
    rng = np.random.default_rng(7)
    sizes = [int(x) for x in rng.integers(1, 40, size=300)]
    records = write_batches(tmp_path, sizes, segment_bytes=16 << 10)
    segs = list_segments(tmp_path)
    assert len(segs) >= 5
    names = [p.name for _, p in segs]
    assert names == sorted(names)
    for first, path in segs:
        assert path.name == segment_name(first)
        assert path.stat().st_size <= 16 << 10
    assert read_all(tmp_path) == records
    reader = JournalReader(tmp_path)
    total = sum(sizes)
    assert reader.first_seq == 0
    assert reader.last_seq == total - 1
    assert reader.next_seq == total
    assert reader.verify() == total
    assert reader.tail_damage is None


def test_oversize_batch_gets_its_own_segment(tmp_path):
    records = write_batches(tmp_path, [2, 100, 3], segment_bytes=1024)
    assert [first for first, _ in list_segments(tmp_path)] == [0, 2, 102]
    assert read_all(tmp_path) == records


def test_reopen_continues_in_last_segment(tmp_path):
    first = write_batches(tmp_path, [3, 4, 5])
    with JournalWriter(tmp_path, 1 << 20, "none") as w:
        assert w.next_seq == 12 and w.last_seq == 11 and w.slot_size == SLOT
        w.append(12, batch(12, 2), 2)
    assert len(list_segments(tmp_path)) == 1
    assert read_all(tmp_path) == first + [(12, 2, batch(12, 2).tobytes())]


def test_records_from_and_to_split_at_message_granularity(tmp_path):
    records = write_batches(tmp_path, [5, 5, 5, 5], segment_bytes=900)
    allbytes = b"".join(r[2] for r in records)
    for lo in range(0, 21):
        for hi in (lo, lo + 1, lo + 7, 20, 25):
            got = read_all(tmp_path, from_seq=lo, to_seq=hi)
            msgs = [(s, c) for s, c, _ in got]
            expect_n = max(0, min(hi, 20) - lo)
            assert sum(c for _, c in msgs) == expect_n
            if got:
                assert got[0][0] == lo
            assert b"".join(p for _, _, p in got) == allbytes[lo * SLOT:(lo + expect_n) * SLOT]
    got = list(replay_from(tmp_path, 7))
    assert (got[0].first_seq, got[0].count) == (7, 3)
    assert sum(r.count for r in got) == 13


def test_iter_messages(tmp_path):
    write_batches(tmp_path, [3, 1, 4, 1, 5], segment_bytes=700)
    msgs = list(JournalReader(tmp_path).iter_messages(2, 11))
    assert [s for s, _ in msgs] == list(range(2, 11))
    for s, view in msgs:
        assert len(view) == SLOT
        assert bytes(view) == batch(s, 1).tobytes()


def test_nonzero_start_and_first_seq_pin(tmp_path):
    with JournalWriter(tmp_path, 1 << 20, "none", slot_size=SLOT, first_seq=1000) as w:
        assert w.next_seq == 1000 and w.last_seq is None
        with pytest.raises(JournalSequenceError):
            w.append(0, batch(0, 1), 1)
        w.append(1000, batch(1000, 2), 2)
    assert list_segments(tmp_path)[0][0] == 1000
    with pytest.raises(JournalSequenceError):
        JournalWriter(tmp_path, 1 << 20, "none", first_seq=5)
    with pytest.raises(JournalCorruptError, match="starts at seq 1000"):
        list(replay_from(tmp_path, 10))


def test_payload_forms_and_scatter_gather(tmp_path):
    b = batch(0, 6)
    raw = b.tobytes()
    with JournalWriter(tmp_path, 1 << 20, "none") as w:  # slot size from the first append
        w.append(0, raw[:2 * SLOT], 2)
        assert w.slot_size == SLOT
        w.append(2, memoryview(raw)[2 * SLOT:3 * SLOT], 1)
        w.append(3, [b[3:4], bytearray(raw[4 * SLOT:6 * SLOT])], 3)  # two buffers, one record
        w.append(6, b"", 0)  # an empty batch is a no-op
        with pytest.raises(ValueError):
            w.append(6, b"x" * (SLOT + 1), 1)
        with pytest.raises(ValueError):
            w.append(6, b[:, ::2], 1)  # not contiguous
    assert read_all(tmp_path) == [(0, 2, raw[:128]), (2, 1, raw[128:192]), (3, 3, raw[192:])]


def test_structured_slots(tmp_path):
    dt = np.dtype([("seq", "<i8"), ("kind", "u1"), ("pad", "u1", (55,))])
    slots = np.zeros(4, dtype=dt)
    slots["seq"] = np.arange(4)
    slots["kind"] = [1, 2, 3, 4]
    with JournalWriter(tmp_path, 1 << 20, "batch", slot_size=64) as w:
        w.append(0, slots, 4)
    (rec,) = JournalReader(tmp_path).records()
    back = np.frombuffer(rec.payload, dtype=dt)
    assert (back == slots).all()


def test_non_contiguous_append_raises(tmp_path):
    with JournalWriter(tmp_path, 1 << 20, "none", slot_size=SLOT) as w:
        w.append(0, batch(0, 3), 3)
        for bad in (0, 2, 4, 100):
            with pytest.raises(JournalSequenceError, match="non-contiguous"):
                w.append(bad, batch(bad, 1), 1)
        w.append(3, batch(3, 1), 1)
    with JournalWriter(tmp_path, 1 << 20, "none") as w:
        with pytest.raises(JournalSequenceError):
            w.append(5, batch(5, 1), 1)
        w.append(4, batch(4, 1), 1)
    assert [r[:2] for r in read_all(tmp_path)] == [(0, 3), (3, 1), (4, 1)]


def test_one_writer_per_directory(tmp_path):
    with JournalWriter(tmp_path, 1 << 20, "none", slot_size=SLOT):
        with pytest.raises(JournalLockedError):
            JournalWriter(tmp_path, 1 << 20, "none", slot_size=SLOT)
    JournalWriter(tmp_path, 1 << 20, "none", slot_size=SLOT).close()


def test_empty_and_missing_directory(tmp_path):
    assert read_all(tmp_path) == []
    assert JournalReader(tmp_path / "nope").next_seq is None
    assert repair_journal(tmp_path / "nope").next_seq is None
    with JournalWriter(tmp_path / "j", 1 << 20, "batch", slot_size=SLOT) as w:
        assert w.next_seq is None and w.last_seq is None
    assert read_all(tmp_path / "j") == []


def test_closed_writer_refuses(tmp_path):
    w = JournalWriter(tmp_path, 1 << 20, "none", slot_size=SLOT)
    w.close()
    w.close()
    with pytest.raises(jf.JournalError):
        w.append(0, batch(0, 1), 1)


# --- durability ---------------------------------------------------------------------------


@pytest.fixture
def sync_counter(monkeypatch):
    calls = []
    real = os.fdatasync

    def counting(fd):
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    return calls


def test_durability_batch_syncs_once_per_append(tmp_path, sync_counter):
    w = JournalWriter(tmp_path, 1 << 20, "batch", slot_size=SLOT)
    for i in range(10):
        w.append(i * 3, batch(i * 3, 3), 3)
        assert len(sync_counter) == i + 1
        assert not w.pending_sync
    w.close()
    assert len(sync_counter) == 10  # nothing pending at close


def test_durability_none_syncs_only_at_close(tmp_path, sync_counter):
    w = JournalWriter(tmp_path, 1 << 20, "none", slot_size=SLOT)
    for i in range(10):
        w.append(i, batch(i, 1), 1)
    assert sync_counter == [] and w.pending_sync
    w.close()
    assert len(sync_counter) == 1


def test_durability_interval(tmp_path, sync_counter, monkeypatch):
    clock = [0]
    monkeypatch.setattr(jw, "_monotonic_ns", lambda: clock[0])
    w = JournalWriter(tmp_path, 1 << 20, "interval", slot_size=SLOT, interval_ms=10)
    ms = 1_000_000
    for i in range(25):  # one append per millisecond
        clock[0] = i * ms
        w.append(i, batch(i, 1), 1)
    assert len(sync_counter) == 2  # at 10 ms and 20 ms
    assert w.pending_sync
    clock[0] = 25 * ms
    assert not w.maybe_sync() and len(sync_counter) == 2  # only 5 ms since the last
    clock[0] = 30 * ms
    assert w.maybe_sync() and len(sync_counter) == 3 and not w.pending_sync
    assert not w.maybe_sync()  # nothing pending
    w.append(25, batch(25, 1), 1)
    w.sync()
    assert len(sync_counter) == 4 and not w.pending_sync
    w.sync()
    assert len(sync_counter) == 4
    w.close()
    assert len(sync_counter) == 4


def test_roll_syncs_old_segment_and_directory(tmp_path, sync_counter, monkeypatch):
    dir_syncs = []
    real = jw.fsync_directory
    monkeypatch.setattr(jw, "fsync_directory", lambda d: (dir_syncs.append(d), real(d)))
    w = JournalWriter(tmp_path, 1024, "none", slot_size=SLOT)
    seq = 0
    for _ in range(20):
        w.append(seq, batch(seq, 3), 3)
        seq += 3
    n_segments = len(list_segments(tmp_path))
    assert n_segments > 3
    assert len(dir_syncs) == n_segments  # one per segment created
    assert len(sync_counter) == n_segments - 1  # each finished segment synced before the next
    w.close()


# --- torn tails ---------------------------------------------------------------------------


def test_torn_tail_at_every_offset_of_last_record(tmp_path, caplog):
    src = tmp_path / "src"
    records = write_batches(src, [2, 3, 1, 4, 3], segment_bytes=700)
    last_first, last_path = list_segments(src)[-1]
    start, end = record_bounds(last_path)[-1]
    assert start > SEGMENT_HEADER_LENGTH  # the last segment holds more than one record
    for cut in range(start + 1, end):
        work = tmp_path / f"cut{cut}"
        shutil.copytree(src, work)
        path = work / last_path.name
        os.truncate(path, cut)
        # A read-only reader stops quietly before the torn record.
        reader = JournalReader(work)
        assert read_all(work) == records[:-1]
        list(reader.records())
        assert reader.tail_damage is not None and reader.tail_damage.offset == start
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ringex.engine.storage.journal_repair"):
            w = JournalWriter(work, 700, "batch")
        assert path.stat().st_size == start
        msg = caplog.text
        assert str(path) in msg and f"offset {start}" in msg
        assert "incomplete" in msg
        assert w.next_seq == records[-1][0]
        assert w.repair_report.repaired[0].offset == start
        seq = records[-1][0]
        w.append(seq, batch(seq, 2), 2)
        w.close()
        assert read_all(work) == records[:-1] + [(seq, 2, batch(seq, 2).tobytes())]
        shutil.rmtree(work)


def test_torn_tail_of_first_record_in_segment(tmp_path):
    records = write_batches(tmp_path, [5, 5, 5], segment_bytes=400)
    last_first, last_path = list_segments(tmp_path)[-1]
    start, end = record_bounds(last_path)[0]
    os.truncate(last_path, start + 10)
    report = repair_journal(tmp_path)
    assert report.next_seq == last_first
    assert last_path.stat().st_size == SEGMENT_HEADER_LENGTH
    assert read_all(tmp_path) == [r for r in records if r[0] < last_first]
    with JournalWriter(tmp_path, 400, "none") as w:
        w.append(last_first, batch(last_first, 5), 5)
    assert read_all(tmp_path) == records


# --- reserved space (journal_format, "Reserved space") -----------------------------------


def test_records_go_into_reserved_space_and_a_closed_journal_has_none(tmp_path):
    reserve = 4096
    w = JournalWriter(tmp_path, 16 << 10, "batch", slot_size=SLOT, reserve_bytes=reserve)
    records, seq, data_end = [], 0, SEGMENT_HEADER_LENGTH
    w.append(0, batch(0, 2), 2)
    records.append((0, 2, batch(0, 2).tobytes()))
    seq, data_end = 2, data_end + RECORD_HEADER_LENGTH + 2 * SLOT
    path = list_segments(tmp_path)[-1][1]
    # reserved with the segment: the file is bigger than its records, and reads the same
    assert path.stat().st_size == SEGMENT_HEADER_LENGTH + reserve
    assert read_all(tmp_path) == records and JournalReader(tmp_path).tail_damage is None
    while data_end + RECORD_HEADER_LENGTH + 10 * SLOT <= 16 << 10:  # past the first reservation
        w.append(seq, batch(seq, 10), 10)
        records.append((seq, 10, batch(seq, 10).tobytes()))
        seq, data_end = seq + 10, data_end + RECORD_HEADER_LENGTH + 10 * SLOT
        size = path.stat().st_size
        assert data_end <= size <= max(data_end, 16 << 10)  # more reserved, within the segment
        assert read_all(tmp_path) == records
    w.append(seq, batch(seq, 10), 10)  # the next segment; the first is cut to its records
    records.append((seq, 10, batch(seq, 10).tobytes()))
    assert path.stat().st_size == data_end
    assert list_segments(tmp_path)[-1][1].stat().st_size > SEGMENT_HEADER_LENGTH + RECORD_HEADER_LENGTH + 10 * SLOT
    w.close()
    last = list_segments(tmp_path)[-1][1]
    assert last.stat().st_size == SEGMENT_HEADER_LENGTH + RECORD_HEADER_LENGTH + 10 * SLOT
    assert read_all(tmp_path) == records


def test_a_crashed_writers_reserved_space_is_read_past_and_cut_on_reopen(tmp_path, caplog):
    import multiprocessing

    def crash() -> None:  # a writer that never closes: its process ends under it
        w = JournalWriter(tmp_path, 1 << 20, "batch", slot_size=SLOT, reserve_bytes=1 << 16)
        for k in range(5):
            w.append(3 * k, batch(3 * k, 3), 3)
        os._exit(0)

    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=crash)
    child.start()
    child.join(30)
    assert child.exitcode == 0
    path = list_segments(tmp_path)[-1][1]
    data_end = SEGMENT_HEADER_LENGTH + 5 * (RECORD_HEADER_LENGTH + 3 * SLOT)
    assert path.stat().st_size == SEGMENT_HEADER_LENGTH + (1 << 16)
    expected = [(3 * k, 3, batch(3 * k, 3).tobytes()) for k in range(5)]
    assert read_all(tmp_path) == expected
    with caplog.at_level(logging.WARNING):
        with JournalWriter(tmp_path, 1 << 20, "batch", slot_size=SLOT, reserve_bytes=0) as w:
            assert w.next_seq == 15
            assert path.stat().st_size == data_end  # cut quietly: no data, no damage
            w.append(15, batch(15, 3), 3)  # reserve_bytes 0: the file grows with its records
            assert path.stat().st_size == data_end + RECORD_HEADER_LENGTH + 3 * SLOT
    assert caplog.text == ""
    assert read_all(tmp_path) == expected + [(15, 3, batch(15, 3).tobytes())]


def test_a_file_system_that_cannot_reserve_gets_a_growing_file(tmp_path, monkeypatch, caplog):
    import errno

    def refuse(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(jw.os, "posix_fallocate", refuse)
    with caplog.at_level(logging.WARNING):
        records = write_batches(tmp_path, [3, 4, 5])
    assert read_all(tmp_path) == records
    assert "cannot reserve space (Operation not supported)" in caplog.text


def test_a_failed_write_leaves_no_partial_record_in_reserved_space(tmp_path, monkeypatch):
    w = JournalWriter(tmp_path, 1 << 20, "none", slot_size=SLOT)
    w.append(0, batch(0, 3), 3)
    real = os.pwritev
    calls = []

    def fail_second(fd, buffers, offset):
        calls.append(offset)
        if len(calls) == 1:
            real(fd, buffers, offset)  # the record's body lands, its magic does not
            return sum(memoryview(b).nbytes for b in buffers)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jw.os, "pwritev", fail_second)
    with pytest.raises(OSError, match="No space left"):
        w.append(3, batch(3, 3), 3)
    monkeypatch.setattr(jw.os, "pwritev", real)
    path = list_segments(tmp_path)[-1][1]
    assert path.stat().st_size == SEGMENT_HEADER_LENGTH + RECORD_HEADER_LENGTH + 3 * SLOT  # cut back
    w.append(3, batch(3, 3), 3)  # and it goes on from there, reserving again
    w.close()
    assert read_all(tmp_path) == [(0, 3, batch(0, 3).tobytes()), (3, 3, batch(3, 3).tobytes())]


def test_zero_filled_tail_is_cut_as_reserved_space(tmp_path, caplog):
    records = write_batches(tmp_path, [3, 3])
    path = list_segments(tmp_path)[-1][1]
    size = path.stat().st_size
    with open(path, "ab") as f:
        # a crashed writer's reserved space, or a size that grew while the data never made
        # it (delalloc crash): zeros are no data either way
        f.write(bytes(4096))
    assert read_all(tmp_path) == records  # readers stop there
    with caplog.at_level(logging.WARNING):
        report = repair_journal(tmp_path)
    assert report.next_seq == 6 and report.repaired == []
    assert path.stat().st_size == size
    assert caplog.text == ""  # not damage: nothing to warn about
    assert read_all(tmp_path) == records


def test_zeros_then_bytes_after_the_last_record_are_a_torn_tail(tmp_path, caplog):
    # a record whose magic (written last) never made it: zero magic, the rest there
    records = write_batches(tmp_path, [3, 3])
    path = list_segments(tmp_path)[-1][1]
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(bytes(RECORD_HEADER_LENGTH) + b"\x01" + bytes(100))
    with caplog.at_level(logging.WARNING):
        report = repair_journal(tmp_path)
    assert report.next_seq == 6 and len(report.repaired) == 1
    assert path.stat().st_size == size
    assert "bad record magic 0x00000000" in caplog.text
    assert read_all(tmp_path) == records


def test_corrupt_byte_in_last_record_is_a_torn_tail(tmp_path, caplog):
    records = write_batches(tmp_path, [3, 3, 3])
    path = list_segments(tmp_path)[-1][1]
    start, end = record_bounds(path)[-1]
    flip(path, end - 5)
    with caplog.at_level(logging.WARNING):
        w = JournalWriter(tmp_path, 1 << 20, "batch")
    assert "payload checksum mismatch" in caplog.text and f"offset {start}" in caplog.text
    assert w.next_seq == 6
    w.append(6, batch(6, 1), 1)
    w.close()
    assert read_all(tmp_path) == records[:2] + [(6, 1, batch(6, 1).tobytes())]


def test_corrupt_header_of_last_record_is_a_torn_tail(tmp_path):
    records = write_batches(tmp_path, [3, 3, 3])
    path = list_segments(tmp_path)[-1][1]
    start, _ = record_bounds(path)[-1]
    flip(path, start + jf.RECORD_FIRST_SEQ_OFFSET)
    assert repair_journal(tmp_path).next_seq == 6
    assert read_all(tmp_path) == records[:2]


@pytest.mark.parametrize("where", ["payload", "header"])
def test_corrupt_middle_record_raises(tmp_path, where):
    write_batches(tmp_path, [3, 3, 3])
    path = list_segments(tmp_path)[-1][1]
    start, end = record_bounds(path)[1]
    flip(path, start + 4 if where == "header" else end - 1)
    before = path.read_bytes()
    for attempt in (lambda: JournalWriter(tmp_path, 1 << 20, "batch"),
                    lambda: repair_journal(tmp_path),
                    lambda: list(JournalReader(tmp_path).records())):
        with pytest.raises(JournalCorruptError) as info:
            attempt()
        assert info.value.path == path and info.value.offset == start
        assert str(path) in str(info.value) and f"offset {start}" in str(info.value)
        assert "followed by a valid record" in str(info.value)
    assert path.read_bytes() == before  # nothing truncated


def test_corruption_in_a_non_last_segment_raises(tmp_path):
    write_batches(tmp_path, [3] * 12, segment_bytes=700)
    segs = list_segments(tmp_path)
    assert len(segs) >= 3
    path = segs[1][1]
    start, end = record_bounds(path)[-1]  # even its last record: it is not the last segment
    flip(path, end - 1)
    with pytest.raises(JournalCorruptError) as info:
        list(JournalReader(tmp_path).records())
    assert info.value.path == path and info.value.offset == start
    # Recovery does not read old segments' records; replay does, and refuses.
    JournalWriter(tmp_path, 700, "none").close()
    with pytest.raises(JournalCorruptError):
        list(replay_from(tmp_path, 0))
    assert len(list(replay_from(tmp_path, segs[2][0]))) > 0  # after the damage: fine


def test_truncated_non_last_segment_raises(tmp_path):
    write_batches(tmp_path, [3] * 12, segment_bytes=700)
    path = list_segments(tmp_path)[0][1]
    start, end = record_bounds(path)[-1]
    os.truncate(path, end - 3)
    with pytest.raises(JournalCorruptError, match="not the last") as info:
        JournalReader(tmp_path).verify()
    assert info.value.offset == start


def test_sequence_gap_between_segments_raises(tmp_path):
    write_batches(tmp_path, [3] * 12, segment_bytes=700)
    segs = list_segments(tmp_path)
    segs[1][1].unlink()  # a missing segment
    with pytest.raises(JournalCorruptError, match="sequence gap") as info:
        JournalReader(tmp_path).verify()
    assert info.value.path == segs[2][1]


def test_sequence_gap_between_records_raises(tmp_path):
    write_batches(tmp_path, [3, 3])
    path = list_segments(tmp_path)[-1][1]
    size = path.stat().st_size
    with open(path, "ab") as f:  # valid checksums, wrong sequence
        f.write(craft_record(7, 1, batch(7, 1).tobytes()))
    with pytest.raises(JournalCorruptError, match="sequence gap") as info:
        repair_journal(tmp_path)
    assert info.value.offset == size


def test_garbage_segment_header_raises(tmp_path):
    write_batches(tmp_path, [3] * 12, segment_bytes=700)
    for index in (0, -1):
        path = list_segments(tmp_path)[index][1]
        flip(path, jf.SEGMENT_SLOT_SIZE_OFFSET)
        with pytest.raises(JournalCorruptError, match="segment header checksum") as info:
            if index == -1:
                JournalWriter(tmp_path, 700, "none")
            else:
                JournalReader(tmp_path).verify()
        assert info.value.path == path
        flip(path, jf.SEGMENT_SLOT_SIZE_OFFSET)
    path = list_segments(tmp_path)[-1][1]
    data = bytearray(path.read_bytes())
    data[:8] = b"GARBAGE!"
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorruptError, match="bad segment magic") as info:
        repair_journal(tmp_path)
    assert info.value.offset == 0


def test_segment_name_must_match_header(tmp_path):
    write_batches(tmp_path, [3] * 12, segment_bytes=700)
    segs = list_segments(tmp_path)
    segs[-1][1].rename(tmp_path / segment_name(segs[-1][0] + 1))
    with pytest.raises(JournalCorruptError, match="file name"):
        repair_journal(tmp_path)


@pytest.mark.parametrize("size", [0, 1, SEGMENT_HEADER_LENGTH - 1])
def test_torn_segment_creation_is_removed(tmp_path, size, caplog):
    records = write_batches(tmp_path, [3, 3])
    torn = tmp_path / segment_name(6)
    torn.write_bytes(jf.encode_segment_header(SLOT, 6)[:size])
    assert read_all(tmp_path) == records  # a reader just stops there
    (tmp_path / (segment_name(6) + jf.TEMP_SUFFIX)).write_bytes(b"half a header")
    with caplog.at_level(logging.WARNING):
        w = JournalWriter(tmp_path, 1 << 20, "none")
    assert not torn.exists() and str(torn) in caplog.text
    assert not any(p.name.endswith(jf.TEMP_SUFFIX) for p in tmp_path.iterdir())
    assert w.next_seq == 6
    w.append(6, batch(6, 1), 1)
    w.close()
    assert read_all(tmp_path) == records + [(6, 1, batch(6, 1).tobytes())]


def test_empty_last_segment_with_other_slot_size_is_replaced(tmp_path):
    write_batches(tmp_path, [3])
    (tmp_path / segment_name(3)).write_bytes(jf.encode_segment_header(SLOT, 3))
    with JournalWriter(tmp_path, 1 << 20, "none", slot_size=128) as w:
        w.append(3, batch(3, 2, 128), 2)
    recs = read_all(tmp_path)
    assert [r[:2] for r in recs] == [(0, 3), (3, 2)] and len(recs[1][2]) == 256


def test_retire_segments_deletes_covered_segments(tmp_path):
    records = write_batches(tmp_path, [3] * 12, segment_bytes=700)
    segs = list_segments(tmp_path)
    cut = segs[2][0]
    deleted = retire_segments(tmp_path, cut + 1)
    assert deleted == [segs[0][1], segs[1][1]]
    assert read_all(tmp_path, from_seq=cut) == [r for r in records if r[0] >= cut]
    retire_segments(tmp_path, 10**9)
    assert len(list_segments(tmp_path)) == 1  # the last segment stays


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=30),
    segment_bytes=st.integers(300, 3000),
    cut_fraction=st.floats(0.0, 1.0),
)
def test_recovery_returns_a_prefix_after_random_truncation(sizes, segment_bytes, cut_fraction):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        records = write_batches(d, sizes, segment_bytes=segment_bytes)
        last_first, last_path = list_segments(d)[-1]
        size = last_path.stat().st_size
        cut = int(cut_fraction * size)
        ends = [e for _, e in record_bounds(last_path)]
        os.truncate(last_path, cut)
        in_last = [r for r in records if r[0] >= last_first]
        kept = sum(1 for e in ends if e <= cut)
        expected = [r for r in records if r[0] < last_first] + in_last[:kept]
        w = JournalWriter(d, segment_bytes, "none")
        got = read_all(d)
        assert got == expected
        assert records[:len(got)] == got  # a prefix at record granularity
        if expected:
            assert w.next_seq == expected[-1][0] + expected[-1][1]
        else:  # only one segment, and nothing of it survived
            assert w.next_seq == (last_first if cut >= SEGMENT_HEADER_LENGTH else None)
        seq = w.next_seq if w.next_seq is not None else 0
        w.append(seq, batch(seq, 2), 2)
        w.close()
        assert read_all(d)[-1][:2] == (seq, 2)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 10), min_size=1, max_size=20),
    segment_bytes=st.integers(300, 2000),
    which=st.integers(0, 10**9),
    position=st.floats(0.0, 1.0, exclude_max=True),
)
def test_a_flipped_byte_is_never_applied(sizes, segment_bytes, which, position):
    """Whatever byte is damaged, recovery raises or returns a prefix of what was appended,
    and damage in the last record of the last segment is always repaired, never raised."""
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        records = write_batches(d, sizes, segment_bytes=segment_bytes)
        segs = list_segments(d)
        idx = which % len(segs)
        path = segs[idx][1]
        size = path.stat().st_size
        offset = int(position * size)
        # where the last record starts, read before the damage can hide it
        last_start = record_bounds(segs[-1][1])[-1][0] if idx == len(segs) - 1 else None
        flip(path, offset)
        try:
            JournalWriter(d, segment_bytes, "none").close()
            got = read_all(d)
        except JournalCorruptError as exc:
            assert exc.path.parent == d
            assert last_start is None or offset < last_start
            return
        assert records[:len(got)] == got
        if last_start is not None and offset >= last_start:
            assert got == records[:-1]


def test_last_message_reads_only_the_newest_segments(tmp_path, monkeypatch):
    """``JournalReader.last_message``: the last complete message, from the newest segment (or
    the one before it, when the newest holds no record yet), without reading older ones."""
    from ringex.engine.storage import journal_reader

    assert JournalReader(tmp_path).last_message() is None  # no segment at all
    records = write_batches(tmp_path, [3, 5, 2, 7, 4, 1], segment_bytes=4 * SLOT + 64)
    segs = list_segments(tmp_path)
    assert len(segs) >= 3
    read: list = []
    real = journal_reader.read_segment
    monkeypatch.setattr(journal_reader, "read_segment", lambda p: (read.append(p), real(p))[1])
    seq, slot = JournalReader(tmp_path).last_message()
    last_first, last_count, last_bytes = records[-1]
    assert seq == last_first + last_count - 1 and bytes(slot) == last_bytes[-SLOT:]
    assert read == [segs[-1][1]]
    # a newest segment with no record yet (a roll torn before its first record): the one before
    with open(tmp_path / f"journal-{seq + 1:020d}.log", "wb"):
        pass
    assert list_segments(tmp_path)[-1][0] == seq + 1
    read.clear()
    assert JournalReader(tmp_path).last_message()[0] == seq
    assert read == [tmp_path / f"journal-{seq + 1:020d}.log", segs[-1][1]]
