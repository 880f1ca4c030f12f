"""Following the live journal while it is appended to: every message once, in order, across
segment rolls, never a half-written record, never a guess past damage."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ringex.engine.storage.journal_follower import JournalFollower
from ringex.engine.storage.journal_format import (
    RECORD_HEADER_LENGTH,
    RECORD_MAGIC_BYTES,
    SEGMENT_HEADER_LENGTH,
    JournalCorruptError,
    list_segments,
)
from ringex.engine.storage.journal_reader import JournalReader
from ringex.engine.storage.journal_writer import JournalWriter

SLOT = 64


def slots(first: int, n: int) -> np.ndarray:
    """n distinguishable slots: the first word holds the message's sequence."""
    out = np.zeros((n, SLOT), dtype=np.uint8)
    out.view("<u8")[:, 0] = np.arange(first, first + n)
    return out


def seqs_of(records) -> list[int]:
    out = []
    for rec in records:
        words = np.frombuffer(rec.payload, dtype="<u8").reshape(rec.count, SLOT // 8)
        assert list(words[:, 0]) == list(range(rec.first_seq, rec.next_seq))
        out += list(words[:, 0])
    return out


def drain(f: JournalFollower) -> list[int]:
    """The sequences of everything the follower can read now (bounded: 100 reads)."""
    got: list[int] = []
    for _ in range(100):
        batch = f.read()
        if not batch:
            return got
        got += seqs_of(batch)
    raise AssertionError("the follower never ran dry")


def writer(directory: Path, segment_bytes: int = 1 << 20) -> JournalWriter:
    return JournalWriter(directory, segment_bytes, "none", slot_size=SLOT)


def test_it_reads_what_was_appended_since_its_last_call(tmp_path: Path) -> None:
    w = writer(tmp_path)
    f = JournalFollower(tmp_path, 0, SLOT)
    assert f.read() == []
    w.append(0, [slots(0, 10)], 10)
    w.append(10, [slots(10, 5)], 5)
    assert seqs_of(f.read()) == list(range(15))
    assert f.read() == []
    w.append(15, [slots(15, 3)], 3)
    assert seqs_of(f.read()) == [15, 16, 17] and f.next_seq == 18
    w.close()
    f.close()


def test_it_starts_inside_a_record_and_skips_what_comes_before(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.append(0, [slots(0, 10)], 10)
    w.append(10, [slots(10, 10)], 10)
    w.close()
    assert seqs_of(JournalFollower(tmp_path, 14, SLOT).read()) == list(range(14, 20))


def test_from_zero_it_starts_where_the_journal_does(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path, 1 << 20, "none", slot_size=SLOT, first_seq=1)  # sequences from 1
    f = JournalFollower(tmp_path, 0, SLOT)
    assert f.read() == []
    w.append(1, [slots(1, 4)], 4)
    assert seqs_of(f.read()) == [1, 2, 3, 4]
    w.close()
    w2 = JournalWriter(tmp_path / "later", 1 << 20, "none", slot_size=SLOT, first_seq=5)
    w2.append(5, [slots(5, 2)], 2)
    w2.close()
    with pytest.raises(JournalCorruptError, match="starts at seq 5: messages from 3 are missing"):
        JournalFollower(tmp_path / "later", 3, SLOT).read()


def test_it_crosses_segment_rolls(tmp_path: Path) -> None:
    w = writer(tmp_path, segment_bytes=4096)  # a few records per segment
    f = JournalFollower(tmp_path, 0, SLOT)
    got: list[int] = []
    for first in range(0, 400, 20):
        w.append(first, [slots(first, 20)], 20)
        if first % 60 == 0:
            got += seqs_of(f.read())
    got += drain(f)
    assert len(list_segments(tmp_path)) > 5
    assert got == list(range(400))
    w.close()


def test_a_record_being_written_waits_for_its_end(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.append(0, [slots(0, 4)], 4)
    w.append(4, [slots(4, 4)], 4)
    w.close()
    path = list_segments(tmp_path)[0][1]
    whole = path.read_bytes()
    path.write_bytes(whole[:-100])  # the second record half there, as mid-append
    f = JournalFollower(tmp_path, 0, SLOT)
    assert seqs_of(f.read()) == [0, 1, 2, 3]
    assert f.read() == []
    with open(path, "ab") as out:
        out.write(whole[-100:])
    assert seqs_of(f.read()) == [4, 5, 6, 7]


def test_a_record_whose_magic_is_not_written_yet_waits_for_it(tmp_path: Path) -> None:
    # the writer writes a record into its reserved space, the magic last: a follower that
    # reads between the two writes (or in the middle of the magic's) must wait, not fail
    w = writer(tmp_path)
    w.append(0, [slots(0, 4)], 4)
    f = JournalFollower(tmp_path, 0, SLOT)
    assert seqs_of(f.read()) == [0, 1, 2, 3]
    w.append(4, [slots(4, 4)], 4)
    path = list_segments(tmp_path)[0][1]
    at = SEGMENT_HEADER_LENGTH + RECORD_HEADER_LENGTH + 4 * SLOT
    fd = os.open(path, os.O_RDWR)
    try:
        magic = os.pread(fd, 4, at)
        assert magic == RECORD_MAGIC_BYTES
        os.pwrite(fd, bytes(4), at)  # between the writes
        assert f.read() == []
        os.pwrite(fd, magic[:2], at)  # half of the magic
        assert f.read() == []
        os.pwrite(fd, magic, at)
    finally:
        os.close(fd)
    assert seqs_of(f.read()) == [4, 5, 6, 7]
    w.close()


def test_an_idle_call_reads_little_of_the_reserved_space(tmp_path: Path, monkeypatch) -> None:
    from ringex.engine.storage import journal_follower

    w = JournalWriter(tmp_path, 64 << 20, "none", slot_size=SLOT, reserve_bytes=32 << 20)
    f = JournalFollower(tmp_path, 0, SLOT)
    first = 0
    for _ in range(3000):  # ~400 KiB of records: reads grow past the first one's size
        w.append(first, [slots(first, 2)], 2)
        first += 2
    assert drain(f) == list(range(first))
    reads: list[int] = []
    real = os.pread
    monkeypatch.setattr(journal_follower.os, "pread", lambda fd, n, at: (reads.append(n), real(fd, n, at))[1])
    assert f.read() == []
    assert reads == [journal_follower.FIRST_READ]
    w.close()


def test_damage_is_an_error_not_a_guess(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.append(0, [slots(0, 4)], 4)
    w.append(4, [slots(4, 4)], 4)
    w.close()
    path = list_segments(tmp_path)[0][1]
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # in the last record's payload
    path.write_bytes(bytes(raw))
    with pytest.raises(JournalCorruptError, match="payload checksum"):
        JournalFollower(tmp_path, 0, SLOT).read()


def test_a_segment_retired_while_it_is_read_is_read_to_its_end(tmp_path: Path) -> None:
    w = writer(tmp_path, segment_bytes=4096)
    f = JournalFollower(tmp_path, 0, SLOT)
    w.append(0, [slots(0, 20)], 20)
    got = seqs_of(f.read())
    for first in range(20, 200, 20):
        w.append(first, [slots(first, 20)], 20)
    os.unlink(list_segments(tmp_path)[0][1])  # retention, after a snapshot covered it
    got += drain(f)
    assert got == list(range(200))
    w.close()


def test_it_reads_what_the_reader_reads(tmp_path: Path) -> None:
    w = writer(tmp_path, segment_bytes=8192)
    rng = np.random.default_rng(3)
    first = 0
    for _ in range(60):
        n = int(rng.integers(1, 30))
        w.append(first, [slots(first, n)], n)
        first += n
    w.close()
    f = JournalFollower(tmp_path, 0, SLOT)
    followed = []
    while batch := f.read():
        followed += [(r.first_seq, r.count, bytes(r.payload)) for r in batch]
    read = [(r.first_seq, r.count, bytes(r.payload)) for r in JournalReader(tmp_path).records()]
    assert followed == read
