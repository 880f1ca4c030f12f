"""Snapshots written by a forked child (and, in the exchange test, by the shadow engine) while
the engine goes on: the same state, the same replay.

A snapshot taken off the hot path must be byte for byte the one the engine would have written
in place at the same sequence, although the engine keeps matching (and so writing its arena)
while the child writes; and an exchange whose periodic snapshots are all forked must recover
from each of them to the state and output a replay of the whole journal gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline_kit import admin_messages, assert_same_state, attached, make_config, order_bytes, pump
from ringex.engine.engine import MatchingEngine, pack_slots
from ringex.engine.pipeline.engine_agent import read_engine_file, stream_hash, update_stream_hash
from ringex.engine.storage.data_dir import journal_dir, snapshot_dir
from ringex.engine.storage.journal_reader import JournalReader, replay_from
from ringex.engine.storage.recovery import record_slots
from ringex.engine.storage.snapshot import list_snapshots, read_snapshot, write_snapshot
from ringex.engine.storage.snapshot_fork import ForkedSnapshots
from ringex.tools.launcher import Exchange


def _engine_with_orders(tmp_path: Path) -> tuple[MatchingEngine, list[bytes]]:
    cfg = make_config(tmp_path)
    engine = MatchingEngine(cfg.engine)
    engine.process(pack_slots(admin_messages(cfg)))
    return engine, order_bytes(1, 1200)


def test_a_forked_snapshot_is_the_in_place_one_although_the_engine_goes_on(tmp_path: Path) -> None:
    engine, orders = _engine_with_orders(tmp_path)
    engine.process(pack_slots(orders[:600]))
    in_place = engine.snapshot()  # a copy, as of now
    forked = ForkedSnapshots(tmp_path / "forked", keep=3)
    assert forked.start(601, engine.state.arena, {"events_total": 1})
    assert not forked.start(602, engine.state.arena, {})  # one at a time
    # The engine goes on while the child writes: every page it touches is copied for it.
    for i in range(600, 1200, 50):
        engine.process(pack_slots(orders[i:i + 50]))
    assert not np.array_equal(engine.state.arena, in_place)
    done = forked.wait(120)
    assert done is not None and done.ok, done
    assert (done.seq, forked.in_flight, forked.taken) == (601, False, 1)
    snap = read_snapshot(list_snapshots(tmp_path / "forked")[-1][1])
    assert snap.seq == 601 and snap.meta == {"events_total": 1}
    assert np.array_equal(snap.arrays["arena"], in_place)
    write_snapshot(tmp_path / "inline", 601, {"arena": in_place}, {"events_total": 1})
    assert (tmp_path / "inline" / snap.path.name).read_bytes() == snap.path.read_bytes()


def test_a_failed_or_killed_writer_is_reported_and_the_next_one_runs(tmp_path: Path) -> None:
    engine, _ = _engine_with_orders(tmp_path)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the snapshot directory should be")
    forked = ForkedSnapshots(blocked)
    assert forked.start(1, engine.state.arena, {})
    done = forked.wait(60)
    assert done is not None and not done.ok and done.detail == "writer exited with 1"
    forked = ForkedSnapshots(tmp_path / "snaps")
    assert forked.start(2, engine.state.arena, {})
    forked.kill()
    assert not forked.in_flight and forked.failed == 1
    assert forked.start(3, engine.state.arena, {})
    done = forked.wait(120)
    assert done is not None and done.ok and [s for s, _ in list_snapshots(tmp_path / "snaps")] == [3]


@pytest.mark.slow
@pytest.mark.parametrize("writer", ["fork", "shadow"])
def test_an_exchange_snapshotting_off_its_thread_recovers_from_each_snapshot_to_the_replay(
        tmp_path: Path, writer: str) -> None:
    cfg = make_config(tmp_path, snapshot_every=250, snapshot_writer=writer)
    assert cfg.journal.snapshot_writer == writer
    data = cfg.data_path()
    exchange = Exchange(cfg)
    exchange.start()
    try:
        with attached(exchange, cfg) as (reader, producer):
            # Four chunks of 300, each waited for, then its snapshot: either writer
            # finishes well within a chunk, so each chunk gets one.
            for first in range(1, 1201, 300):
                pending = order_bytes(first, 300)
                newest = max([s for s, _ in list_snapshots(snapshot_dir(data))], default=0)

                def step() -> bool:
                    while pending and producer.offer(pending[0]):
                        pending.pop(0)
                    return not pending and len(reader.acked) >= first + 299 and max(
                        [s for s, _ in list_snapshots(snapshot_dir(data))], default=0) > newest

                pump(exchange, reader, step, timeout=120)
    finally:
        exchange.stop()
    assert reader.rejections == {}
    snaps = list_snapshots(snapshot_dir(data))
    assert len(snaps) == 3  # the newest snapshots_kept: two written beside the engine, the final one in place
    # The whole journal, replayed from empty: the reference state and per-seq event counts.
    full = MatchingEngine(read_engine_file(data))
    tail_hash_from: dict[int, object] = {}
    for rec in JournalReader(journal_dir(data)).records():
        if rec.first_seq in {s for s, _ in snaps}:
            tail_hash_from[rec.first_seq] = stream_hash()
        events = full.process(record_slots(rec))
        for h in tail_hash_from.values():
            update_stream_hash(h, events)
    for seq, path in snaps:
        snap = read_snapshot(path)
        engine = MatchingEngine(read_engine_file(data))
        engine.restore(snap.arrays["arena"])
        h = stream_hash()
        for rec in replay_from(journal_dir(data), seq):
            update_stream_hash(h, engine.process(record_slots(rec)))
        assert_same_state({k: v.copy() for k, v in engine.arrays().items()}, full.arrays())
        if seq in tail_hash_from:  # a snapshot at a record boundary: the same events after it
            assert h.hexdigest() == tail_hash_from[seq].hexdigest()
    # no temporary file of a writer is left behind
    assert [p.name for p in snapshot_dir(data).iterdir() if ".tmp" in p.name] == []


def test_an_engine_that_cannot_fork_logs_counts_and_tries_again_later(tmp_path: Path, monkeypatch, caplog) -> None:
    """No memory or process slot for the writer: the engine goes on, and does not retry on
    every duty cycle."""
    import os as _os

    from ringex.engine.pipeline.engine_agent import EngineAgent

    cfg = make_config(tmp_path)
    agent = EngineAgent(cfg.engine, str(tmp_path / "data"), "unused-in", "unused-out", snapshot_every=10)
    agent.engine = MatchingEngine(cfg.engine)
    agent.journal = type("J", (), {"fileno": staticmethod(lambda: -1)})()
    agent.next_seq, agent.events_total, agent._since_snapshot = 11, 0, 10
    forked = ForkedSnapshots(tmp_path / "snaps")

    def no_fork() -> int:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(_os, "fork", no_fork)
    agent._fork_snapshot(forked)
    assert agent._since_snapshot == 0 and not forked.in_flight
    assert "cannot fork the snapshot writer" in caplog.text


def test_direct_io_writes_the_same_file_as_the_page_cache(tmp_path: Path) -> None:
    """The forked writer's O_DIRECT path, an array whose length is not whole pages (the tail
    goes through the cache) and a small unaligned one beside it: the same bytes either way."""
    from ringex.engine.kernel.memory import zeroed_words

    big = zeroed_words(3 * 1024 * 1024 + 123)  # page-aligned, 24 MiB and a bit
    big[:] = np.arange(len(big)) * 7
    small = np.arange(5, dtype=np.int16)[1:]  # not page-aligned
    arrays = {"arena": big, "small": small}
    direct = write_snapshot(tmp_path / "direct", 9, arrays, {"n": 1}, direct=True)
    cached = write_snapshot(tmp_path / "cached", 9, arrays, {"n": 1})
    assert direct.read_bytes() == cached.read_bytes()
    snap = read_snapshot(direct)
    assert np.array_equal(snap.arrays["arena"], big) and np.array_equal(snap.arrays["small"], small)
