"""Helpers for the pipeline tests: configurations, a producer process, an output reader.

Importable by spawned children (the producer runs in its own process), so no test here.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ringex.engine.kernel import state as S
from ringex.engine.wire import messages as m
from ringex.engine.pipeline.engine_agent import stream_hash, update_stream_hash
from ringex.ringbuffer.idle import BackoffIdleStrategy
from ringex.ringbuffer.ring import Ring
from ringex.tools.config import ExchangeConfig, parse_config
from ringex.tools.launcher import Exchange, admin_messages, output_consumer_index

_counter = [0]


def unique_prefix() -> str:
    _counter[0] += 1
    return f"rxp{os.getpid()}n{_counter[0]}"


SPOT = 1  # instrument ids of make_config's venue
PERP = 2
# Generous balances: the order flow below never runs out, so every order is accepted and a
# rejection in a pipeline test is a real finding. Buyers (account 1) spend asset 0, sellers
# (account 2) asset 1; both get both so that any test may use either account on either side.
FUNDS = {0: 10**12, 1: 10**9}


def make_config(tmp: Path, *, processes: str = "embedded", durability: str = "batch",
                snapshot_every: int = 1_000_000, gateways=("t1", "t2"), heartbeat_ms: int = 2000,
                prefix: str | None = None, archive: bool = True,
                snapshot_writer: str = "fork") -> ExchangeConfig:
    """A test venue: a spot instrument (1, base asset 1) and a perpetual (2) with leverage,
    funding every second of sequencer time and a first index price, two funded accounts and an
    insurance fund; so the journal, snapshots and replays carry spot holds, positions, margin
    and funding, not only books. With ``archive`` the journal segments retention retires go to
    ``data/archive`` (so a replay covers the whole run); without, they are deleted."""
    if processes == "embedded":
        topo = '[[process]]\nname = "core"\nagents = ["sequencer", "engine"]\n'
    else:
        topo = ('[[process]]\nname = "seq"\nagents = ["sequencer"]\n'
                '[[process]]\nname = "eng"\nagents = ["engine"]\n')
    gw = ", ".join(f'"{g}"' for g in gateways)
    archive_line = f'archive_dir = "{tmp / "data" / "archive"}"' if archive else ""
    funds = "{ " + ", ".join(f"{a} = {v}" for a, v in FUNDS.items()) + " }"
    text = f"""
[exchange]
name = "test"
data_dir = "{tmp / 'data'}"
shm_prefix = "{prefix or unique_prefix()}"
[journal]
durability = "{durability}"
snapshot_every = {snapshot_every}
snapshot_writer = "{snapshot_writer}"
segment_bytes = 65536
{archive_line}
[engine]
max_orders = 65536
price_levels = 4096
[rings]
gateways = [{gw}]
subscribers = ["test"]
inbound_capacity = 1024
engine_capacity = 1024
output_capacity = 4096
batch_limit = 256
[supervisor]
heartbeat_timeout_ms = {heartbeat_ms}
check_interval_ms = 50
{topo}
[[instrument]]
id = {SPOT}
symbol = "TEST"
reference_price = 1000
base_asset = 1
maker_fee_ppm = 100
taker_fee_ppm = 300
[[instrument]]
id = {PERP}
symbol = "TEST-P"
kind = "perpetual"
reference_price = 1000
maker_fee_ppm = -50
taker_fee_ppm = 300
[instrument.perpetual]
im_ppm = 100000
mm_ppm = 500000
funding_interval_ns = 1000000000
funding_cap_ppm = 1000
basis_cap_ppm = 5000
basis_ema_ppm = 100000
index_price = 1000
[[account]]
id = 1
stp_default = "off"
deposits = {funds}
[[account]]
id = 2
stp_default = "off"
deposits = {funds}
[insurance_fund]
deposit = 1000000
"""
    return parse_config(text, base_dir=tmp)


def admin_count(cfg: ExchangeConfig) -> int:
    """How many admin messages a fresh start journals before any order."""
    return len(admin_messages(cfg))


def order(cl: int, side: int, price: int, qty: int = 1, account: int | None = None,
          session: int = 1, instrument: int = SPOT) -> bytes:
    return m.NewOrder.encode(
        clOrdId=cl, side=side, price=price, qty=qty, account=account or side, instrument=instrument,
        ordType=m.OrdType.Limit, timeInForce=m.TimeInForce.GTC, stpMode=m.StpMode.Off,
        sessionId=session,
    )


def order_bytes(first_cl: int, n: int) -> list[bytes]:
    """n orders that rest and trade: alternating sides around 1000, a buy and a sell on the
    spot instrument, then a buy and a sell on the perpetual (account 1 buys, account 2 sells)."""
    out = []
    for i in range(n):
        cl = first_cl + i
        side = 1 + (cl % 2)
        price = 1000 - (cl % 7) + 3 if side == 1 else 1000 + (cl % 7) - 3
        out.append(order(cl, side, price, qty=1 + cl % 3, instrument=SPOT if cl // 2 % 2 == 0 else PERP))
    return out


def produce(ring_name: str, first_cl: int, n: int, pace_s: float = 0.0, done_file: str | None = None) -> None:
    """Child process: offer n orders (waiting under back-pressure), optionally paced."""
    ring = Ring.attach(ring_name, wait_s=10.0)
    prod = ring.producer(takeover=True)
    idle = BackoffIdleStrategy(max_spins=10, max_yields=10, max_park_ns=1_000_000)
    deadline = time.monotonic() + 120
    for msg in order_bytes(first_cl, n):
        while not prod.offer(msg):
            if time.monotonic() > deadline:
                raise TimeoutError("producer: ring stayed full")
            idle.idle(0)
        if pace_s:
            time.sleep(pace_s)
    if done_file:
        Path(done_file).write_text(str(n))
    prod.close()
    ring.close()


def small_venue_toml(prefix: str, processes: str = "") -> str:
    """A configuration for ``ringex run`` in a test: data in ``data/`` beside the file, one spot
    instrument, one funded account; ``processes``: extra ``[[process]]`` tables."""
    return f"""
[exchange]
data_dir = "data"
shm_prefix = "{prefix}"
[engine]
max_orders = 4096
price_levels = 1024
{processes}
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
"""


def start_ringex_run(conf: Path, timeout: float = 300.0) -> tuple:
    """``ringex run --config conf`` in the background, read until its first status line;
    returns the process, the pids of its processes by name, and what it printed. Bounded by
    ``timeout`` (a cold numba cache compiles the engine first)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "ringex.tools.cli", "run", "--config", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=conf.parent)
    lines: list[str] = []
    pids: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.strip().startswith("process ") and "(pid " in line:
            pids[line.split()[1]] = int(line.split("(pid ")[1].split(")")[0])
        if line.startswith("seq "):  # the first status line: running
            break
    return proc, pids, lines


def stop_ringex_run(proc) -> str:
    """SIGTERM, then what it printed to the end (killed if it does not stop within a minute)."""
    import signal

    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    return out


def stalled_subscriber(ring_name: str, index: int, ready: str, go: str, result: str) -> None:
    """Child process: subscribe to ``ring_name`` as consumer ``index``, read what is there,
    say ``ready``, then stop consuming (the test stops it) until ``go`` exists; then try to
    read again and write what happened to ``result``."""
    from ringex.ringbuffer.errors import UntetheredError

    ring = Ring.attach(ring_name, wait_s=10.0)
    consumer = ring.consumer(index, takeover=True)
    head, tail = consumer.read()
    consumer.commit(len(head) + len(tail))
    Path(ready).write_text(str(consumer.position))
    deadline = time.monotonic() + 120
    while not Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # neither reading nor heartbeating: hung, as far as the exchange can tell
    try:
        consumer.read()
        outcome = "read"
    except UntetheredError:
        outcome = "untethered"
    Path(result).write_text(outcome)
    ring.close()


@dataclass
class OutputReader:
    """The test's subscriber on the output ring (and reject ring): hashes and records."""

    ring: Ring
    reject: Ring
    index: int
    hash: object = field(default_factory=stream_hash)
    acked: dict = field(default_factory=dict)  # clOrdId -> template name
    rejections: dict = field(default_factory=dict)  # clOrdId -> the engine's reason for a NewOrder
    refused_admin: list = field(default_factory=list)  # (refTemplateId, reason) from the reject ring
    trades: Counter = field(default_factory=Counter)  # instrument -> trades
    rejected_not_accepting: list = field(default_factory=list)
    events: int = 0
    last_seq: int = 0
    seqs_monotonic: bool = True
    # for the exactly-once checks (end of this file): every answer, not only the last, and
    # every event's seq in the order read
    answers: Counter = field(default_factory=Counter)  # clOrdId -> answers to its NewOrder, both rings
    seqs: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.consumer = self.ring.consumer(self.index)
        self.rej_consumer = self.reject.consumer(self.index)

    def poll(self) -> int:
        head, tail = self.consumer.read(4096)
        k = len(head) + len(tail)
        for region in (head, tail):
            if not len(region):
                continue
            update_stream_hash(self.hash, region)
            for row in region:
                d = m.SCHEMA.decode(bytes(row))
                seq = d["seq"]
                if seq < self.last_seq:
                    self.seqs_monotonic = False
                self.last_seq = seq
                self.seqs.append(seq)
                if d.name in ("OrderAccepted", "OrderRejected") and d.fields.get("refTemplateId", 1) == 1:
                    self.acked[d["clOrdId"]] = d.name
                    self.answers[d["clOrdId"]] += 1
                    if d.name == "OrderRejected":
                        self.rejections[d["clOrdId"]] = d["reason"]
                elif d.name == "Trade":
                    self.trades[d["instrument"]] += 1
        if k:
            self.consumer.commit(k)
        self.events += k
        head, tail = self.rej_consumer.read(4096)
        r = len(head) + len(tail)
        for region in (head, tail):
            for row in region:
                d = m.SCHEMA.decode(bytes(row))
                if d.name == "AdminResult":  # an admin message refused on a gateway's ring
                    self.refused_admin.append((d["refTemplateId"], d["reason"]))
                    continue
                self.rejected_not_accepting.append((d.name, d["clOrdId"], d["reason"]))
                if d.name == "OrderRejected":
                    self.answers[d["clOrdId"]] += 1
        if r:
            self.rej_consumer.commit(r)
        return k + r

    def close(self) -> None:
        self.consumer.close()
        self.rej_consumer.close()


def pump(exchange, reader: OutputReader | None, until, timeout: float, supervise: bool = True) -> None:
    """Drive the exchange's supervisor loop and the reader until ``until()`` or timeout."""
    idle = BackoffIdleStrategy(max_spins=0, max_yields=5, max_park_ns=2_000_000)
    deadline = time.monotonic() + timeout
    next_check = 0.0
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        work = exchange.drain()
        if reader is not None:
            work += reader.poll()
        now = time.monotonic()
        if supervise and now >= next_check:
            exchange.supervise_once()
            next_check = now + 0.05
        idle.idle(work)


def shm_leftovers(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if prefix in n)


def leave_stale_ring(name: str, capacity: int) -> None:
    """Child process: create a ring and die without cleaning up, as a crash would."""
    Ring.create(name, slot_size=m.SLOT_SIZE, capacity=capacity, unlink_on_close=False)
    os._exit(0)


def assert_same_state(a: dict, b: dict) -> None:
    """Two engines' ``arrays()`` hold the same state (the last call's event count, scratch, aside)."""
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if k == "globals":
            x, y = x.copy(), y.copy()
            x[S.G_EVENTS] = y[S.G_EVENTS] = 0
        assert np.array_equal(x, y), f"state array {k} differs"


@contextmanager
def attached(exchange: Exchange, cfg: ExchangeConfig, gateway: str = "t1"):
    """A running exchange's test subscriber (an OutputReader on the output and reject rings)
    and a producer on ``gateway``'s ring, as ``(reader, producer)``; closed on leaving."""
    out = Ring.attach(exchange.names.output)
    rej = Ring.attach(exchange.names.reject)
    gw = Ring.attach(exchange.names.gateway(gateway))
    reader = OutputReader(out, rej, output_consumer_index(cfg, "test"))
    prod = gw.producer()
    try:
        yield reader, prod
    finally:
        prod.close()
        gw.close()
        reader.close()
        out.close()
        rej.close()


def run_orders(cfg: ExchangeConfig, orders: int, *, quiet_s: float = 0.0, timeout: float = 120) -> OutputReader:
    """Start an exchange on ``cfg``, send ``orders`` orders on gateway ``t1`` until every one
    is answered (and, with ``quiet_s``, until the output has been quiet that long), then stop
    it; returns the subscriber's reader (closed): what a client of the output saw."""
    exchange = Exchange(cfg)
    exchange.start()
    try:
        with attached(exchange, cfg) as (reader, prod):
            msgs = order_bytes(1, orders)
            sent = [0]
            quiet = {"events": -1, "since": time.monotonic()}

            def step() -> bool:
                while sent[0] < len(msgs) and prod.offer(msgs[sent[0]]):
                    sent[0] += 1
                if reader.events != quiet["events"]:
                    quiet.update(events=reader.events, since=time.monotonic())
                return len(reader.acked) >= orders and time.monotonic() - quiet["since"] >= quiet_s

            pump(exchange, reader, step, timeout=timeout)
    finally:
        exchange.stop()
    return reader


# -- exactly-once checks ---------------------------------------------------------------
# What a subscriber can check on its own after any crash and restart: every order it sent was
# answered exactly once, the sequence numbers run without gap or repeat, and the output it saw
# is the output a replay of the journal gives. ``readers`` is one OutputReader, or those of
# successive runs in order (a subscriber that reattached after the exchange restarted).


def _as_list(readers) -> list[OutputReader]:
    return [readers] if isinstance(readers, OutputReader) else list(readers)


def _some(ids: list) -> str:
    return f"{len(ids)} (first {ids[:10]})" if ids else "none"


def assert_answered_exactly_once(readers, cl_ord_ids) -> None:
    """Every clOrdId of ``cl_ord_ids`` got exactly one answer to its NewOrder: an OrderAccepted
    or OrderRejected on the output ring, or the sequencer's OrderRejected on the reject ring;
    and no other clOrdId got one."""
    sent = list(cl_ord_ids)
    assert len(set(sent)) == len(sent), "the test sent a clOrdId twice: answers cannot tell"
    answers: Counter = Counter()
    for r in _as_list(readers):
        answers.update(r.answers)
    missing = sorted(set(sent) - answers.keys())
    repeated = sorted(c for c, n in answers.items() if n > 1)
    unexpected = sorted(answers.keys() - set(sent))
    assert not (missing or repeated or unexpected), (
        f"of {len(sent)} orders sent: unanswered {_some(missing)}; answered more than once "
        f"{_some(repeated)}; answered but never sent {_some(unexpected)}")


def assert_sequence_continuous(seqs, *, per_event: bool = False, first: int = 1, what: str = "seqs") -> int:
    """``seqs``, in the order seen, are ``first``, ``first + 1``, ... with no gap and no repeat;
    returns the last. With ``per_event`` they are the output's: every event carries the seq of
    the message that caused it, so a message's events repeat its seq side by side (each input
    message has at least one event: an order its answer, an admin message its AdminResult)."""
    seqs = list(seqs)
    if per_event:
        seqs = [s for i, s in enumerate(seqs) if i == 0 or s != seqs[i - 1]]
    for i, s in enumerate(seqs):
        if s != first + i:
            raise AssertionError(f"{what}: expected {first + i} at position {i}, got {s} "
                                 f"(around it: {seqs[max(0, i - 3):i + 4]})")
    return first + len(seqs) - 1


def journaled(data_dir: Path) -> list[tuple[int, str, int | None]]:
    """Every journaled message as (the seq stamped in it, its name, its clOrdId or None), in
    journal order (archived segments included)."""
    from ringex.engine.storage.data_dir import journal_dir
    from ringex.engine.storage.journal_reader import JournalReader

    out = []
    for _pos, slot in JournalReader(journal_dir(data_dir)).iter_messages():
        d = m.SCHEMA.decode(bytes(slot))
        out.append((d["seq"], d.name, d.fields.get("clOrdId")))
    return out


def assert_journal_exactly_once(data_dir: Path, cl_ord_ids) -> int:
    """The journal holds seqs 1..N, each once, and a NewOrder for each of ``cl_ord_ids`` and
    no other, each once (the orders the sequencer refused never reach it: pass those the
    engine answered, :func:`engine_answered`); returns N."""
    messages = journaled(data_dir)
    last = assert_sequence_continuous([s for s, _n, _c in messages], what="journaled seqs")
    orders = Counter(c for _s, name, c in messages if name == "NewOrder")
    repeated = sorted(c for c, n in orders.items() if n > 1)
    missing = sorted(set(cl_ord_ids) - orders.keys())
    unexpected = sorted(orders.keys() - set(cl_ord_ids))
    assert not (repeated or missing or unexpected), (
        f"NewOrders journaled more than once: {_some(repeated)}; not journaled: {_some(missing)}; "
        f"journaled but not answered by the engine: {_some(unexpected)}")
    return last


def engine_answered(readers) -> set[int]:
    """The clOrdIds the engine answered (on the output ring), over all ``readers``."""
    return {c for r in _as_list(readers) for c in r.acked}


def assert_output_equals_replay(readers, data_dir: Path) -> dict:
    """What the readers saw, in order, hashes to what a replay of the journal outputs: no event
    lost, repeated or changed. The last reader's hash must continue the earlier ones' (create
    it with ``hash=earlier.hash.copy()``). Returns the replay's figures."""
    from ringex.tools.replay import replay

    readers = _as_list(readers)
    result = replay(data_dir)
    seen = sum(r.events for r in readers)
    assert (readers[-1].hash.hexdigest(), seen) == (result["output_sha256"], result["events"]), (
        f"the subscriber saw {seen} events, the replay of the journal gives {result['events']}; "
        "the hashes differ")
    return result


def quiet_for(reader: OutputReader, seconds: float):
    """A ``pump`` condition: nothing new on the output for ``seconds`` (so that the events
    after the last answer a test waited for have been read too)."""
    state = {"events": -1, "since": time.monotonic()}

    def quiet() -> bool:
        if reader.events != state["events"]:
            state.update(events=reader.events, since=time.monotonic())
        return time.monotonic() - state["since"] >= seconds

    return quiet


def assert_exactly_once(readers, data_dir: Path, cl_ord_ids) -> dict:
    """All of the above, for a subscriber that saw the whole output (with ``readers``) and sent
    ``cl_ord_ids``, after the exchange stopped: each order answered once, each answered by the
    engine journaled once, the journal and the output both numbered 1..N, and the output equal
    to the replay. Returns the replay's figures."""
    readers = _as_list(readers)
    assert_answered_exactly_once(readers, cl_ord_ids)
    last = assert_journal_exactly_once(data_dir, engine_answered(readers))
    seen = assert_sequence_continuous([s for r in readers for s in r.seqs], per_event=True, what="output seqs")
    assert seen == last, f"the output ends at seq {seen}, the journal at {last}"
    return assert_output_equals_replay(readers, data_dir)
