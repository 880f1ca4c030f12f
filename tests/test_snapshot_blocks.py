"""Snapshot files checked a block at a time, and recycled: the oldest file rewritten where
its blocks changed, never loaded wrong."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from ringex.engine.kernel.memory import zeroed_words
from ringex.engine.storage import snapshot as sn
from ringex.engine.storage import snapshot_blocks
from ringex.engine.storage.snapshot import (
    SnapshotCorruptError,
    list_snapshots,
    load_latest_snapshot,
    read_snapshot,
    write_snapshot,
)

BLOCK = snapshot_blocks.BLOCK_BYTES
HEADER = struct.Struct("<8sIIqQQQQII")  # the byte map in snapshot.py, written out here


def arena(words: int = 5 * BLOCK // 8 + 100, seed: int = 0) -> np.ndarray:
    """Page-aligned like the engine's, a bit over five blocks."""
    a = zeroed_words(words)
    a[:] = np.random.default_rng(seed).integers(-(2**62), 2**62, words)
    return a


def blocks_written(monkeypatch) -> list[list[int]]:
    seen: list[list[int]] = []
    real = snapshot_blocks.DataBlocks.write

    def spy(self, fd, path, file_offset, blocks, direct, paced=True):
        seen.append(blocks.tolist())
        return real(self, fd, path, file_offset, blocks, direct, paced)

    monkeypatch.setattr(snapshot_blocks.DataBlocks, "write", spy)
    return seen


def test_the_block_table_follows_the_data_as_the_byte_map_says(tmp_path: Path) -> None:
    a = arena()
    path = write_snapshot(tmp_path, 3, {"arena": a}, {"m": 1})
    raw = path.read_bytes()
    magic, version, hlen, seq, m_off, m_len, d_off, d_len, content_crc, header_crc = HEADER.unpack_from(raw)
    assert (magic, version, hlen, seq, m_off) == (b"RXSNAP\x00\x01", 2, 64, 3, 64)
    assert d_off % 4096 == 0 and d_len == -(-a.nbytes // 4096) * 4096
    count = -(-d_len // BLOCK)
    assert count == 6 and len(raw) == d_off + d_len + 4 * count
    table = np.frombuffer(raw[d_off + d_len:], dtype="<u4")
    data = raw[d_off:d_off + d_len]
    assert [zlib.crc32(data[b * BLOCK:(b + 1) * BLOCK]) for b in range(count)] == table.tolist()
    assert content_crc == zlib.crc32(raw[d_off + d_len:], zlib.crc32(raw[m_off:d_off]))
    assert header_crc == zlib.crc32(raw[:60])
    assert json.loads(raw[m_off:m_off + m_len])["meta"] == {"m": 1}


def test_a_damaged_block_is_named(tmp_path: Path) -> None:
    path = write_snapshot(tmp_path, 3, {"arena": arena()}, {})
    d_off = HEADER.unpack_from(path.read_bytes())[6]
    with open(path, "r+b") as f:
        f.seek(d_off + 2 * BLOCK + 17)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(SnapshotCorruptError, match=r"data block 2 .*checksum mismatch") as err:
        read_snapshot(path)
    assert err.value.offset == d_off + 2 * BLOCK


def test_a_damaged_table_entry_is_caught(tmp_path: Path) -> None:
    path = write_snapshot(tmp_path, 3, {"arena": arena()}, {})
    raw = bytearray(path.read_bytes())
    d_off, d_len = HEADER.unpack_from(raw)[6:8]
    table_at = d_off + d_len
    raw[table_at:table_at + 4] = struct.pack("<I", zlib.crc32(raw[d_off:d_off + BLOCK]) ^ 1)
    path.write_bytes(bytes(raw))
    with pytest.raises(SnapshotCorruptError, match="data block 0"):
        read_snapshot(path)


@pytest.mark.parametrize("direct", [False, True])
def test_a_recycled_file_has_the_bytes_of_a_fresh_one_and_rewrote_only_changed_blocks(
        tmp_path: Path, monkeypatch, direct: bool) -> None:
    a = arena()
    for seq in (10, 20, 30):
        a[seq] += 1  # block 0 changes each time
        write_snapshot(tmp_path / "kept", seq, {"arena": a}, {"seq": seq}, keep=3, direct=direct)
    oldest = list_snapshots(tmp_path / "kept")[0][1]
    inode = oldest.stat().st_ino
    a[3 * BLOCK // 8 + 5] = 12345  # block 3 too
    seen = blocks_written(monkeypatch)
    recycled = write_snapshot(tmp_path / "kept", 40, {"arena": a}, {"seq": 40}, keep=3,
                              direct=direct, recycle=True)
    assert seen == [[0, 3]]
    assert recycled.stat().st_ino == inode and not oldest.exists()
    assert [s for s, _ in list_snapshots(tmp_path / "kept")] == [20, 30, 40]
    fresh = write_snapshot(tmp_path / "fresh", 40, {"arena": a}, {"seq": 40}, direct=direct)
    assert recycled.read_bytes() == fresh.read_bytes()
    assert np.array_equal(read_snapshot(recycled).arrays["arena"], a)


def test_nothing_is_recycled_while_fewer_than_keep_exist_or_with_keep_1(tmp_path: Path, monkeypatch) -> None:
    a = arena(words=1000)
    seen = blocks_written(monkeypatch)
    write_snapshot(tmp_path / "two", 1, {"arena": a}, {}, keep=3, recycle=True)
    write_snapshot(tmp_path / "two", 2, {"arena": a}, {}, keep=3, recycle=True)
    first = write_snapshot(tmp_path / "one", 1, {"arena": a}, {}, keep=1, recycle=True)
    inode = first.stat().st_ino
    write_snapshot(tmp_path / "one", 2, {"arena": a}, {}, keep=1, recycle=True)
    assert seen == [[0]] * 4  # every block written each time
    assert not first.exists() and len(list_snapshots(tmp_path / "one")) == 1
    # keep 1: the one snapshot stayed whole while its successor was written (a new inode)
    assert list_snapshots(tmp_path / "one")[0][1].stat().st_ino != inode


def test_another_layout_is_written_whole(tmp_path: Path, monkeypatch) -> None:
    for seq in (1, 2):
        write_snapshot(tmp_path, seq, {"arena": arena(words=1000)}, {}, keep=2)
    seen = blocks_written(monkeypatch)
    bigger = arena(words=2 * BLOCK // 8)
    path = write_snapshot(tmp_path, 3, {"arena": bigger}, {}, keep=2, recycle=True)
    assert seen == [[0, 1]]
    assert np.array_equal(read_snapshot(path).arrays["arena"], bigger)


def test_an_old_file_damaged_where_nothing_changed_makes_the_recycled_one_fail_not_load_wrong(
        tmp_path: Path) -> None:
    """The writer trusts the old file's table for the blocks it does not rewrite; if the old
    bytes had rotted there, the new file fails its block check and recovery falls back."""
    a = arena()
    for seq in (10, 20):
        write_snapshot(tmp_path, seq, {"arena": a}, {"seq": seq}, keep=2)
    oldest = list_snapshots(tmp_path)[0][1]
    d_off = HEADER.unpack_from(oldest.read_bytes())[6]
    with open(oldest, "r+b") as f:
        f.seek(d_off + 4 * BLOCK + 1)
        f.write(b"\xee")
    a[0] += 1
    write_snapshot(tmp_path, 30, {"arena": a}, {"seq": 30}, keep=2, recycle=True)
    with pytest.raises(SnapshotCorruptError, match="data block 4"):
        read_snapshot(list_snapshots(tmp_path)[-1][1])
    snap = load_latest_snapshot(tmp_path)
    assert snap is not None and snap.seq == 20


def test_version_1_files_still_load(tmp_path: Path) -> None:
    """A file as version 1 wrote it (no block table; the content crc over the data), laid
    out from the byte map by hand."""
    data = np.arange(1000, dtype="<i8")
    manifest = json.dumps({"meta": {"v": 1}, "arrays": [
        {"name": "x", "dtype": "<i8", "shape": [1000], "offset": 0, "nbytes": data.nbytes}]}).encode()
    d_off = 4096
    d_len = -(-data.nbytes // 64) * 64
    body = manifest + bytes(d_off - 64 - len(manifest)) + data.tobytes() + bytes(d_len - data.nbytes)
    head = HEADER.pack(b"RXSNAP\x00\x01", 1, 64, 77, 64, len(manifest), d_off, d_len, zlib.crc32(body), 0)[:60]
    path = tmp_path / sn.snapshot_name(77)
    path.write_bytes(head + struct.pack("<I", zlib.crc32(head)) + body)
    snap = read_snapshot(path)
    assert snap.seq == 77 and snap.meta == {"v": 1} and np.array_equal(snap.arrays["x"], data)


def test_spares_make_up_keep_and_the_first_snapshots_recycle_them(tmp_path: Path, monkeypatch) -> None:
    a = arena()
    assert sn.prepare_spares(tmp_path, {"arena": a}, {"spare": True}, keep=3) == 3
    assert sn.prepare_spares(tmp_path, {"arena": a}, {"spare": True}, keep=3) == 0
    spares = sorted(p.name for p in tmp_path.iterdir())
    assert spares == [f".snapshot-spare-{n}.snap" for n in range(3)]
    assert list_snapshots(tmp_path) == [] and load_latest_snapshot(tmp_path) is None  # never recovered from
    inode = (tmp_path / spares[0]).stat().st_ino
    a[4 * BLOCK // 8] += 1
    seen = blocks_written(monkeypatch)
    path = write_snapshot(tmp_path, 7, {"arena": a}, {"spare": True}, keep=3, recycle=True)
    assert seen == [[4]] and path.stat().st_ino == inode
    assert np.array_equal(read_snapshot(path).arrays["arena"], a)
    # two spares and one snapshot make three: nothing more to prepare
    assert sn.prepare_spares(tmp_path, {"arena": a}, {}, keep=3) == 0


def test_a_spare_of_another_layout_is_replaced(tmp_path: Path) -> None:
    sn.prepare_spares(tmp_path, {"arena": arena(words=1000)}, {}, keep=2)
    bigger = arena()
    assert sn.prepare_spares(tmp_path, {"arena": bigger}, {}, keep=2) == 2
    for p in tmp_path.iterdir():
        assert p.stat().st_size > bigger.nbytes


def test_no_spares_with_keep_1(tmp_path: Path) -> None:
    assert sn.prepare_spares(tmp_path, {"arena": arena(words=1000)}, {}, keep=1) == 0
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []
