"""The open-loop load generator (tools/load.py) and the pure parts of ``ringex bench e2e``.

Without an exchange: the pre-framed flow is the codec's bytes; with a fake clock and a fake
exchange behind fake sockets, a stall of the generator shows up as latency measured from the
intended send times (the coordinated-omission rule), cancels find their targets and their
acknowledgements, fills are timed, keepalives carry the right number and a Terminate stops
the run. Against a real ``ringex run``: a short run at 2,000 orders/s, every order
acknowledged, the counts consistent, .hgrm files and the JSON output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ringex.engine.wire import messages as m
from ringex.gateways.sofh import FrameReader, header, scan
from ringex.tools import bench_e2e
from ringex.tools import load as L

from gateway_kit import PRICE, gateway_toml, running_exchange, session_toml
from pipeline_kit import unique_prefix

MS = 1_000_000


# ------------------------------------------------------------------ the flow


def test_the_flow_is_the_codecs_bytes_framed_round_robin():
    specs = L.parse_sessions("1:a:11,2:b:12,5:c:13")
    flow = L.make_flow(3000, specs, instrument=4, price=PRICE, seed=3, max_live=10)
    frames = np.zeros((2000, 2), np.int64)
    for s, stream in enumerate(flow.streams):
        count, stop, status = scan(stream, 0, len(stream), 1 << 12, 0xEB50, frames)
        assert (count, stop, status) == (1000, len(stream), 0)
        assert list(flow.ends[s]) == list(frames[:count].sum(axis=1))
        for j in range(count):
            payload = bytes(stream[frames[j, 0]: frames[j, 0] + frames[j, 1]])
            d = m.SCHEMA.decode(np.frombuffer(payload, np.uint8))
            i = j * 3 + s  # order i goes to session i % 3 as its clOrdId i // 3 + 1
            common = dict(clOrdId=j + 1, sessionId=specs[s].session_id, account=specs[s].account, instrument=4)
            if flow.kinds[i] == L.CANCEL:
                assert payload == m.CancelOrder.encode(**common)
                continue
            assert payload == m.NewOrder.encode(**common, side=d["side"], ordType="Limit", qty=1, price=d["price"],
                                                timeInForce=d["timeInForce"])
            buy = d["side"] == m.Side.Buy
            if flow.kinds[i] == L.PASSIVE:  # behind the mid, resting
                assert d["timeInForce"] == m.TimeInForce.GTC and (d["price"] < flow.mid[i]) == buy
            else:  # at or through the mid
                assert d["timeInForce"] == m.TimeInForce.IOC
                assert d["price"] >= flow.mid[i] if buy else d["price"] <= flow.mid[i]
    assert abs(flow.mid - PRICE).max() <= PRICE * L.MID_RANGE
    # the mix: the engine benchmark's until the working cap binds, never more than the cap
    live = np.zeros(3, int)
    for i, k in enumerate(flow.kinds.tolist()):
        live[i % 3] += {L.PASSIVE: 1, L.CANCEL: -1, L.IOC: 0}[k]
        assert 0 <= live[i % 3] <= 10
    assert 0.08 < np.mean(flow.kinds == L.IOC) < 0.12
    assert np.array_equal(L.make_flow(3000, specs, instrument=4, price=PRICE, seed=3, max_live=10).kinds, flow.kinds)


def test_sessions_parse_and_refuse_nonsense():
    assert L.parse_sessions(L.DEFAULT_SESSIONS)[2] == L.SessionSpec(3, "demo-3", 3)
    for bad in ("", "1:x", "a:x:1", "1:x:1,1:y:2", "1::1"):
        with pytest.raises(ValueError):
            L.parse_sessions(bad)


# ------------------------------------------------------------------ a fake exchange


class FakeClock:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


class FakeSocket:
    """One session's connection to a fake exchange: accepts every NewOrder (an IOC also
    trades once against session 99), cancels a known order id (``OrderCanceled(User)`` with
    the target's clOrdId) and refuses a cancel of order id 0."""

    def __init__(self, session_id: int, orders: dict[int, int]) -> None:
        self.session_id = session_id
        self.orders = orders  # orderId -> clOrdId, shared by the sessions
        self.reader = FrameReader(1 << 12)
        self.out = bytearray()
        self.received: list = []  # decoded messages, in order

    def send(self, data) -> int:
        frames = self.reader.feed(bytes(data))
        for i in range(len(frames)):
            d = m.SCHEMA.decode(frames.payload(i))
            self.received.append(d)
            self.answer(d)
        return len(data)

    def emit(self, message: bytes) -> None:
        self.out += header(len(message)) + message

    def answer(self, d) -> None:
        if d.name == "NewOrder":
            oid = len(self.orders) + 1
            self.orders[oid] = d["clOrdId"]
            self.emit(m.OrderAccepted.encode(orderId=oid, clOrdId=d["clOrdId"], sessionId=self.session_id,
                                             side=d["side"], price=d["price"], qty=d["qty"]))
            if d["timeInForce"] == m.TimeInForce.IOC:
                self.emit(m.Trade.encode(qty=1, price=d["price"], takerClOrdId=d["clOrdId"], makerClOrdId=7,
                                         takerSessionId=self.session_id, makerSessionId=99,
                                         aggressorSide=d["side"], takerOrderId=oid))
        elif d.name == "CancelOrder":
            if d["orderId"] in self.orders:
                assert self.orders[d["orderId"]] == d["origClOrdId"]
                self.emit(m.OrderCanceled.encode(orderId=d["orderId"], clOrdId=d["origClOrdId"],
                                                 sessionId=self.session_id, reason="User", canceledQty=1))
            else:
                self.emit(m.CancelRejected.encode(clOrdId=d["clOrdId"], reason="UnknownOrder",
                                                  sessionId=self.session_id, refTemplateId=2))

    def recv_into(self, view, n: int = 0) -> int:
        if not self.out:
            raise BlockingIOError
        k = min(len(view), n or len(view), len(self.out))
        view[:k] = self.out[:k]
        del self.out[:k]
        return k


def fake_generator(orders: int, rate: float, sessions: int = 3, **kw):
    specs = [L.SessionSpec(i + 1, "x", i + 1) for i in range(sessions)]
    flow = L.make_flow(orders, specs, price=PRICE, seed=5)
    known: dict[int, int] = {}
    socks = [FakeSocket(s.session_id, known) for s in specs]
    clock = FakeClock()
    gen = L.LoadGenerator(flow, socks, rate, clock=clock, **kw)
    gen.start(t0_ns=0)
    return gen, socks, clock


def step(gen, clock, t_ns: int) -> None:
    clock.t = t_ns
    gen.cycle()  # sends what is due; the fake answers at once
    gen.cycle()  # reads the answers, at the same instant


def test_the_schedule_says_exactly_which_orders_are_due():
    rng = np.random.default_rng(0)
    for rate in (1.0, 7.7, 1000.0, 20_000.0, 149_999.0, 333_333.3):
        sched = L.Schedule(5000, rate, 12_345)
        assert sched.due(12_344) == 0 and sched.due(12_345) == 1
        times = list(rng.integers(0, int(6000 / rate * 1e9), 500)) + [int(x) - 12_345 for x in sched.intended[::97]]
        for d in times:  # order i is due once its intended time t0 + floor(i * 1e9 / rate) has come
            assert sched.due(12_345 + int(d)) == int(np.count_nonzero(sched.offset <= d))


def test_a_stall_shows_up_as_latency_from_the_intended_time():
    # 1,000 orders/s: order i is intended at i ms. The generator runs a duty cycle every
    # millisecond except from 100 to 199 ms (stalled); the exchange answers instantly.
    gen, _, clock = fake_generator(300, 1000.0)
    for ms in range(0, 301):
        if not 100 <= ms < 200:
            step(gen, clock, ms * MS)
    r = gen.result()
    assert r["sent"] == r["acked"] == 300 and r["unacked"] == 0
    lat = gen.per_order("ack_at") - gen.schedule.intended
    # the orders due during the stall went out at 200 ms: 100 ms .. 1 ms late, and it shows
    assert list(lat[100:200] // MS) == list(range(100, 0, -1))
    assert (lat[:100] == 0).all() and (lat[200:] == 0).all()
    assert 99_000 <= r["ack_max_us"] <= 100_100 and r["ack_p90_us"] >= 60_000
    assert r["send_lag_max_us"] >= 99_000
    # measured from when the bytes left instead, the stall would have vanished
    assert r["ack_from_send_p99_us"] == 0


def test_the_late_count_looks_at_each_order_once_and_agrees_with_a_full_look():
    gen, _, _ = fake_generator(600, 1000.0)
    rng = np.random.default_rng(4)
    answer = rng.integers(-5 * MS, 9 * MS, 600)  # negative: never acknowledged
    intended = gen.schedule.intended
    gen.per_order("ack_at")[:] = np.where(answer < 0, -1, intended + answer)
    limit = 3 * MS
    for now in (0, 2 * MS, 150 * MS, 150 * MS, 151 * MS, 420 * MS, 10**10):
        old = gen.schedule.due(now - limit)
        expected = sum(1 for j in range(old) if answer[j] < 0 or answer[j] > limit)
        assert gen.late(now, limit) == expected
    assert gen._late_upto == 600


def test_cancels_fills_and_acknowledgements_map_back_by_index():
    gen, socks, clock = fake_generator(3000, 10_000.0)
    for us in range(0, 320_000, 100):
        step(gen, clock, us * 1000)
    r = gen.result()
    assert r["sent"] == r["acked"] == r["orders"] == 3000
    assert r["orders_passive"] + r["orders_cancel"] + r["orders_ioc"] == 3000
    # a cancel with a target is acknowledged by its target's OrderCanceled; one without by
    # its CancelRejected; every IOC traded once
    assert r["rejected"] == ({"UnknownOrder": r["cancels_without_target"]} if r["cancels_without_target"] else {})
    assert r["orders_cancel"] > r["cancels_without_target"]
    assert r["filled_orders"] == r["trades"] == r["orders_ioc"]
    assert r["fill_p99_us"] is not None and r["ack_p99_us"] is not None
    sent = [d for s in socks for d in s.received]
    assert [d["clOrdId"] for d in socks[1].received] == list(range(1, 1001))  # numbered per session
    cancels = [d for d in sent if d.name == "CancelOrder" and d["orderId"]]
    assert len({(d["sessionId"], d["origClOrdId"]) for d in cancels}) == len(cancels)  # each target once


def test_aggressive_orders_lean_against_a_drifting_position():
    gen, socks, clock = fake_generator(3000, 10_000.0, sessions=1, max_position=5)
    for us in range(0, 320_000, 100):
        step(gen, clock, us * 1000)
    # the fake's IOCs always fill: without leaning the position would random-walk
    assert abs(gen.conns[0].position) <= 6
    assert gen.leaned > 0


def test_keepalive_between_frames_and_a_terminate_stops_the_run():
    gen, socks, clock = fake_generator(30, 1000.0, sessions=1, keepalive_ms=1000)
    for ms in range(0, 40):
        step(gen, clock, ms * MS)
    socks[0].received.clear()
    step(gen, clock, 40 * MS + 501 * MS)  # silent for more than half the interval
    assert [(d.name, d["nextSeqNo"]) for d in socks[0].received] == [("Sequence", 31)]
    socks[0].emit(m.Sequence.encode(nextSeqNo=99))  # the server's keepalive: ignored
    step(gen, clock, 600 * MS)
    socks[0].emit(m.Terminate.encode(code="SlowConsumer", reason="too slow"))
    with pytest.raises(L.LoadError, match="SlowConsumer: too slow"):
        step(gen, clock, 601 * MS)


def test_histograms_are_filled_in_bulk_exactly():
    from hdrh.histogram import HdrHistogram

    lat = (np.random.default_rng(1).lognormal(8, 2, 20_000) * 1000).astype(np.int64)
    bulk = L._histogram(lat)
    one = HdrHistogram(1, L.HIST_MAX_US, 3)
    for v in np.clip(lat // 1000, 1, None).tolist():
        one.record_value(v)
    for q in (50, 90, 99, 99.9, 100):
        assert bulk.get_value_at_percentile(q) == one.get_value_at_percentile(q)


# ------------------------------------------------------------------ bench e2e's search


def test_the_rate_search_climbs_then_bisects_within_its_budget():
    capacity = 57_000
    tried = []

    def measure(rate: float) -> bool:
        tried.append(rate)
        return rate <= capacity

    best = bench_e2e.search_rate(measure, start=20_000, budget=12)
    assert tried[:3] == [20_000, 40_000, 80_000]
    assert best <= capacity and best >= capacity * 0.9
    assert len(tried) <= 12
    # below the start: halves until one passes
    tried.clear()
    assert bench_e2e.search_rate(lambda r: tried.append(r) or r <= 6_000, start=20_000, budget=12) >= 5_000
    assert tried[:3] == [20_000, 10_000, 5_000]
    # nothing passes
    assert bench_e2e.search_rate(lambda r: False, start=20_000, budget=4) == 0
    # out of time (measure says None): the best so far, no more measurements
    tried.clear()
    best = bench_e2e.search_rate(lambda r: tried.append(r) or (None if len(tried) > 2 else True), start=20_000)
    assert best == 40_000
    assert tried == [20_000, 40_000, 80_000]


def test_a_bench_exchange_starts_once_even_entered_after_its_start(tmp_path):
    """``with Exchange().start() as ex`` (a probe did this) entered a started exchange by
    starting a second ``ringex run`` on its directory: refused by the journal lock, that one
    was stopped at the end and the directory removed under the first, which ran on."""

    class Exited:
        returncode = 0

        def poll(self):
            return 0

    ex = bench_e2e.Exchange()
    starts = []

    def fake_start(timeout):
        starts.append(timeout)
        ex.proc = Exited()
        return ex

    ex._start = fake_start
    with ex.start() as entered:
        assert entered is ex and len(starts) == 1
    assert not ex.directory.exists()  # stopped and removed once, at the end
    with pytest.raises(RuntimeError, match="started already"):
        ex.start()
    assert len(starts) == 1


def test_the_bench_config_changes_only_what_it_must():
    toml = bench_e2e.bench_toml("/tmp/x/data", "rxbench1")
    from ringex.tools.config import parse_config

    cfg = parse_config(toml)
    assert cfg.exchange.data_dir == "/tmp/x/data" and cfg.exchange.shm_prefix == "rxbench1"
    assert cfg.gateway[0].listen == "127.0.0.1:0"
    assert all(s.max_msgs_per_s == 0 for s in cfg.gateway[0].session)
    assert cfg.journal.durability == "batch"  # the embedded default's
    assert parse_config(bench_e2e.bench_toml("/tmp/x/data", "rxbench1", "none")).journal.durability == "none"
    processes = {p.name: p.agents for p in cfg.process}
    assert processes["core"] == ["sequencer", "engine"] and processes["edge"] == ["sbe-gateway", "fix-gateway"]
    merged = parse_config(bench_e2e.bench_toml("/tmp/x/data", "rxbench1", gateways_in_core=True))
    processes = {p.name: p.agents for p in merged.process}
    assert processes == {"core": ["sbe-gateway", "fix-gateway", "sequencer", "engine"], "market-data": ["md-publisher"]}
    assert merged.gateway == cfg.gateway and merged.journal == cfg.journal  # nothing else moved


# ------------------------------------------------------------------ against ringex run

SESSIONS = "1:pw1:1,2:pw2:2,3:pw3:3"


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    prefix = unique_prefix()
    toml = gateway_toml(prefix, sessions="".join(session_toml(s, f"[{s}]") for s in (1, 2, 3)))
    with running_exchange(tmp_path_factory.mktemp("load"), toml) as running:
        yield running


def test_a_short_run_acknowledges_every_order(ex, tmp_path):
    r = L.run_load(ex.host, ex.port, SESSIONS, price=PRICE, rate=2000, duration=2.0, hgrm_dir=tmp_path)
    assert r["orders"] == r["sent"] == r["acked"] == 4000 and r["unacked"] == r["unsent"] == 0
    assert r["completed"] and r["not_applied"] == 0
    assert r["orders_passive"] + r["orders_cancel"] + r["orders_ioc"] == 4000
    # the only refusals a run may see: a cancel whose target was filled or never acknowledged
    assert set(r["rejected"]) <= {"UnknownOrder"}
    assert r["rejected"].get("UnknownOrder", 0) <= r["orders_cancel"]
    assert 0 < r["filled_orders"] <= r["orders_ioc"] and r["trades"] >= r["filled_orders"]
    assert r["ack_p50_us"] <= r["ack_p90_us"] <= r["ack_p99_us"] <= r["ack_p999_us"] <= r["ack_max_us"]
    assert r["fill_p50_us"] <= r["fill_p99_us"] <= r["fill_p999_us"]
    assert 0 < r["achieved_rate"] <= 2000 * 1.001  # acked / (last ack - start): never above the offer
    for key, total in (("ack_hgrm", 4000), ("fill_hgrm", r["filled_orders"])):
        text = open(r[key]).read()
        rows = [line.split() for line in text.splitlines()[2:] if line.strip() and not line.startswith("#")]
        assert rows and all(len(row) in (3, 4) for row in rows)  # value, percentile, count[, 1/(1-p)]
        values = [float(row[0]) for row in rows]
        assert values == sorted(values) and float(rows[-1][1]) == 1.0 and int(rows[-1][2]) == total
        assert "#[Max" in text


def test_the_command_prints_one_json_object(ex, capsys):
    assert L.main(["--host", ex.host, "--port", str(ex.port), "--sessions", SESSIONS, "--price", str(PRICE),
                   "--rate", "500", "--duration", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("offered_rate", "duration_s", "sent", "acked", "unacked", "rejected", "trades", "achieved_rate",
                "ack_p50_us", "ack_p90_us", "ack_p99_us", "ack_p999_us", "ack_max_us", "fill_p50_us", "fill_p99_us",
                "fill_p999_us"):
        assert key in r, key
    assert r["acked"] == r["sent"] == 500


def test_a_refused_logon_is_an_error_naming_the_session(ex):
    with pytest.raises(L.LoadError, match="session 2: logon failed"):
        L.run_load(ex.host, ex.port, "1:pw1:1,2:wrong:2", price=PRICE, rate=100, duration=0.1)
