"""Engine snapshots: round trips, atomic writes, fallback past damaged files."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from ringex.engine.storage import snapshot as sn
from ringex.engine.storage.snapshot import (
    SnapshotCorruptError,
    list_snapshots,
    load_latest_snapshot,
    read_snapshot,
    snapshot_name,
    write_snapshot,
)


def sample_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    order_dt = np.dtype([
        ("id", "<u8"), ("price", "<i8"), ("qty", "<i4"), ("side", "u1"),
        ("tag", "S6"), ("fills", "<i8", (3,)), ("inner", [("a", "<u2"), ("b", ">f8")]),
    ])
    orders = np.zeros(17, dtype=order_dt)
    orders["id"] = np.arange(17) + seed
    orders["price"] = rng.integers(-10**12, 10**12, 17)
    orders["tag"] = b"ab\x00cd"
    orders["fills"] = rng.integers(0, 100, (17, 3))
    orders["inner"]["b"] = rng.random(17)
    return {
        "orders": orders,
        "levels": rng.integers(-(2**62), 2**62, size=(4, 33), dtype=np.int64),
        "flags": rng.random(7) > 0.5,
        "u8": np.arange(255, dtype=np.uint8),
        "f32": rng.random((2, 3, 5)).astype(np.float32),
        "big_endian": np.arange(9, dtype=">i4"),
        "complex": (rng.random(4) + 1j * rng.random(4)).astype(np.complex128),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
        "strided": np.arange(20, dtype=np.int64)[::3],
        "scalar": np.array(42, dtype=np.int64),
        "empty": np.zeros((0, 5), dtype=np.float64),
        "text": np.array(["a", "ünïcode", ""], dtype="U8"),
        "when": np.array([1, 2, 3], dtype="datetime64[ns]"),
    }


META = {"config": {"instruments": 3, "tick": 0.01}, "schema": "a1b2c3", "list": [1, "x", None]}


def assert_same(loaded: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(loaded) == list(expected)
    for name, exp in expected.items():
        got = loaded[name]
        assert got.dtype == exp.dtype, name
        assert got.shape == exp.shape, name
        assert got.tobytes() == np.ascontiguousarray(exp).tobytes(), name


def test_round_trip_many_dtypes(tmp_path):
    arrays = sample_arrays()
    path = write_snapshot(tmp_path, 1234, arrays, META)
    assert path == tmp_path / snapshot_name(1234) and path.name == "snapshot-00000000000000001234.snap"
    snap = load_latest_snapshot(tmp_path)
    seq, loaded, meta = snap  # unpacks as a triple
    assert seq == 1234 and meta == META and snap.path == path
    assert_same(loaded, arrays)
    for name, arr in loaded.items():  # the engine mutates restored state in place
        assert arr.flags.writeable and arr.flags.c_contiguous, name
    loaded["levels"][0, 0] = 7
    assert read_snapshot(path).arrays["levels"][0, 0] == arrays["levels"][0, 0]


def test_arrays_are_aligned_in_the_file(tmp_path):
    path = write_snapshot(tmp_path, 1, {"a": np.arange(3, dtype=np.int8), "b": np.arange(5)}, {})
    raw = path.read_bytes()
    data_offset = sn.SNAPSHOT_HEADER.unpack_from(raw, 0)[6]
    assert data_offset % sn.DATA_ALIGNMENT == 0
    assert raw[data_offset + sn.DATA_ALIGNMENT:data_offset + sn.DATA_ALIGNMENT + 40] == \
        np.arange(5).tobytes()


def test_no_arrays_no_meta(tmp_path):
    write_snapshot(tmp_path, 0, {})
    seq, arrays, meta = load_latest_snapshot(tmp_path)
    assert (seq, arrays, meta) == (0, {}, {})


def test_refuses_object_arrays_and_bad_input(tmp_path):
    with pytest.raises(TypeError):
        write_snapshot(tmp_path, 1, {"o": np.array([object()])}, {})
    with pytest.raises(ValueError):
        write_snapshot(tmp_path, -1, {}, {})
    with pytest.raises(ValueError):  # not JSON
        write_snapshot(tmp_path, 1, {}, {"x": float("nan")})
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_keep_newest(tmp_path):
    for seq in (10, 20, 30, 40, 50):
        write_snapshot(tmp_path, seq, {"x": np.array([seq])}, {}, keep=2)
    assert [s for s, _ in list_snapshots(tmp_path)] == [40, 50]
    write_snapshot(tmp_path, 60, {"x": np.array([60])}, {}, keep=0)  # keep all
    assert [s for s, _ in list_snapshots(tmp_path)] == [40, 50, 60]
    assert load_latest_snapshot(tmp_path).seq == 60


def _two_snapshots(tmp_path):
    older = write_snapshot(tmp_path, 100, sample_arrays(1), {"n": 1})
    newer = write_snapshot(tmp_path, 200, sample_arrays(2), {"n": 2})
    return older, newer


@pytest.mark.parametrize("where", ["header", "manifest", "data", "last_byte"])
def test_corrupt_latest_falls_back_to_previous(tmp_path, caplog, where):
    older, newer = _two_snapshots(tmp_path)
    raw = bytearray(newer.read_bytes())
    offset = {"header": sn.SEQ_OFFSET, "manifest": sn.HEADER_LENGTH + 3,
              "data": len(raw) // 2, "last_byte": len(raw) - 1}[where]
    raw[offset] ^= 0x01
    newer.write_bytes(bytes(raw))
    with pytest.raises(SnapshotCorruptError) as info:
        read_snapshot(newer)
    assert info.value.path == newer and str(newer) in str(info.value)
    with caplog.at_level(logging.WARNING, logger="ringex.engine.storage.snapshot"):
        snap = load_latest_snapshot(tmp_path)
    assert snap.seq == 100 and snap.meta == {"n": 1}
    assert_same(snap.arrays, sample_arrays(1))
    assert str(newer) in caplog.text and "checksum" in caplog.text


@pytest.mark.parametrize("keep_bytes", [0, 10, sn.HEADER_LENGTH, sn.HEADER_LENGTH + 20, -1])
def test_truncated_latest_falls_back(tmp_path, caplog, keep_bytes):
    older, newer = _two_snapshots(tmp_path)
    size = newer.stat().st_size
    os.truncate(newer, keep_bytes if keep_bytes >= 0 else size - 1)
    with caplog.at_level(logging.WARNING):
        assert load_latest_snapshot(tmp_path).seq == 100
    assert str(newer) in caplog.text


def test_extended_or_garbage_files_are_skipped(tmp_path):
    older, newer = _two_snapshots(tmp_path)
    with open(newer, "ab") as f:
        f.write(b"\x00" * 64)
    (tmp_path / snapshot_name(300)).write_bytes(os.urandom(4096))
    (tmp_path / snapshot_name(400)).write_bytes(b"")
    assert load_latest_snapshot(tmp_path).seq == 100


def test_seq_must_match_file_name(tmp_path):
    older, newer = _two_snapshots(tmp_path)
    newer.rename(tmp_path / snapshot_name(999))
    with pytest.raises(SnapshotCorruptError, match="file name"):
        read_snapshot(tmp_path / snapshot_name(999))
    assert load_latest_snapshot(tmp_path).seq == 100


def test_all_corrupt_or_none(tmp_path):
    assert load_latest_snapshot(tmp_path) is None
    assert load_latest_snapshot(tmp_path / "missing") is None
    older, newer = _two_snapshots(tmp_path)
    for p in (older, newer):
        os.truncate(p, 100)
    assert load_latest_snapshot(tmp_path) is None


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_leftovers_are_ignored_and_cleaned(tmp_path):
    write_snapshot(tmp_path, 100, {"x": np.arange(3)}, {})
    orphan = tmp_path / f".snapshot-{500:020d}.snap.tmp-{_dead_pid()}"
    orphan.write_bytes(b"half a snapshot")
    live = tmp_path / f".snapshot-{600:020d}.snap.tmp-{os.getppid()}"  # a live writer's
    live.write_bytes(b"being written")
    assert load_latest_snapshot(tmp_path).seq == 100
    assert not orphan.exists()
    assert live.exists()
    assert [s for s, _ in list_snapshots(tmp_path)] == [100]


def test_a_temporary_whose_pid_was_reused_is_cleaned(tmp_path):
    # The pid in the name is running, but it started after the file was last written, so
    # it is not the writer: the writer died and its pid was reused.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        orphan = tmp_path / f".snapshot-{500:020d}.snap.tmp-{child.pid}"
        orphan.write_bytes(b"half a snapshot")
        an_hour_ago = time.time() - 3600
        os.utime(orphan, (an_hour_ago, an_hour_ago))
        assert sn.clean_temporaries(tmp_path) == [orphan]
    finally:
        child.kill()
        child.wait(timeout=30)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    write_snapshot(tmp_path, 100, {"x": np.arange(3)}, {})

    def broken_fsync(fd):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_snapshot(tmp_path, 200, {"x": np.arange(3)}, {})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [snapshot_name(100)]
    assert load_latest_snapshot(tmp_path).seq == 100


def test_write_is_atomic_rename(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((os.path.basename(src), os.path.basename(dst)))
        assert not os.path.exists(dst)
        assert read_snapshot(src).seq == 7  # complete and valid before it gets its name
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_snapshot(tmp_path, 7, {"x": np.arange(3)}, {})
    assert seen == [(f".snapshot-{7:020d}.snap.tmp-{os.getpid()}", snapshot_name(7))]


def test_snapshots_written_with_the_earlier_64_byte_alignment_still_load(tmp_path, monkeypatch):
    """The data section moved from 64-byte to page alignment (for O_DIRECT); readers follow
    the offsets in the header and manifest, so files of either layout load."""
    monkeypatch.setattr(sn, "DATA_ALIGNMENT", 64)
    arrays = sample_arrays(3)
    path = write_snapshot(tmp_path, 5, arrays, {"old": True})
    raw = path.read_bytes()
    assert sn.SNAPSHOT_HEADER.unpack_from(raw, 0)[6] % 4096 != 0  # really the old layout
    monkeypatch.undo()
    seq, loaded, meta = load_latest_snapshot(tmp_path)
    assert (seq, meta) == (5, {"old": True})
    assert_same(loaded, arrays)


def test_pruned_snapshots_leave_by_a_rename_then_shrink_before_unlink(tmp_path, monkeypatch):
    """One unlink of a large file is one large file-system transaction for the journal's
    next fdatasync to commit; pruning renames first (no longer a snapshot to recovery), then
    shrinks the file a step at a time."""
    from ringex.engine.storage import gentle_unlink

    monkeypatch.setattr(gentle_unlink, "STEP", 4096)
    monkeypatch.setattr(gentle_unlink, "GAP_S", 0.0)
    for seq in (10, 20):
        write_snapshot(tmp_path, seq, {"x": np.arange(3000)}, {}, keep=0)
    size = (tmp_path / snapshot_name(10)).stat().st_size
    seen: list[tuple[str, int]] = []
    real = os.ftruncate
    monkeypatch.setattr(gentle_unlink.os, "ftruncate",
                        lambda fd, n: (seen.append((os.readlink(f"/proc/self/fd/{fd}"), n)), real(fd, n))[1])
    assert sn.prune_snapshots(tmp_path, keep=1) == [tmp_path / snapshot_name(10)]
    assert {os.path.basename(p) for p, _ in seen} == {f".snapshot-{10:020d}.snap.tmp-{os.getpid()}"}
    assert [n for _, n in seen] == list(range(size - 4096, 0, -4096)) + [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [snapshot_name(20)]
