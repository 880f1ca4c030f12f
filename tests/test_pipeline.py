"""The running pipeline: sequencer, journaling engine, output ring, supervisor, recovery.

Real processes throughout: the exchange's own children (spawned by the launcher), a
producer process per test writing SBE orders into a gateway ring, and this process as the
output subscriber. Every wait is bounded. Every test that runs orders through an exchange
ends with the subscriber's exactly-once checks (``pipeline_kit.assert_exactly_once``); the
suite's leak check (``leakcheck.py``) sees that no process or shared-memory object is left.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline_kit import (
    PERP,
    SPOT,
    OutputReader,
    admin_count,
    assert_answered_exactly_once,
    assert_exactly_once,
    assert_output_equals_replay,
    assert_sequence_continuous,
    make_config,
    order,
    produce,
    pump,
    quiet_for,
    shm_leftovers,
    small_venue_toml,
    stalled_subscriber,
    start_ringex_run,
    stop_ringex_run,
)
from ringex.engine.wire import messages as m
from ringex.engine.storage.journal_format import list_segments
from ringex.engine.storage.snapshot import list_snapshots
from ringex.ringbuffer.control import REASON_PROCESS_DIED
from ringex.ringbuffer.ring import Ring
from ringex.tools.launcher import Exchange, output_consumer_index

CTX = multiprocessing.get_context("spawn")


class Running:
    """An exchange plus this test's reader, torn down whatever happens.

    ``follows``: the reader of an earlier run on the same data; this run's reader continues its
    output hash, as one subscriber that reattached after the restart."""

    def __init__(self, cfg, follows: OutputReader | None = None, **kw) -> None:
        self.cfg = cfg
        self.exchange = Exchange(cfg, **kw)
        self.children: list = []
        self.rings: list[Ring] = []
        self.reader: OutputReader | None = None
        self.follows = follows

    def __enter__(self) -> "Running":
        self.exchange.start()
        try:
            names = self.exchange.names
            self.out_ring = Ring.attach(names.output)
            self.rings.append(self.out_ring)
            self.rej_ring = Ring.attach(names.reject)
            self.rings.append(self.rej_ring)
            extra = {} if self.follows is None else {"hash": self.follows.hash.copy()}
            self.reader = OutputReader(self.out_ring, self.rej_ring, output_consumer_index(self.cfg, "test"),
                                       **extra)
        except BaseException:
            self.__exit__()  # __exit__ only runs once __enter__ has returned
            raise
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

    def settle(self) -> None:
        """Read what the output still holds after the last answer a test waited for."""
        self.pump(quiet_for(self.reader, 0.2), timeout=30)

    def __exit__(self, *exc) -> None:
        try:
            for p in self.children:
                p.join(10)
                if p.is_alive():
                    p.kill()
                    p.join(5)
            if self.reader is not None:
                self.reader.close()
            for ring in self.rings:
                ring.close()
        finally:
            self.exchange.stop(drain_timeout=10.0)


@pytest.mark.parametrize("durability", ["batch", "interval", "none"])
def test_live_output_equals_replay_and_shutdown_cleans_up(tmp_path: Path, durability: str) -> None:
    cfg = make_config(tmp_path, durability=durability)
    with Running(cfg) as run:
        run.spawn_producer("t1", 1, 1500)
        run.spawn_producer("t2", 100_001, 1500)
        run.pump(lambda: len(run.reader.acked) >= 3000, timeout=120)
        run.settle()
        assert run.reader.seqs_monotonic
        # The configured deposits fund the whole flow: every order accepted, both markets trade.
        assert run.reader.rejections == {}
        assert run.reader.trades[SPOT] > 0 and run.reader.trades[PERP] > 0
    # stop() itself removes every object (the leak check would also wait for exiting children)
    assert shm_leftovers(cfg.exchange.shm_prefix) == []
    result = assert_exactly_once(run.reader, cfg.data_path(), [*range(1, 1501), *range(100_001, 101_501)])
    assert result["messages"] == 3000 + admin_count(cfg)
    # A clean stop wrote a final snapshot covering everything.
    snaps = list_snapshots(cfg.data_path() / "snapshots")
    assert snaps and snaps[-1][0] == result["last_seq"] + 1


def test_restart_continues_from_snapshot_and_journal(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, snapshot_every=300)
    with Running(cfg) as first:
        first.spawn_producer("t1", 1, 1000)
        first.pump(lambda: len(first.reader.acked) >= 1000, timeout=120)
        first.settle()
    assert first.reader.last_seq == 1000 + admin_count(cfg)
    with Running(cfg, follows=first.reader) as run:
        # Admin messages are not re-sent on a restart; sequencing continues where it stopped.
        run.spawn_producer("t1", 5001, 500)
        run.pump(lambda: len(run.reader.acked) >= 500, timeout=120)
        run.settle()
        # the recovered balances, holds and positions still fund the flow
        assert run.reader.rejections == {}
    assert run.reader.seqs[0] == first.reader.last_seq + 1
    result = assert_exactly_once([first.reader, run.reader], cfg.data_path(),
                                 [*range(1, 1001), *range(5001, 5501)])
    assert result["messages"] == 1000 + 500 + admin_count(cfg)
    # ...where a subscriber that missed either run would not pass
    with pytest.raises(AssertionError, match="hashes differ"):
        assert_output_equals_replay(first.reader, cfg.data_path())
    with pytest.raises(AssertionError, match="expected 1 at position 0"):
        assert_sequence_continuous(run.reader.seqs, per_event=True)


@pytest.mark.slow
def test_engine_sigkill_recovers_with_no_gap_or_duplicate(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, processes="split", snapshot_every=400)
    with Running(cfg) as run:
        run.spawn_producer("t1", 1, 3000, pace_s=0.0002)
        run.pump(lambda: len(run.reader.acked) >= 600, timeout=120)
        engine = next(c for c in run.exchange._children if c.name == "eng")
        os.kill(engine.runner.pid, signal.SIGKILL)
        # The supervisor notices, refuses orders, restarts the engine; the engine recovers.
        run.pump(lambda: run.exchange._control is not None and not run.exchange._control.accepting,
                 timeout=30)
        run.pump(lambda: run.exchange._control.accepting, timeout=60)
        run.pump(lambda: len(run.reader.acked) + len(run.reader.rejected_not_accepting) >= 3000,
                 timeout=180)
        run.settle()
        assert run.reader.seqs_monotonic
    # Each order answered once (accepted, or refused while the engine was down), each the
    # engine answered journaled once (those acknowledged before the kill too), and the
    # subscriber saw exactly the replay's output.
    assert_exactly_once(run.reader, cfg.data_path(), range(1, 3001))


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
        run.settle()
    result = assert_exactly_once(run.reader, cfg.data_path(), [*range(1, 201), *range(1001, 1201)])
    assert result["messages"] == 400 + admin_count(cfg)


VICTIM = 10_001  # the killed producer's first clOrdId: above every other order of the test


def test_dead_producer_stops_acceptance_with_a_clear_rejection(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    with Running(cfg) as run:
        # A producer that holds its ring and is then killed: start it paced so it is alive.
        victim = CTX.Process(target=produce, args=(run.exchange.names.gateway("t1"), VICTIM, 100000, 0.01),
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
        run.pump(lambda: all(c in run.reader.answers for c in range(5000, 5005)), timeout=30)
        run.settle()
    # The victim got out its first orders before it died (at least the three waited for; one
    # cut short in its offer never reached the ring), each answered once, as is every order
    # after it.
    last = max(run.reader.answers)
    assert last >= VICTIM + 2
    assert_exactly_once(run.reader, cfg.data_path(), [*range(VICTIM, last + 1), 777, 778, *range(5000, 5005)])


def test_ringex_run_sigterm_drains_snapshots_and_removes_shared_memory(tmp_path: Path) -> None:
    prefix = f"rxrun{os.getpid()}"
    conf = tmp_path / "ringex.toml"
    conf.write_text(small_venue_toml(prefix))
    proc, _pids, lines = start_ringex_run(conf)
    try:
        assert any("Ctrl-C" in ln for ln in lines), "".join(lines)
        assert shm_leftovers(prefix), "rings should exist while running"
        out = stop_ringex_run(proc)
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
        run.settle()
    assert_exactly_once(run.reader, cfg.data_path(), [1, 2])


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
        run.settle()
    assert_exactly_once(run.reader, cfg.data_path(), [1])


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


def test_exactly_once_checks_name_what_is_wrong() -> None:
    """The checks the tests above end with fail on a lost, a repeated or an unexpected answer
    and on a gap or a repeat in the sequence, and say which."""
    answers = [SimpleNamespace(answers=Counter({1: 1, 2: 1})), SimpleNamespace(answers=Counter({2: 1, 4: 1}))]
    with pytest.raises(AssertionError, match=r"unanswered 1 \(first \[3\]\); answered more than once "
                                             r"1 \(first \[2\]\); answered but never sent 1 \(first \[4\]\)"):
        assert_answered_exactly_once(answers, [1, 2, 3])
    assert_answered_exactly_once(answers[:1], [1, 2])

    assert assert_sequence_continuous([1, 2, 3]) == 3
    assert assert_sequence_continuous([1, 1, 1, 2, 3, 3], per_event=True) == 3
    assert assert_sequence_continuous([5, 6], first=5) == 6
    for seqs, fault in (([1, 3], "expected 2 at position 1, got 3"),  # a gap
                        ([1, 2, 2, 3], "expected 3 at position 2, got 2"),  # a message twice
                        ([2, 3], "expected 1 at position 0, got 2")):  # the start lost
        with pytest.raises(AssertionError, match=re.escape(fault)):
            assert_sequence_continuous(seqs)
    # a message's events again after others: a repeat even where each event may repeat its seq
    with pytest.raises(AssertionError, match="expected 4 at position 3, got 2"):
        assert_sequence_continuous([1, 1, 2, 3, 2, 3], per_event=True)


def test_a_deposit_written_to_a_gateway_ring_is_refused_and_counted(tmp_path) -> None:
    """Issue 13, defect 8, through a running exchange: whatever writes a gateway ring cannot
    deposit money; the admin ring (the launcher's) still can."""
    from pipeline_kit import attached, journaled, make_config, order_bytes, pump
    from ringex.engine.pipeline.sequencer import ADMIN_REFUSED_COUNTER
    from ringex.ringbuffer.counters import CountersReader
    from ringex.tools.launcher import Exchange

    cfg = make_config(tmp_path)
    exchange = Exchange(cfg)
    exchange.start()
    try:
        counters = CountersReader(exchange._children[0].runner.counters_name or "")
        with attached(exchange, cfg) as (reader, producer):
            assert producer.offer(m.Funds.encode(account=1, asset=0, amount=10**12,
                                                 action=m.FundsAction.Deposit))
            assert producer.offer(order_bytes(1, 1)[0])  # an order behind it still trades
            pump(exchange, reader, lambda: 1 in reader.acked, timeout=60)
            pump(exchange, reader, lambda: counters.value(ADMIN_REFUSED_COUNTER) == 1, timeout=30)
            pump(exchange, reader, lambda: bool(reader.refused_admin), timeout=30)
            assert reader.refused_admin == [(m.Funds.template_id, int(m.RejectReason.AdminNotPermitted))]
        counters.close()
    finally:
        exchange.stop()
    from ringex.tools.launcher import admin_messages

    configured = sum(1 for msg in admin_messages(cfg) if m.SCHEMA.decode(msg).name == "Funds")
    assert sum(1 for _s, name, _c in journaled(cfg.data_path()) if name == "Funds") == configured


def test_a_hung_subscriber_is_untethered_and_the_exchange_goes_on(tmp_path: Path) -> None:
    """Issue 14: a subscriber of the output ring that stops consuming must not freeze the
    exchange. A second subscriber ("md") reads, then is stopped (SIGSTOP); more than a ring's
    worth of events later every order is still answered, the exchange never stopped
    accepting, and the supervisor untethered the stopped one once it was half a ring behind.
    Resumed, it is told it was untethered; a new subscriber of its index rejoins at the head."""
    import msgspec

    cfg = make_config(tmp_path, heartbeat_ms=500)
    cfg = msgspec.structs.replace(cfg, rings=msgspec.structs.replace(cfg.rings, subscribers=["test", "md"]))
    ready, go, result = (str(tmp_path / n) for n in ("ready", "go", "result"))
    n = 3000  # about 2.5 events each: more than the 4096-slot output ring holds
    with Running(cfg) as run:
        names = run.exchange.names
        md = output_consumer_index(cfg, "md")
        sub = CTX.Process(target=stalled_subscriber, args=(names.output, md, ready, go, result), daemon=True)
        sub.start()
        run.children.append(sub)
        run.pump(lambda: Path(ready).exists(), timeout=60)
        os.kill(sub.pid, signal.SIGSTOP)
        try:
            run.spawn_producer("t1", 1, n)
            refused = []
            run.pump(lambda: (refused.append(not run.exchange._control.accepting) or
                              len(run.reader.acked) == n), timeout=180)
            assert not any(refused), "the exchange stopped accepting because of a subscriber"
            out = run.out_ring
            assert [(r, i) for r, i, _ in run.exchange.untethered] == [(out.name, md)]
            assert out.is_untethered(md) and out.producer_position > out.capacity
        finally:
            os.kill(sub.pid, signal.SIGCONT)
        Path(go).touch()
        sub.join(60)
        assert Path(result).read_text() == "untethered" and sub.exitcode == 0
        # its successor rejoins at the head and sees what comes after
        successor = out.consumer(md, takeover=True)
        assert successor.rejoined_at == out.producer_position
        run.offer("t1", order(n + 1, 1, 990))
        run.pump(lambda: n + 1 in run.reader.acked, timeout=30)
        head, tail = successor.read()
        seen = [m.SCHEMA.decode(bytes(r)) for part in (head, tail) for r in part]
        assert seen and all(e["seq"] == seen[0]["seq"] for e in seen)  # the new order's events only
        assert any(e.name == "OrderAccepted" and e["clOrdId"] == n + 1 for e in seen)
        successor.commit(len(seen))
        successor.close()
        run.settle()
    assert_exactly_once(run.reader, cfg.data_path(), list(range(1, n + 2)))
