"""Journal retention: covered segments deleted or archived, every crash point of archiving,
and a real run that rolls segments and takes snapshots, then replays and recovers."""

from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline_kit import admin_count, assert_same_state, make_config, run_orders
from ringex.engine.engine import MatchingEngine
from ringex.engine.pipeline.engine_agent import read_engine_file
from ringex.engine.storage.data_dir import journal_dir, snapshot_dir
from ringex.engine.storage.journal_format import (
    TEMP_SUFFIX,
    JournalCorruptError,
    archived_name,
    list_archived,
    list_segments,
)
from ringex.engine.storage.journal_reader import JournalReader, replay_from
from ringex.engine.storage.journal_retention import (
    RETIRING_PREFIX,
    RetentionWorker,
    archive_dir_of,
    record_archive_dir,
    retire_segments,
)
from ringex.engine.storage.journal_writer import JournalWriter
from ringex.engine.storage.recovery import record_slots, recover_engine
from ringex.engine.storage.snapshot import list_snapshots
from ringex.tools.config import ConfigError, parse_config
from ringex.tools.replay import replay

SLOT = 64


def write_journal(jdir: Path, batches: int = 12, count: int = 3) -> list[tuple[int, int, bytes]]:
    """A journal of small segments (several records each); returns (first_seq, count, bytes)."""
    out = []
    with JournalWriter(jdir, 700, "none", slot_size=SLOT) as w:
        for i in range(batches):
            seq = i * count
            payload = np.full((count, SLOT), i + 1, dtype=np.uint8)
            w.append(seq, payload, count)
            out.append((seq, count, payload.tobytes()))
    return out


def read_all(jdir: Path, **kw) -> list[tuple[int, int, bytes]]:
    return [(r.first_seq, r.count, bytes(r.payload)) for r in JournalReader(jdir, **kw).records()]


@pytest.fixture
def journal(tmp_path: Path) -> tuple[Path, Path, list]:
    jdir, archive = tmp_path / "data" / "journal", tmp_path / "data" / "archive"
    records = write_journal(jdir)
    record_archive_dir(jdir, archive)
    assert len(list_segments(jdir)) >= 4
    return jdir, archive, records


# --- archiving -------------------------------------------------------------------------------


def test_archive_moves_covered_segments_compressed(journal) -> None:
    jdir, archive, records = journal
    segs = list_segments(jdir)
    originals = {first: path.read_bytes() for first, path in segs}
    cut = segs[2][0]
    retired = retire_segments(jdir, cut, archive)
    assert retired == [segs[0][1], segs[1][1]]
    assert [first for first, _ in list_segments(jdir)] == [first for first, _ in segs[2:]]
    archived = list_archived(archive)
    assert [first for first, _ in archived] == [segs[0][0], segs[1][0]]
    for first, path in archived:
        assert path.name == archived_name(first)
        assert path.read_bytes()[:2] == b"\x1f\x8b"  # gzip
        assert gzip.decompress(path.read_bytes()) == originals[first]
    # archive + live read as one journal, from the directory's pointer
    assert archive_dir_of(jdir) == archive.resolve()
    assert (jdir / ".archive").read_text() == "../archive"
    assert read_all(jdir) == records
    assert [(r.first_seq, r.count) for r in replay_from(jdir, 1)][0] == (1, 2)


def test_worker_retires_off_the_callers_thread_and_merges_requests(journal) -> None:
    jdir, archive, records = journal
    segs = list_segments(jdir)
    worker = RetentionWorker(jdir, archive)
    try:
        worker.request(segs[1][0])
        worker.request(segs[3][0])  # merged with the first if it arrives while that one runs
        worker.request(segs[2][0])  # lower than asked already: nothing more to do
        assert worker.wait(30), "retention did not finish"
        assert [first for first, _ in list_segments(jdir)] == [first for first, _ in segs[3:]]
        assert [first for first, _ in list_archived(archive)] == [first for first, _ in segs[:3]]
        assert 1 <= worker.passes <= 2 and worker.failures == 0
        assert read_all(jdir) == records
    finally:
        assert worker.close(30)


def test_worker_close_finishes_the_pending_pass(journal) -> None:
    jdir, archive, records = journal
    segs = list_segments(jdir)
    worker = RetentionWorker(jdir, archive)
    worker.request(segs[-1][0])
    assert worker.close(30)  # returns only once the requested pass is done
    assert [first for first, _ in list_segments(jdir)] == [segs[-1][0]]
    assert read_all(jdir) == records


def test_a_failed_pass_is_logged_and_retried_at_the_next_request(journal, caplog) -> None:
    jdir, archive, records = journal
    segs = list_segments(jdir)
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_text("not a directory")  # every pass fails: the archive cannot be made
    worker = RetentionWorker(jdir, archive)
    try:
        with caplog.at_level(logging.ERROR, logger="ringex.engine.storage.journal_retention"):
            worker.request(segs[1][0])
            assert worker.wait(30)
        assert worker.failures == 1 and "stay live" in caplog.text
        assert list_segments(jdir) == segs  # nothing lost
        archive.unlink()
        worker.request(segs[2][0])
        assert worker.wait(30)
        assert [first for first, _ in list_segments(jdir)] == [first for first, _ in segs[2:]]
        assert read_all(jdir) == records
    finally:
        assert worker.close(30)


def test_the_pointer_is_relative_inside_the_data_dir_so_a_copy_reads(journal, tmp_path) -> None:
    jdir, archive, records = journal
    retire_segments(jdir, list_segments(jdir)[-1][0], archive)
    assert len(list_segments(jdir)) == 1
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "data", copy)
    shutil.rmtree(tmp_path / "data")
    assert read_all(copy / "journal") == records


def test_pointer_outside_the_data_dir_is_absolute(tmp_path) -> None:
    jdir = tmp_path / "data" / "journal"
    jdir.mkdir(parents=True)
    record_archive_dir(jdir, tmp_path / "elsewhere")
    assert (jdir / ".archive").read_text() == str((tmp_path / "elsewhere").resolve())
    assert archive_dir_of(jdir) == (tmp_path / "elsewhere").resolve()


def test_archive_is_not_the_journal_directory(journal) -> None:
    jdir, _archive, _records = journal
    with pytest.raises(ValueError, match="journal directory itself"):
        retire_segments(jdir, 10**9, jdir)


def test_a_segment_archived_while_being_read_is_read_from_the_archive(journal) -> None:
    jdir, archive, records = journal
    reader = JournalReader(jdir)
    listed = reader.segments()  # the listing a reader made just before the engine archived
    retire_segments(jdir, listed[2][0], archive)
    reader.segments = lambda: listed
    assert [(r.first_seq, r.count, bytes(r.payload)) for r in reader.records()] == records


def test_damaged_archive_is_named(journal) -> None:
    jdir, archive, _records = journal
    retire_segments(jdir, list_segments(jdir)[2][0], archive)
    first = list_archived(archive)[0][1]
    first.write_bytes(first.read_bytes()[:-9])  # cut into the gzip trailer
    with pytest.raises(JournalCorruptError) as err:
        read_all(jdir)
    assert str(first) in str(err.value) and "decompress" in str(err.value)


def test_a_missing_archived_segment_is_a_gap(journal) -> None:
    jdir, archive, _records = journal
    retire_segments(jdir, list_segments(jdir)[3][0], archive)
    list_archived(archive)[1][1].unlink()
    with pytest.raises(JournalCorruptError, match="sequence gap"):
        read_all(jdir)


# --- crash points (a kill between two steps leaves the files as they were) -------------------


def test_kill_while_writing_the_temporary(journal, caplog) -> None:
    """Crash point 1: a partial temporary in the archive, the live segment intact."""
    jdir, archive, records = journal
    first, path = list_segments(jdir)[0]
    archive.mkdir()
    tmp = archive / (archived_name(first) + TEMP_SUFFIX)
    tmp.write_bytes(gzip.compress(path.read_bytes())[:37])
    assert read_all(jdir) == records  # readers never look at a temporary
    with caplog.at_level(logging.WARNING):
        retire_segments(jdir, list_segments(jdir)[1][0], archive)
    assert "leftover archive temporary" in caplog.text
    assert not tmp.exists()
    assert [f for f, _ in list_archived(archive)] == [first]
    assert not path.exists()
    assert read_all(jdir) == records


def test_kill_after_the_rename_before_the_unlink(journal, caplog) -> None:
    """Crash point 3: the segment both archived and live."""
    jdir, archive, records = journal
    segs = list_segments(jdir)
    archive.mkdir()
    for first, path in segs[:2]:
        (archive / archived_name(first)).write_bytes(gzip.compress(path.read_bytes(), mtime=0))
    assert read_all(jdir) == records  # no message twice
    # The live copy wins over the archived one where both exist.
    (archive / archived_name(segs[1][0])).write_bytes(b"not gzip")
    assert read_all(jdir) == records
    # The next pass checks the archived copies: the good one stays, the bad one is redone.
    with caplog.at_level(logging.WARNING):
        retire_segments(jdir, segs[2][0], archive)
    assert "archiving it again" in caplog.text and str(archive / archived_name(segs[1][0])) in caplog.text
    assert [f for f, _ in list_segments(jdir)] == [f for f, _ in segs[2:]]
    assert read_all(jdir) == records


def test_kill_before_the_temporary_exists_or_after_the_unlink(journal) -> None:
    """Before point 1 nothing changed; after point 3 the pass had finished that segment:
    in both cases the next pass simply goes on."""
    jdir, archive, records = journal
    segs = list_segments(jdir)
    retire_segments(jdir, segs[1][0], archive)  # segment 0 done, the "kill" came next
    retire_segments(jdir, segs[3][0], archive)
    assert [f for f, _ in list_archived(archive)] == [f for f, _ in segs[:3]]
    assert read_all(jdir) == records


def test_deleting_without_archive(tmp_path) -> None:
    jdir = tmp_path / "journal"
    records = write_journal(jdir)
    segs = list_segments(jdir)
    assert retire_segments(jdir, segs[2][0]) == [segs[0][1], segs[1][1]]
    assert read_all(jdir) == [r for r in records if r[0] >= segs[2][0]]
    with pytest.raises(JournalCorruptError, match="messages missing"):
        list(replay_from(jdir, 0))
    assert [p.name for p in jdir.iterdir() if p.name.startswith(RETIRING_PREFIX)] == []


def test_a_segment_is_shrunk_before_it_is_unlinked_and_a_deletion_cut_short_is_finished(
        tmp_path, monkeypatch) -> None:
    """A retired segment leaves the journal by a rename, then loses its blocks a step at a
    time (one unlink of 64 MiB made the engine's next fdatasync wait 15-19 ms); a kill in
    the middle leaves a .retiring- file that no reader sees and the next pass deletes."""
    import os

    from ringex.engine.storage import gentle_unlink

    monkeypatch.setattr(gentle_unlink, "STEP", 64)
    monkeypatch.setattr(gentle_unlink, "GAP_S", 0.0)
    jdir = tmp_path / "journal"
    records = write_journal(jdir)  # (before the patch: its writer cuts files too)
    sizes: list[int] = []
    real_ftruncate = os.ftruncate
    monkeypatch.setattr(gentle_unlink.os, "ftruncate", lambda fd, n: (sizes.append(n), real_ftruncate(fd, n))[1])
    segs = list_segments(jdir)
    first_size = segs[0][1].stat().st_size
    retire_segments(jdir, segs[1][0])
    assert sizes == list(range(first_size - 64, 0, -64)) + [0]
    # a deletion cut short by a kill: renamed, half shrunk
    leftover = jdir / (RETIRING_PREFIX + segs[1][1].name)
    os.replace(segs[1][1], leftover)
    os.truncate(leftover, 100)
    assert read_all(jdir) == [r for r in records if r[0] >= segs[2][0]]  # not a segment to readers
    retire_segments(jdir, segs[1][0])
    assert not leftover.exists()


# --- configuration ---------------------------------------------------------------------------


def _journal_config(tmp_path: Path, archive_line: str):
    return parse_config(f'[exchange]\ndata_dir = "data"\n[journal]\n{archive_line}\n', base_dir=tmp_path)


def test_config_archive_dir_resolves_like_data_dir(tmp_path) -> None:
    assert _journal_config(tmp_path, "").archive_path() is None
    cfg = _journal_config(tmp_path, 'archive_dir = "old-journal"')
    assert cfg.archive_path() == tmp_path / "old-journal"
    cfg = _journal_config(tmp_path, f'archive_dir = "{tmp_path / "abs"}"')
    assert cfg.archive_path() == tmp_path / "abs"


@pytest.mark.parametrize("value, message", [
    ('""', "must be a directory path"),
    ('"data"', "is the data directory"),
    ('"data/journal"', "is the journal directory"),
    ('"data/snapshots/"', "is the snapshot directory"),
    ('"afile"', "exists and is not a directory"),
])
def test_config_archive_dir_is_checked(tmp_path, value, message) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError) as err:
        _journal_config(tmp_path, f"archive_dir = {value}")
    assert "$.journal.archive_dir" in str(err.value) and message in str(err.value)


# --- a real run: segments roll, snapshots are taken, retention keeps disk use bounded ---------

ORDERS = 2000


def run_exchange(tmp: Path, *, archive: bool) -> tuple[Path, str, int]:
    """Run the test venue until every order is answered and the output is quiet; returns the
    data directory, the hash of the output the subscriber saw and its event count."""
    # Snapshots in place: one every 200 messages exactly, however fast the flood (a forked
    # writer still busy when the next is due pushes it back), so three are kept to check.
    cfg = make_config(tmp, snapshot_every=200, archive=archive, snapshot_writer="inline")
    reader = run_orders(cfg, ORDERS, quiet_s=0.3)
    assert reader.rejections == {}
    live = reader.hash.hexdigest(), reader.events
    return cfg.data_path(), *live


def assert_covered_segments_gone(data: Path) -> None:
    snaps = list_snapshots(snapshot_dir(data))
    assert len(snaps) == 3  # snapshots_kept
    oldest = snaps[0][0]
    segs = list_segments(journal_dir(data))
    # no live segment lies wholly before the oldest kept snapshot (the next one starts after it)
    assert all(segs[i + 1][0] > oldest for i in range(len(segs) - 1))
    assert segs[0][0] <= oldest


def recovered_state(data: Path) -> tuple[dict, int]:
    engine, next_seq, _events, rest = recover_engine(read_engine_file(data), data)
    for _ in rest:
        pass
    return {k: v.copy() for k, v in engine.arrays().items()}, next_seq


def test_run_with_archive_keeps_every_day_replayable(tmp_path: Path) -> None:
    data, live_hash, live_events = run_exchange(tmp_path, archive=True)
    assert_covered_segments_gone(data)
    archive = data / "archive"
    archived = list_archived(archive)
    live = list_segments(journal_dir(data))
    assert len(archived) >= 2 and archived[0][0] == 1
    assert archived[-1][0] < live[0][0]  # a crash-free run leaves no segment in both
    assert all(p.read_bytes()[:2] == b"\x1f\x8b" for _, p in archived)
    assert not any(p.name.endswith(TEMP_SUFFIX) for p in archive.iterdir())
    # the whole run replays from archive + live to what the subscriber saw
    result = replay(data)
    assert result["from_snapshot"] is None and result["first_seq"] == 1
    assert result["messages"] == ORDERS + admin_count(make_config(tmp_path))
    assert result["events"] == live_events and result["output_sha256"] == live_hash
    # recovery: the newest snapshot + journal equals a replay of the whole journal
    recovered, _ = recovered_state(data)
    engine = MatchingEngine(read_engine_file(data))
    for rec in JournalReader(journal_dir(data)).records():
        engine.process(record_slots(rec))
    assert_same_state(recovered, {k: v.copy() for k, v in engine.arrays().items()})
    # with no snapshot at all, recovery replays the archive and the live journal
    for _, path in list_snapshots(snapshot_dir(data)):
        path.unlink()
    from_scratch, next_seq = recovered_state(data)
    assert next_seq == 1
    assert_same_state(from_scratch, recovered)


def test_run_without_archive_deletes_and_still_recovers(tmp_path: Path) -> None:
    data, _live_hash, _live_events = run_exchange(tmp_path, archive=False)
    assert_covered_segments_gone(data)
    assert list_segments(journal_dir(data))[0][0] > 1
    assert not (data / "archive").exists() and not (journal_dir(data) / ".archive").exists()
    recovered, next_seq = recovered_state(data)
    assert next_seq == list_snapshots(snapshot_dir(data))[-1][0]
    # Every kept snapshot is still usable: from the oldest, the live journal replays to the same state.
    for _, path in list_snapshots(snapshot_dir(data))[1:]:
        path.unlink()
    from_oldest, _ = recovered_state(data)
    assert_same_state(from_oldest, recovered)
    # ringex replay starts at the snapshot, as recovery would
    result = replay(data)
    assert result["from_snapshot"] == list_snapshots(snapshot_dir(data))[-1][0]
    assert result["first_seq"] == result["from_snapshot"]


def test_an_archive_no_longer_configured_is_no_longer_named(journal) -> None:
    jdir, archive, records = journal
    retire_segments(jdir, list_segments(jdir)[2][0], archive)
    record_archive_dir(jdir, None)
    assert archive_dir_of(jdir) is None
    assert read_all(jdir) == [r for r in records if r[0] >= list_segments(jdir)[0][0]]
    record_archive_dir(jdir, None)  # nothing to remove
