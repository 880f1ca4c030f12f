"""The running pipeline: sequencer, journaling engine, output ring, supervisor, recovery.

Real processes throughout: the exchange's own children (spawned by the launcher), a
producer process per test writing SBE orders into a gateway ring, and this process as the
output subscriber. Every wait is bounded; every shared-memory object is checked gone.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline_kit import (
    PERP,
    SPOT,
    OutputReader,
    admin_count,
    make_config,
    order,
    produce,
    pump,
    shm_leftovers,
)
from ringex.engine.wire import messages as m
from ringex.engine.storage.journal_format import list_segments
from ringex.engine.storage.snapshot import list_snapshots
from ringex.ringbuffer.control import REASON_PROCESS_DIED
from ringex.ringbuffer.ring import Ring
from ringex.tools.launcher import Exchange, output_consumer_index
from ringex.tools.replay import replay

CTX = multiprocessing.get_context("spawn")


class Running:
    """An exchange plus this test's reader, torn down whatever happens."""

    def __init__(self, cfg, **kw) -> None:
        self.cfg = cfg
        self.exchange = Exchange(cfg, **kw)
        self.children: list = []
        self.reader: OutputReader | None = None

    def __enter__(self) -> "Running":
        self.exchange.start()
        names = self.exchange.names
        self.out_ring = Ring.attach(names.output)
        self.rej_ring = Ring.attach(names.reject)
        self.reader = OutputReader(self.out_ring, self.rej_ring, output_consumer_index(self.cfg, "test"))
        return self

    def spawn_producer(self, gateway: str, first_cl: int, n: int, pace_s: float = 0.0):
        p = CTX.Process(target=produce, args=(self.exchange.names.gateway(gateway), first_cl, n, pace_s),
                        daemon=True)
        p.start()
        self.children.append(p)
        return p

    def offer(self, gateway: str, msg: bytes) -> None:
        ring = Ring.attach(self.exchange.names.gateway(gateway))
        try:
            prod = ring.producer(takeover=True)
            assert prod.offer(msg)
            prod.close()
        finally:
            ring.close()

    def pump(self, until, timeout: float = 60.0, supervise: bool = True) -> None:
        pump(self.exchange, self.reader, until, timeout, supervise)

    def __exit__(self, *exc) -> None:
        for p in self.children:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        if self.reader is not None:
            self.reader.close()
        self.out_ring.close()
        self.rej_ring.close()
        self.exchange.stop(drain_timeout=10.0)


@pytest.mark.parametrize("durability", ["batch", "interval", "none"])
def test_live_output_equals_replay_and_shutdown_cleans_up(tmp_path: Path, durability: str) -> None:
    cfg = make_config(tmp_path, durability=durability)
    with Running(cfg) as run:
        run.spawn_producer("t1", 1, 1500)
        run.spawn_producer("t2", 100_001, 1500)
        run.pump(lambda: len(run.reader.acked) >= 3000, timeout=120)
        assert run.reader.seqs_monotonic
        # The configured deposits fund the whole flow: every order accepted, both markets trade.
        assert run.reader.rejections == {}
        assert run.reader.trades[SPOT] > 0 and run.reader.trades[PERP] > 0
        live_hash = run.reader.hash.hexdigest()
        events = run.reader.events
    assert shm_leftovers(cfg.exchange.shm_prefix) == []
    result = replay(cfg.data_path())
    assert result["messages"] == 3000 + admin_count(cfg)
    assert result["events"] == events
    assert result["output_sha256"] == live_hash
    # A clean stop wrote a final snapshot covering everything.
    snaps = list_snapshots(cfg.data_path() / "snapshots")
    assert snaps and snaps[-1][0] == result["last_seq"] + 1


def test_restart_continues_from_snapshot_and_journal(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, snapshot_every=300)
    with Running(cfg) as run:
        run.spawn_producer("t1", 1, 1000)
        run.pump(lambda: len(run.reader.acked) >= 1000, timeout=120)
    with Running(cfg) as run:
        # Admin messages are not re-sent on a restart; sequencing continues.
        run.spawn_producer("t1", 5001, 500)
        run.pump(lambda: len(run.reader.acked) >= 500, timeout=120)
        # the recovered balances, holds and positions still fund the flow
        assert run.reader.rejections == {}
        first_seq_after_restart = min(s for s in [run.reader.last_seq])
    result = replay(cfg.data_path())
    assert result["messages"] == 1000 + 500 + admin_count(cfg)
    assert first_seq_after_restart == result["last_seq"]


@pytest.mark.slow
def test_engine_sigkill_recovers_with_no_gap_or_duplicate(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, processes="split", snapshot_every=400)
    with Running(cfg) as run:
        run.spawn_producer("t1", 1, 3000, pace_s=0.0002)
        run.pump(lambda: len(run.reader.acked) >= 600, timeout=120)
        engine = next(c for c in run.exchange._children if c.name == "eng")
        acked_before = dict(run.reader.acked)
        os.kill(engine.runner.pid, signal.SIGKILL)
        # The supervisor notices, refuses orders, restarts the engine; the engine recovers.
        run.pump(lambda: run.exchange._control is not None and not run.exchange._control.accepting,
                 timeout=30)
        run.pump(lambda: run.exchange._control.accepting, timeout=60)
        run.pump(lambda: len(run.reader.acked) + len(run.reader.rejected_not_accepting) >= 3000,
                 timeout=180)
        live_hash = run.reader.hash.hexdigest()
        assert run.reader.seqs_monotonic
    result = replay(cfg.data_path())
    # The subscriber saw exactly the replay's output: no gap, no duplicate.
    assert result["output_sha256"] == live_hash
    # Every order acknowledged before the kill is in the recovered journal.
    from ringex.engine.storage.journal_reader import JournalReader

    journaled = set()
    for _seq, slot in JournalReader(cfg.data_path() / "journal").iter_messages():
        d = m.SCHEMA.decode(bytes(slot))
        if d.name == "NewOrder":
            journaled.add(d["clOrdId"])
    assert set(acked_before) <= journaled


@pytest.mark.slow
def test_sequencer_sigkill_fails_safe_then_recovers(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, processes="split")
    with Running(cfg) as run:
        run.spawn_producer("t1", 1, 200)
        run.pump(lambda: len(run.reader.acked) >= 200, timeout=60)
        seq_child = next(c for c in run.exchange._children if c.name == "seq")
        os.kill(seq_child.runner.pid, signal.SIGKILL)
        run.pump(lambda: not run.exchange._control.accepting, timeout=30)
        assert run.exchange._control.reason == REASON_PROCESS_DIED
        run.pump(lambda: run.exchange._control.accepting, timeout=60)
        run.spawn_producer("t1", 1001, 200)
        run.pump(lambda: len(run.reader.acked) >= 400, timeout=60)
    result = replay(cfg.data_path())
    assert result["messages"] == 400 + admin_count(cfg)


def test_dead_producer_stops_acceptance_with_a_clear_rejection(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    with Running(cfg) as run:
        victim = CTX.Process(target=produce, args=(run.exchange.names.gateway("t1"), 1, 5, 0.0, None),
                             daemon=True)
        # A producer that holds its ring and is then killed: start it paced so it is alive.
        victim = CTX.Process(target=produce, args=(run.exchange.names.gateway("t1"), 1, 100000, 0.01),
                             daemon=True)
        victim.start()
        run.children.append(victim)
        run.pump(lambda: len(run.reader.acked) >= 3, timeout=60)
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
        run.pump(lambda: not run.exchange._control.accepting, timeout=30)
        # An order from another gateway is now answered ExchangeNotAccepting, not lost.
        run.offer("t2", order(777, 1, 990))
        run.pump(lambda: any(c == 777 for _n, c, _r in run.reader.rejected_not_accepting), timeout=30)
        name, _cl, reason = next(x for x in run.reader.rejected_not_accepting if x[1] == 777)
        assert name == "OrderRejected" and reason == m.RejectReason.ExchangeNotAccepting
        # A new producer on the dead one's ring: healthy again, orders flow.
        run.spawn_producer("t1", 5000, 5)
        run.pump(lambda: run.exchange._control.accepting, timeout=30)
        run.offer("t2", order(778, 2, 1010))
        run.pump(lambda: 778 in run.reader.acked, timeout=30)


def test_ringex_run_sigterm_drains_snapshots_and_removes_shared_memory(tmp_path: Path) -> None:
    prefix = f"rxrun{os.getpid()}"
    conf = tmp_path / "ringex.toml"
    conf.write_text(f"""
[exchange]
data_dir = "data"
shm_prefix = "{prefix}"
[engine]
max_orders = 4096
price_levels = 1024
[[instrument]]
id = 1
symbol = "DEMO"
reference_price = 1000
base_asset = 1
[[account]]
id = 1
deposits = {{ 0 = 100000, 1 = 10 }}
[insurance_fund]
deposit = 5000
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringex.tools.cli", "run", "--config", str(conf)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    try:
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("seq "):
                break
        assert any("Ctrl-C" in ln for ln in lines), "".join(lines)
        assert shm_leftovers(prefix), "rings should exist while running"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert "stopped cleanly" in out
    assert shm_leftovers(prefix) == []
    assert list_snapshots(tmp_path / "data" / "snapshots")
    assert list_segments(tmp_path / "data" / "journal")


def test_invalid_config_is_rejected_before_anything_starts(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text('[engine]\nmax_orders = -1\n[[instrument]]\nid = 1\nsymbol = "X"\nreference_price = 7\ntick_size = 2\n')
    r = subprocess.run([sys.executable, "-m", "ringex.tools.cli", "run", "--config", str(conf)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2
    assert "max_orders" in r.stderr
    assert not (tmp_path / "var").exists()


def test_hung_process_loses_heartbeat_then_recovers(tmp_path: Path) -> None:
    from ringex.ringbuffer.control import REASON_HEARTBEAT_LOST

    cfg = make_config(tmp_path, heartbeat_ms=1000)
    with Running(cfg) as run:
        run.offer("t1", order(1, 1, 990))
        run.pump(lambda: 1 in run.reader.acked, timeout=60)
        core = run.exchange._children[0]
        os.kill(core.runner.pid, signal.SIGSTOP)  # alive, but no longer polling
        try:
            run.pump(lambda: not run.exchange._control.accepting, timeout=30)
            assert run.exchange._control.reason == REASON_HEARTBEAT_LOST
            assert core.runner.is_alive()
        finally:
            os.kill(core.runner.pid, signal.SIGCONT)
        run.pump(lambda: run.exchange._control.accepting, timeout=30)
        run.offer("t1", order(2, 2, 1010))
        run.pump(lambda: 2 in run.reader.acked, timeout=30)


def test_stale_rings_from_a_crashed_run_are_reported_and_reclaimed(tmp_path: Path) -> None:
    from pipeline_kit import leave_stale_ring

    cfg = make_config(tmp_path)
    name = f"{cfg.exchange.shm_prefix}-seq"
    p = CTX.Process(target=leave_stale_ring, args=(name, 8))
    p.start()
    p.join(30)
    assert shm_leftovers(cfg.exchange.shm_prefix) == [name]
    with Running(cfg) as run:
        assert run.exchange.stale_reclaimed == [name]
        run.offer("t1", order(1, 1, 990))
        run.pump(lambda: 1 in run.reader.acked, timeout=60)
    assert shm_leftovers(cfg.exchange.shm_prefix) == []


def test_default_configuration_trades_out_of_the_box() -> None:
    """``make run``'s venue, run through the engine: every admin message the launcher sends
    is applied, and each instrument trades between two of its accounts."""
    from ringex.engine.engine import MatchingEngine
    from ringex.tools.config import load_config
    from ringex.tools.launcher import admin_messages

    cfg = load_config()
    engine = MatchingEngine(cfg.engine)
    t0 = 1_700_000_000_000_000_000
    seq = [0]

    def send(msg: bytes) -> list:
        # stamped as the sequencer would: the engine's clock is the message's timestamp
        seq[0] += 1
        d = m.SCHEMA.decode(msg)
        fields = {**d.fields, "seq": seq[0], "timestampNs": t0 + seq[0] * 1000}
        return engine.process_messages([m.SCHEMA.encode(d.name, **fields)])

    for msg in admin_messages(cfg):
        name = m.SCHEMA.decode(msg).name
        events = send(msg)
        results = [e for e in events if e.name == "AdminResult"]
        assert len(results) == 1 and int(results[0]["reason"]) == 0, (name, events)
        if name == "IndexPrice":
            assert [e.name for e in events][:2] == ["AdminResult", "MarkPrice"], events
    maker, taker = cfg.account[0].id, cfg.account[1].id
    for i, ins in enumerate(cfg.instrument):
        price, qty = ins.reference_price, ins.min_qty
        rest = send(m.NewOrder.encode(clOrdId=10 * i + 1, side=m.Side.Sell, price=price, qty=qty, account=maker,
                                      instrument=ins.id, ordType=m.OrdType.Limit, timeInForce=m.TimeInForce.GTC,
                                      stpMode=m.StpMode.Off, sessionId=1))
        assert [e.name for e in rest][:1] == ["OrderAccepted"], (ins.symbol, rest)
        take = send(m.NewOrder.encode(clOrdId=10 * i + 2, side=m.Side.Buy, price=price, qty=qty, account=taker,
                                      instrument=ins.id, ordType=m.OrdType.Limit, timeInForce=m.TimeInForce.IOC,
                                      stpMode=m.StpMode.Off, sessionId=1))
        trades = [e for e in take if e.name == "Trade"]
        assert [(t["price"], t["qty"]) for t in trades] == [(price, qty)], (ins.symbol, take)
