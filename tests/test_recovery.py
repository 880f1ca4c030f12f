"""Recovery (newest valid snapshot + journal): on a snapshot and journal written here, and from
damaged storage and with the journal tools on a data directory a real run wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline_kit import PERP, SPOT, admin_count, assert_same_state, make_config, run_orders, shm_leftovers
from ringex.engine.pipeline.engine_agent import read_engine_file
from ringex.engine.engine import MatchingEngine
from ringex.engine.storage.data_dir import journal_dir, snapshot_dir
from ringex.engine.storage.journal_format import JournalCorruptError, list_segments
from ringex.engine.storage.journal_reader import JournalReader
from ringex.engine.storage.journal_writer import JournalWriter
from ringex.engine.storage.recovery import (
    JournalBehindSnapshotError, load_recovery, record_slots, recover_engine,
)
from ringex.engine.storage.snapshot import list_snapshots, snapshot_name, write_snapshot
from ringex.tools.launcher import Exchange
from ringex.tools.replay import replay

ORDERS = 1200


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A data directory from a real run: several journal segments and snapshots."""
    tmp = tmp_path_factory.mktemp("run")
    cfg = make_config(tmp, snapshot_every=250)
    reader = run_orders(cfg, ORDERS)
    # the data holds real trading on both instruments (no order refused for want of funds)
    assert reader.rejections == {}
    assert reader.trades[SPOT] > 0 and reader.trades[PERP] > 0
    data = cfg.data_path()
    assert len(JournalReader(journal_dir(data)).segments()) >= 2  # archived and live
    assert len(list_snapshots(snapshot_dir(data))) >= 2
    return data


@pytest.fixture
def data(written: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(written, copy)
    return copy


def state_after_recovery(data: Path) -> tuple[dict, int]:
    cfg = read_engine_file(data)
    engine, next_seq, _events, rest = recover_engine(cfg, data)
    for _ in rest:
        pass
    return {k: v.copy() for k, v in engine.arrays().items()}, next_seq


def state_by_full_replay(data: Path, upto_seq: int | None = None) -> dict:
    engine = MatchingEngine(read_engine_file(data))
    for rec in JournalReader(journal_dir(data)).records(to_seq=upto_seq):
        engine.process(record_slots(rec))
    return {k: v.copy() for k, v in engine.arrays().items()}


def test_recovered_state_equals_a_replay_of_the_journal(data: Path) -> None:
    recovered, _ = state_after_recovery(data)
    assert_same_state(recovered, state_by_full_replay(data))


def test_torn_journal_tail_is_truncated_and_not_applied(data: Path) -> None:
    # A crash mid-append tears only what no snapshot covers (a snapshot syncs the journal
    # first): drop the final snapshot the clean stop wrote, then tear the last record.
    snaps = list_snapshots(snapshot_dir(data))
    snaps[-1][1].unlink()
    segs = list_segments(journal_dir(data))
    last = segs[-1][1]
    before = JournalReader(journal_dir(data)).last_seq
    size = last.stat().st_size
    with open(last, "r+b") as f:  # a crash in the middle of the last record's payload
        f.truncate(size - 100)
    # Opening the journal for appending (what the engine does) repairs the tail.
    JournalWriter(journal_dir(data)).close()
    after = JournalReader(journal_dir(data)).last_seq
    assert after < before
    assert list_snapshots(snapshot_dir(data))[-1][0] <= after + 1
    recovered, next_seq = state_after_recovery(data)
    assert next_seq <= after + 1
    assert_same_state(recovered, state_by_full_replay(data))


def test_a_snapshot_ahead_of_the_journal_is_refused_naming_the_lost_range(data: Path) -> None:
    """The journal's tail lost after the newest snapshot was written: the snapshot is kept
    as it is, and recovery refuses rather than journal over the lost sequence numbers."""
    newest_seq = list_snapshots(snapshot_dir(data))[-1][0]
    last = list_segments(journal_dir(data))[-1][1]
    with open(last, "r+b") as f:  # a torn tail, repaired: the journal now ends earlier
        f.truncate(last.stat().st_size - 100)
    JournalWriter(journal_dir(data)).close()
    end = JournalReader(journal_dir(data)).last_seq
    assert end + 1 < newest_seq
    with pytest.raises(JournalBehindSnapshotError) as err:
        state_after_recovery(data)
    text = str(err.value)
    assert f"ends at sequence {end}" in text
    assert f"messages {end + 1}..{newest_seq - 1} are missing" in text
    assert str(snapshot_dir(data)) in text
    # The way out the message offers, taken: recovery ends where the journal does.
    aside = data.parent / "aside"
    aside.mkdir()
    for seq, path in list_snapshots(snapshot_dir(data)):
        if seq > end + 1:
            path.rename(aside / path.name)
    recovered, next_seq = state_after_recovery(data)
    assert next_seq <= end + 1
    assert_same_state(recovered, state_by_full_replay(data))


def test_the_exchange_refuses_to_start_on_a_journal_behind_its_snapshot(data: Path, tmp_path: Path) -> None:
    """Refused by the launcher before any process or ring exists, not by an engine that
    dies on every restart."""
    last = list_segments(journal_dir(data))[-1][1]
    with open(last, "r+b") as f:
        f.truncate(last.stat().st_size - 100)
    JournalWriter(journal_dir(data)).close()
    cfg = make_config(tmp_path)  # the copy's own data directory, tmp_path / "data"
    assert cfg.data_path() == data
    exchange = Exchange(cfg)
    with pytest.raises(JournalBehindSnapshotError, match="are missing from the journal"):
        exchange.start()
    assert exchange._children == [] and shm_leftovers(cfg.exchange.shm_prefix) == []


def test_a_snapshot_with_no_journal_at_all_is_refused(data: Path) -> None:
    for _seq, path in list_segments(journal_dir(data)):
        path.unlink()
    shutil.rmtree(data / "archive")  # the run's retired segments: the journal's oldest part
    with pytest.raises(JournalBehindSnapshotError, match="the journal holds no segment"):
        state_after_recovery(data)


def test_corrupt_middle_record_stops_recovery_naming_file_and_offset(data: Path) -> None:
    first = list_segments(journal_dir(data))[0][1]
    for seq, path in list_snapshots(snapshot_dir(data)):
        path.unlink()  # force a replay through the damage
    with open(first, "r+b") as f:
        f.seek(48 + 32 + 5)  # inside the first record's payload
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(JournalCorruptError) as err:
        state_after_recovery(data)
    assert str(first) in str(err.value) and "offset" in str(err.value)


def test_corrupt_latest_snapshot_falls_back_to_the_previous(data: Path) -> None:
    snaps = list_snapshots(snapshot_dir(data))
    newest = snaps[-1][1]
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0x55
    newest.write_bytes(bytes(raw))
    recovered, _ = state_after_recovery(data)
    assert_same_state(recovered, state_by_full_replay(data))


def test_replay_and_journal_dump_commands(data: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "ringex.tools.cli", "replay", str(data), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["output_sha256"] == replay(data)["output_sha256"]
    admin = admin_count(make_config(data))  # the venue's admin messages come first
    assert doc["messages"] == ORDERS + admin

    first = admin + 1
    r = subprocess.run([sys.executable, "-m", "ringex.tools.cli", "journal", "dump", str(data),
                        "--from", str(first), "--to", str(first + 4), "--type", "NewOrder"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [int(ln.split()[0]) for ln in lines] == list(range(first, first + 5))
    assert all(" NewOrder " in ln and "clOrdId=" in ln and "side=" in ln for ln in lines)

    # the configured deposits are in the journal as Funds, the insurance fund's (account 0) last
    r = subprocess.run([sys.executable, "-m", "ringex.tools.cli", "journal", "dump", str(data),
                        "--to", str(admin), "--type", "Funds"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 5 and all("amount=" in ln and "asset=" in ln for ln in lines)
    assert "account=0 " in lines[-1] + " "

    r = subprocess.run([sys.executable, "-m", "ringex.tools.cli", "journal", "dump", str(data),
                        "--type", "NoSuchMessage"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "unknown message type" in r.stderr

    r = subprocess.run([sys.executable, "-m", "ringex.tools.cli", "replay", str(data / "nowhere")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "ringex replay:" in r.stderr


# --- the plan on any snapshot and journal: newest valid snapshot + journal after it ----------

SLOT = 64


def slots(first: int, count: int) -> bytes:
    return b"".join(i.to_bytes(8, "little") * (SLOT // 8) for i in range(first, first + count))


def test_recovery_replays_journal_after_snapshot(tmp_path):
    jdir, sdir = tmp_path / "journal", tmp_path / "snap"
    with JournalWriter(jdir, 500, "batch", slot_size=SLOT) as w:
        seq = 0
        for k in (3, 4, 5, 2, 6):  # records 0-2, 3-6, 7-11, 12-13, 14-19
            w.append(seq, slots(seq, k), k)
            seq += k
    write_snapshot(sdir, 5, {"state": np.arange(5)}, {"n": 5})
    write_snapshot(sdir, 9, {"state": np.arange(9)}, {"n": 9})
    rec = load_recovery(sdir, jdir)
    assert rec.snapshot.seq == 9 and rec.from_seq == 9
    got = [(r.first_seq, r.count, bytes(r.payload)) for r in rec.records()]
    # the record 7-11 straddles the snapshot: split at message granularity
    assert [(f, c) for f, c, _ in got] == [(9, 3), (12, 2), (14, 6)]
    assert b"".join(p for _, _, p in got) == slots(9, 11)

    # the newest snapshot is damaged: fall back to 5 and replay more
    os.truncate(sdir / snapshot_name(9), 30)
    rec = load_recovery(sdir, jdir)
    assert rec.snapshot.seq == 5
    assert [(r.first_seq, r.count) for r in rec.records()] == [(5, 2), (7, 5), (12, 2), (14, 6)]

    # no snapshot at all: the whole journal
    rec = load_recovery(tmp_path / "none", jdir, initial_seq=0)
    assert rec.snapshot is None and rec.from_seq == 0
    assert sum(r.count for r in rec.records()) == 20


def test_recovery_snapshot_at_journal_end(tmp_path):
    jdir, sdir = tmp_path / "journal", tmp_path / "snap"
    with JournalWriter(jdir, 500, "batch", slot_size=SLOT) as w:
        w.append(0, slots(0, 4), 4)
    write_snapshot(sdir, 4, {}, {})
    assert list(load_recovery(sdir, jdir).records()) == []
