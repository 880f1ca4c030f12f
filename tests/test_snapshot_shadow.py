"""Snapshots written by a shadow engine that follows the journal: byte for byte the engine's
own at the same sequence, written while the journal grows, and a shadow that dies is
replaced without the engine noticing more than a log line and a counter."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest

from pipeline_kit import admin_messages, attached, make_config, order_bytes, pump
from ringex.engine.engine import MatchingEngine, pack_slots
from ringex.engine.pipeline.engine_agent import SNAPSHOTS_COUNTER
from ringex.engine.storage.data_dir import journal_dir, snapshot_dir
from ringex.engine.storage.journal_writer import JournalWriter
from ringex.engine.storage.snapshot import list_snapshots, read_snapshot, write_snapshot
from ringex.engine.storage.snapshot_shadow import ShadowSnapshots
from ringex.engine.wire import messages as m
from ringex.ringbuffer.counters import CountersReader
from ringex.tools.launcher import Exchange


def _wait_for(shadow: ShadowSnapshots, count: int, timeout: float = 120.0) -> list[int]:
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        seen += shadow.poll()
        time.sleep(0.02)
    return seen


def test_the_shadows_snapshot_is_the_engines_own_byte_for_byte(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    data = tmp_path / "data"
    slots = pack_slots(admin_messages(cfg) + order_bytes(1, 900))
    n = len(slots)
    # sequences start at 1, as the sequencer numbers them; three records, and the shadow
    # snapshots after 400 messages (at the end of the second record: seq 421 is next)
    journal = JournalWriter(journal_dir(data), 1 << 16, "none", slot_size=m.SLOT_SIZE, first_seq=1)
    cut = [0, 200, 420, n]
    journal.append(1, [slots[:200]], 200)
    journal.append(201, [slots[200:420]], 220)
    shadow = ShadowSnapshots(data, cfg.engine, snapshot_every=400, keep=3)
    shadow.start()
    try:
        assert _wait_for(shadow, 1) == [421]
        # it follows the journal as it grows
        journal.append(421, [slots[420:]], n - 420)
        assert _wait_for(shadow, 1) == [n + 1]
        assert shadow.running and shadow.failed == 0
    finally:
        shadow.close()
        journal.close()
    assert not shadow.running
    engine = MatchingEngine(cfg.engine)
    events = 0
    meta = {"schema": m.SCHEMA.fingerprint, "engine": msgspec.to_builtins(cfg.engine)}
    for lo, hi in zip(cut, cut[1:]):
        events += len(engine.process(slots[lo:hi]))
        if hi in (420, n):
            own = write_snapshot(tmp_path / f"own-{hi}", hi + 1, {"arena": engine.state.arena},
                                 {**meta, "events_total": events})
            shadows = snapshot_dir(data) / own.name
            assert shadows.read_bytes() == own.read_bytes()
    assert [p.name for p in snapshot_dir(data).iterdir() if ".tmp" in p.name] == []


def test_a_shadow_that_cannot_recover_is_reported_and_started_again(tmp_path: Path, monkeypatch) -> None:
    from ringex.engine.storage import snapshot_shadow

    monkeypatch.setattr(snapshot_shadow, "RESTART_DELAY_S", 0.2)
    cfg = make_config(tmp_path)
    data = tmp_path / "data"
    journal_dir(data).mkdir(parents=True)
    (journal_dir(data) / "journal-00000000000000000000.log").write_bytes(b"not a journal segment header " * 10)
    shadow = ShadowSnapshots(data, cfg.engine, snapshot_every=10)
    shadow.start()
    try:
        deadline = time.monotonic() + 60
        while shadow.failed < 2 and time.monotonic() < deadline:
            shadow.poll()
            time.sleep(0.05)
        assert shadow.failed >= 2  # it died, was started again, and died again
    finally:
        shadow.close()


def _shadow_pids(engine_pid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == engine_pid and b"snapshot_shadow" in cmd:
            out.append(int(entry.name))
    return out


@pytest.mark.slow
def test_an_exchange_whose_shadow_is_killed_goes_on_and_its_next_shadow_snapshots(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, snapshot_every=200, snapshot_writer="shadow")
    data = cfg.data_path()
    exchange = Exchange(cfg)
    exchange.start()
    try:
        engine_pid = exchange._children[0].runner.pid
        counters = CountersReader(exchange._children[0].runner.counters_name or "")
        with attached(exchange, cfg) as (reader, producer):
            def send(first: int, n: int) -> None:
                pending = order_bytes(first, n)

                def step() -> bool:
                    while pending and producer.offer(pending[0]):
                        pending.pop(0)
                    return not pending and len(reader.acked) >= first + n - 1

                pump(exchange, reader, step, timeout=120)

            def snapshots() -> int:
                return counters.value(SNAPSHOTS_COUNTER) if counters.find(SNAPSHOTS_COUNTER) is not None else 0

            send(1, 300)
            pump(exchange, reader, lambda: snapshots() >= 1, timeout=120)
            victims = _shadow_pids(engine_pid)
            assert len(victims) == 1
            os.kill(victims[0], signal.SIGKILL)
            pump(exchange, reader, lambda: counters.value("engine: snapshots failed") >= 1, timeout=60)
            before = snapshots()
            send(301, 300)
            pump(exchange, reader, lambda: snapshots() > before, timeout=120)
            assert _shadow_pids(engine_pid) not in ([], victims)
        assert reader.rejections == {}
        counters.close()
    finally:
        exchange.stop()
    newest = read_snapshot(list_snapshots(snapshot_dir(data))[-1][1])
    assert newest.seq > 300
    # stopped with the engine: no shadow left
    assert _shadow_pids(engine_pid) == []


def test_the_shadow_dies_with_its_engine(tmp_path: Path) -> None:
    """SIGKILL of the engine's process (no chance to stop its shadow): the shadow goes too."""
    import subprocess
    import sys

    cfg = make_config(tmp_path)
    data = tmp_path / "data"
    JournalWriter(journal_dir(data), 1 << 16, "none", slot_size=m.SLOT_SIZE).close()
    code = (
        "import sys, time, msgspec\n"
        "from ringex.engine.config import EngineConfig\n"
        "from ringex.engine.storage.snapshot_shadow import ShadowSnapshots\n"
        f"s = ShadowSnapshots({str(data)!r}, msgspec.json.decode({msgspec.json.encode(cfg.engine)!r}, type=EngineConfig), 100)\n"
        "s.start(); print(s.pid, flush=True); time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        shadow_pid = int(parent.stdout.readline())
        time.sleep(0.5)
        assert os.path.exists(f"/proc/{shadow_pid}")
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(shadow_pid):
            time.sleep(0.05)
        assert not _alive(shadow_pid)
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.stdout.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_shadow_that_cannot_be_started_is_counted_and_tried_again(tmp_path: Path, monkeypatch) -> None:
    import subprocess

    from ringex.engine.storage import snapshot_shadow

    def no_process(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.setattr(snapshot_shadow, "RESTART_DELAY_S", 0.0)
    shadow = ShadowSnapshots(tmp_path / "data", make_config(tmp_path).engine, snapshot_every=10)
    shadow.start()
    assert not shadow.running and shadow.failed == 1
    assert shadow.poll() == [] and shadow.failed == 2  # tried again, failed again
    shadow.close()
