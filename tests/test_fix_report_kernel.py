"""The compiled ExecutionReports (``fix_report_kernel``) against ``fix_orders.execution_report``.

Two FIX sessions in process, given the same orders and the same engine events on the same
clock, one with ``compiled_reports`` off: every byte sent and stored must be the same, and
so must both books (in memory, read back from their files) and the kernel's mirror of the
orders (``ReportState``) must match the objects. The events are a seeded mix of what the
kernel takes (acceptances, fills on either side or both, ends for every reason, a client's
cancel done) and what it
leaves to Python (an STP decrement, rejections, triggers, replaces, refused cancels, a
client's cancel when it cannot tell which request it answers, events of orders it does
not know, events read again after a restart)."""

from __future__ import annotations

import random
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ringex.engine.wire import messages as m
from ringex.gateways import fix_gateway
from ringex.gateways import fix_orders as fo
from ringex.gateways import fix_report_kernel as k
from ringex.gateways.fix_codec import FixReader, encode, utc_timestamp
from ringex.gateways.fix_codec import utc_timestamp as python_utc
from ringex.gateways.fix_gateway import FixGatewaySession
from ringex.gateways.fix_instrument import FixInstrument, FixRefusal, _avg_px, _render
from ringex.gateways.fix_order_book import OrderBook
from ringex.gateways.fix_report_state import (LIMIT, W_CUM, W_FLAGS, W_LEAVES, W_NOTIONAL, W_ORDER_ID, W_STATUS,
                                              W_TRIGGERED, WORDS)
from ringex.gateways.gateway_config import GatewayConfig, SessionConfig
from ringex.gateways.session_store import SOURCE_OUTPUT

INST = FixInstrument(id=1, symbol=b"BTC-USD", price_decimals=2, qty_decimals=3, tick_size=1, lot_size=1,
                     min_qty=1, max_qty=10**9)
CFG = SessionConfig(id=1, credentials="pw", accounts=[1, 2], target_comp_id="DEMO1", max_msgs_per_s=0)
GATEWAY = GatewayConfig(name="fix", protocol="fix", session=[CFG])
CREATED = 77
WALL = 1_765_000_000_123_456_789
C = m.CancelReason


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's clocks fixed, so that two sessions write the same SendingTimes."""
    monkeypatch.setattr(fix_gateway, "time", types.SimpleNamespace(monotonic_ns=lambda: 5_000, time_ns=lambda: WALL))


def _session(directory: Path, compiled: bool) -> FixGatewaySession:
    s = FixGatewaySession(CFG, GATEWAY, directory, {INST.symbol: INST}, 5_000, inbound_mark=lambda: (1, 0))
    s.compiled_reports = compiled
    s.fix.connected(5_000)
    logon = encode(b"A", b"DEMO1", b"RINGEX", 1, utc_timestamp(WALL), [(98, 0), (108, 30), (141, b"Y"), (554, b"pw")])
    s.fix.on_message(FixReader().feed(logon)[0], 5_000, WALL)
    assert s.fix.active
    s.fix.out.clear()
    return s


class Flow:
    """Orders and engine events, made once and given to both sessions alike."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.orders: list[tuple[bytes, int]] = []  # (ClOrdID, engine clOrdId)
        self.seq = 0
        self.position = 0
        self.events: list[bytes] = []
        self.positions: list[int] = []
        self.trade_id = 0

    def enter(self, sessions: list[FixGatewaySession]) -> None:
        r = self.rng
        i = len(self.orders)
        ord_type = r.choice([b"1", b"2", b"2", b"2", b"3", b"4"])
        fields = {11: b"C%d" % i, 1: r.choice([b"1", b"2"]), 55: b"BTC-USD", 54: r.choice([b"1", b"2"]),
                  38: r.choice([b"1", b"0.5", b"2.125", b"%d" % r.randrange(1, 10**5)]), 40: ord_type,
                  59: b"3" if ord_type == b"1" else r.choice([b"0", b"1", b"3", b"4"])}
        if ord_type in (b"2", b"4"):
            fields[44] = r.choice([b"100", b"50000.25", b"0.01", b"%d.%02d" % (r.randrange(10**6), r.randrange(100))])
        if ord_type in (b"3", b"4"):
            fields[99] = b"101.5"
        if ord_type == b"2" and r.random() < 0.2:
            fields[18] = r.choice([b"6", b"E", b"6 E"])
        nums = {fo.new_order(fields, s.book, {INST.symbol: INST}, s.account_ok, s.id, fo.Origin(i + 2, 1, i))["clOrdId"]
                for s in sessions}
        assert len(nums) == 1
        for s in sessions:
            s.book.flush()
        self.orders.append((fields[11], nums.pop()))

    def _request(self, sessions: list[FixGatewaySession], o: Any) -> None:
        """A cancel, or now and then a replace, of order ``o`` in every session's book (held
        when the order is not accepted yet)."""
        cl = b"X%d" % self.position
        if self.rng.random() < 0.75:
            fields = {11: cl, 41: o.cl_ord_id}
        else:
            fields = {11: cl, 41: o.cl_ord_id, 38: b"%d" % (o.qty + 1000), 44: b"101"}
        for s in sessions:
            try:
                if 38 in fields:
                    fo.replace(fields, s.book, {INST.symbol: INST}, s.id)
                else:
                    fo.cancel(fields, s.book, s.id)
            except FixRefusal:
                pass  # (refused alike in every book)
            s.book.flush()

    def _add(self, message: bytes, same_seq: bool = False) -> None:
        if not same_seq:
            self.seq += 1
        self.events.append(message)
        self.positions.append(self.position)
        self.position += 1

    def _num(self) -> int:
        r = self.rng
        if r.random() < 0.05 or not self.orders:
            return r.randrange(1, 10**6)  # an order the book does not know
        return r.choice(self.orders[-40:])[1]

    def event(self, sessions: list[FixGatewaySession]) -> None:
        r = self.rng
        kind = r.choices(["accepted", "trade", "canceled", "user", "stp", "rejected", "triggered", "answer", "other"],
                         [30, 30, 10, 12, 4, 4, 4, 6, 6])[0]
        seq, ts = self.seq + 1, r.choice([0, WALL + r.randrange(10**12), 1_700_000_000_000_000_000])
        same = r.random() < 0.3 and self.seq > 0
        if same:
            seq = self.seq  # one input, several events: ExecIDs seq.1, seq.2, ...
        num = self._num()
        if kind == "accepted":
            msg = m.OrderAccepted.encode(seq=seq, timestampNs=ts, orderId=r.choice([r.randrange(1, 10**9), 2**62 + 5]),
                                         clOrdId=num, sessionId=r.choice([1, 1, 1, 2]), account=1, instrument=1)
        elif kind == "trade":
            self.trade_id += 1
            sides = r.choice([(1, 2), (2, 1), (1, 1), (2, 2)])
            msg = m.Trade.encode(seq=seq, timestampNs=ts, tradeId=self.trade_id,
                                 price=r.choice([1, 5_000_025, r.randrange(1, 10**8), 2**40]),
                                 qty=r.choice([1, 500, r.randrange(1, 10**5), 2**31]), makerOrderId=1,
                                 makerClOrdId=self._num(), makerLeavesQty=r.choice([0, 0, r.randrange(1, 10**5)]),
                                 takerOrderId=2, takerClOrdId=num, takerLeavesQty=r.choice([0, r.randrange(1, 10**5)]),
                                 instrument=1, makerAccount=1, makerSessionId=sides[0], takerAccount=1,
                                 takerSessionId=sides[1], aggressorSide=1)
        elif kind in ("canceled", "user", "stp"):
            reason = C.User if kind == "user" else r.choice([x for x in C if x != C.User])
            o = sessions[0].book.by_engine_id(num)
            leaves = o.leaves_qty if o is not None else 1
            if (kind == "user" and o is not None and o.live and sessions[0].book.pending_for(o) is None
                    and r.random() < 0.8):
                self._request(sessions, o)  # the client's cancel (or a replace), pending or held in both books
            gone = max(1, leaves // 2) if kind == "stp" else leaves
            msg = m.OrderCanceled.encode(seq=seq, timestampNs=ts, orderId=1, clOrdId=num, canceledQty=gone,
                                         sessionId=1, account=1, instrument=1, reason=reason)
        elif kind == "answer":  # a pending request answered: refused, or a replace done
            if r.random() < 0.15:
                for s in sessions:  # a mass cancel, now and then (its refusal is Python's)
                    fo.mass_cancel({11: b"M%d" % self.position, 530: b"7"}, s.book, {INST.symbol: INST},
                                   s.account_ok, s.id)
                    s.book.flush()
            pending = list(sessions[0].book._pending.values())
            if not pending:
                return
            p = r.choice(pending)
            o = sessions[0].book.by_key(p.key)
            if p.kind == "replace" and o is not None and o.live and r.random() < 0.5:
                msg = m.OrderReplaced.encode(seq=seq, timestampNs=ts, orderId=o.order_id, clOrdId=p.num,
                                             origClOrdId=o.num, price=o.price or 100, qty=o.qty + 7,
                                             leavesQty=o.leaves_qty + 7, displayQty=0, sessionId=1, account=1,
                                             instrument=1)
            else:
                msg = m.CancelRejected.encode(seq=seq, timestampNs=ts, orderId=1, clOrdId=p.num, origClOrdId=p.key,
                                              sessionId=1, account=1, instrument=1,
                                              reason=r.choice([m.RejectReason.UnknownOrder,
                                                               m.RejectReason.NotYourOrder]),
                                              refTemplateId={"cancel": 2, "replace": 3}.get(p.kind, 4))
        elif kind == "rejected":
            msg = m.OrderRejected.encode(seq=seq, timestampNs=ts, clOrdId=num, orderId=0, sessionId=1, account=1,
                                         instrument=1, reason=m.RejectReason.BadTick, refTemplateId=1)
        elif kind == "triggered":
            msg = m.StopTriggered.encode(seq=seq, timestampNs=ts, orderId=1, clOrdId=num, stopPrice=1,
                                         triggerPrice=1, sessionId=1, account=1, instrument=1)
        else:
            msg = m.BookDelta.encode(seq=seq, timestampNs=ts) if hasattr(m, "BookDelta") else m.OrderAccepted.encode(
                seq=seq, timestampNs=ts, orderId=1, clOrdId=num, sessionId=9, account=1, instrument=1)
        self._add(msg, same)


def _region(events: list[bytes]) -> np.ndarray:
    region = np.zeros((len(events), m.SLOT_SIZE), np.uint8)
    for i, e in enumerate(events):
        region[i, :len(e)] = np.frombuffer(e, np.uint8)
    return region


def _deliver(s: FixGatewaySession, region: np.ndarray, rows: np.ndarray, positions: np.ndarray) -> None:
    s.deliver_events(region, rows, np.zeros(len(rows), np.int64), positions, SOURCE_OUTPUT, CREATED)


def _mirror_matches(book: OrderBook) -> None:
    rs = book.report_state
    assert len(rs) == len(book._orders)
    st = np.frombuffer(rs.state, np.int64)
    for slot, o in enumerate(rs.orders):
        assert book.by_key(o.key) is o
        b = slot * WORDS
        assert st[b + W_STATUS] == o.status[0] and st[b + W_TRIGGERED] == int(o.triggered)
        if st[b + W_FLAGS]:
            continue
        assert (st[b + W_ORDER_ID], st[b + W_CUM], st[b + W_LEAVES], st[b + W_NOTIONAL]) == (
            o.order_id, o.cum_qty, o.leaves_qty, o.notional)
        for n in o.nums:
            assert rs.slot_of[n - rs.base] == slot


def _books_equal(a: OrderBook, b: OrderBook) -> None:
    assert {k: o.to_json() for k, o in a._orders.items()} == {k: o.to_json() for k, o in b._orders.items()}
    assert {n: p.to_json() for n, p in a._pending.items()} == {n: p.to_json() for n, p in b._pending.items()}
    assert a._live == b._live
    assert a._through == b._through
    assert a._texts == b._texts


@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_reports_are_the_python_reports(tmp_path: Path, clock: None, seed: int) -> None:
    _compare(tmp_path, seed)


def test_reports_too_long_to_frame_at_once_are_sent_one_by_one(tmp_path: Path, clock: None,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``frame_messages`` refuses a run with a message over the limit it is given; the
    kernel's reports then go out one at a time, the same bytes."""
    monkeypatch.setattr(fix_gateway, "MAX_PAYLOAD", 330)  # some reports are longer, most are not
    _compare(tmp_path, 3)


def _compare(tmp_path: Path, seed: int) -> None:
    python, compiled = _session(tmp_path / "p", False), _session(tmp_path / "c", True)
    both = [python, compiled]
    flow = Flow(seed)
    rng = random.Random(seed + 100)
    delivered = 0
    took = 0
    for step in range(60):
        for _ in range(rng.randrange(0, 6)):
            flow.enter(both)
        for _ in range(rng.randrange(1, 30)):
            flow.event(both)
        region = _region(flow.events)
        start = delivered if rng.random() < 0.85 else max(0, delivered - rng.randrange(1, 20))  # some again
        rows = np.arange(start, len(flow.events), dtype=np.int64)
        positions = np.array(flow.positions, np.int64)[start:]
        sent_before = compiled.store.next_seq
        for s in both:
            _deliver(s, region, rows, positions)
        flows = [(tmp_path / d / "session-1.flow").read_bytes() for d in ("p", "c")]
        assert flows[0] == flows[1], f"step {step}"  # every report, as sent (no connection: all stored)
        took += compiled.store.next_seq - sent_before
        delivered = len(flow.events)
        _books_equal(python.book, compiled.book)
        _mirror_matches(compiled.book)
        if step % 20 == 19:
            compiled.book.compact()  # the mirror rebuilt from what the book keeps
            python.book.compact()
            _mirror_matches(compiled.book)
    assert took > 100
    for s in both:
        s.close()
    with OrderBook(tmp_path / "p" / "session-1.orders") as a, OrderBook(tmp_path / "c" / "session-1.orders") as b:
        _books_equal(a, b)
        _mirror_matches(b)


def test_the_kernel_takes_the_common_events_and_stops_at_the_rest(tmp_path: Path, clock: None) -> None:
    """It is the kernel that reports acceptances, fills and ends (not a fallback to Python
    throughout), and it stops, with nothing done, at an event it leaves to Python."""
    s = _session(tmp_path, True)
    flow = Flow(1)
    for _ in range(3):
        flow.enter([s])
    (_, a), (_, b), (_, c) = flow.orders
    flow._add(m.OrderAccepted.encode(seq=1, timestampNs=WALL, orderId=11, clOrdId=a, sessionId=1, account=1,
                                     instrument=1))
    flow._add(m.OrderAccepted.encode(seq=2, timestampNs=WALL, orderId=12, clOrdId=b, sessionId=1, account=1,
                                     instrument=1))
    flow._add(m.Trade.encode(seq=3, timestampNs=WALL, tradeId=1, price=100, qty=1, makerOrderId=11, makerClOrdId=a,
                             makerLeavesQty=0, takerOrderId=12, takerClOrdId=b, takerLeavesQty=0, instrument=1,
                             makerAccount=1, makerSessionId=1, takerAccount=1, takerSessionId=1, aggressorSide=1))
    flow._add(m.StopTriggered.encode(seq=4, timestampNs=WALL, orderId=13, clOrdId=c, stopPrice=1, triggerPrice=1,
                                     sessionId=1, account=1, instrument=1))
    out, words, wire = _kernel(s, flow.events)
    assert words[k.O_STOP] == 3 and words[k.O_MESSAGES] == 4  # two New, two fills (a self-match)
    assert words[k.O_FRAMED] == 1
    messages = FixReader().feed(wire.tobytes())
    assert [x.seq_num for x in messages] == [7, 8, 9, 10] and all(x.msg_type == b"8" for x in messages)
    assert words[k.O_EXEC_SEQ] == 3 and words[k.O_EXEC_K] == 1
    body = out[:words[k.O_BODY_BYTES]].tobytes()
    assert body.count(b"150=0\x01") == 2 and body.count(b"150=F\x01") == 2 and b"17=3.1-2\x01" in body


def _kernel(s: FixGatewaySession, events: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``deliver_reports`` of ``events`` (positions 0, 1, ...) over session ``s``'s book, called
    as the gateway calls it; the book itself is not told (the caller looks at the output)."""
    rs = s.book.report_state
    head, middle = s.fix.report_header(WALL)
    ints = np.array((0, 1, -1, -1, -1, 0, WALL, rs.base, SOURCE_OUTPUT, CREATED, 64, rs.longest, 7, 0, 1 << 16,
                     middle), np.int64)
    rows = np.arange(len(events), dtype=np.int64)
    out, words, wire, _, _ = k.deliver_reports(
        _region(events), rows, rows.copy(), np.frombuffer(rs.state, np.int64), np.frombuffer(rs.slot_of, np.int64),
        np.frombuffer(rs.arena, np.uint8), head, ints)
    return out, words, wire


def _cancel_pending(tmp_path: Path) -> tuple[FixGatewaySession, Flow, Any, int]:
    """A session with one accepted order (ClOrdID, engine clOrdId in ``flow.orders``) and a
    client's cancel of it (ClOrdID K1) pending; the order and the request's engine clOrdId."""
    s = _session(tmp_path, True)
    flow = Flow(1)
    flow.enter([s])
    (cl, num), = flow.orders
    o = s.book.by_engine_id(num)
    o.order_id = 11
    s.book.save_state(o)
    fo.cancel({11: b"K1", 41: cl}, s.book, s.id)
    request = s.book.pending_for(o).num
    return s, flow, o, request


def test_a_clients_cancel_done_answers_its_request_in_the_kernel(tmp_path: Path, clock: None) -> None:
    s, flow, o, request = _cancel_pending(tmp_path)
    (cl, num), = flow.orders
    flow._add(m.OrderCanceled.encode(seq=1, timestampNs=WALL, orderId=11, clOrdId=num, canceledQty=o.leaves_qty,
                                     sessionId=1, account=1, instrument=1, reason=C.User))
    out, words, wire = _kernel(s, flow.events)
    assert words[k.O_STOP] == 1 and words[k.O_MESSAGES] == 1 and words[k.O_DROPPED] == 1
    assert words[-1] == request
    report = FixReader().feed(wire.tobytes())[0]
    assert (report.get(11), report.get(41), report.get(150), report.get(39)) == (b"K1", cl, b"4", b"4")
    assert b'["X",{"num":%d}]' % request in out.tobytes()


def test_a_refused_cancel_is_answered_in_the_kernel(tmp_path: Path, clock: None) -> None:
    s, flow, o, request = _cancel_pending(tmp_path)
    (cl, num), = flow.orders
    flow._add(m.CancelRejected.encode(seq=1, timestampNs=WALL, orderId=11, clOrdId=request, origClOrdId=num,
                                      sessionId=1, account=1, instrument=1, reason=m.RejectReason.UnknownOrder,
                                      refTemplateId=2))
    out, words, wire = _kernel(s, flow.events)
    assert words[k.O_STOP] == 1 and words[k.O_MESSAGES] == 1 and words[k.O_DROPPED] == 1
    reject = FixReader().feed(wire.tobytes())[0]
    assert reject.msg_type == b"9"
    assert (reject.get(11), reject.get(41), reject.get(434), reject.get(102), reject.get(58)) == (
        b"K1", cl, b"1", b"1", b"UnknownOrder")


def test_the_numbers_are_written_as_python_writes_them() -> None:
    rng = random.Random(7)
    buf = np.zeros(64, np.uint8)
    for notional in range(1, 12):  # AvgPx ties, half to even: 0.5 -> 0, 1.5 -> 2, ...
        assert buf[:k._avg_px(buf, 0, notional, 2 * 10**8, 0)].tobytes() == _avg_px(notional, 2 * 10**8, 0)
    for _ in range(20_000):
        v = rng.choice([0, 1, 5, 10, 100, rng.randrange(10**6), rng.randrange(10**18), -rng.randrange(10**9)])
        d = rng.randrange(0, 19)
        assert buf[:k._decimal(buf, 0, v, d)].tobytes() == _render(v, d)
        cum = rng.randrange(1, 10**10)
        notional = min(LIMIT - 1, rng.randrange(0, cum * rng.choice([1, 100, 10**6, 10**9])))
        pd = rng.randrange(0, 9)
        if k._avg_fits(notional, cum):
            assert buf[:k._avg_px(buf, 0, notional, cum, pd)].tobytes() == _avg_px(notional, cum, pd)
        ns = rng.randrange(0, 2**63 - 1) if rng.random() < 0.5 else rng.randrange(17 * 10**17, 19 * 10**17)
        assert buf[:k._utc(buf, 0, ns)].tobytes() == python_utc(ns)


def test_a_delivery_after_the_warm_up_compiles_nothing(tmp_path: Path, clock: None) -> None:
    """A compile in a duty cycle takes seconds: the gateway's supervisor would take it for a
    hung process. The warm-up compiles the types a delivery passes (a ring's read-only slots,
    the mirror's buffers, the header's bytes)."""
    k.warm_up()
    compiled = len(k.deliver_reports.signatures)
    s = _session(tmp_path, True)
    flow = Flow(2)
    for _ in range(5):
        flow.enter([s])
    for _ in range(20):
        flow.event([s])
    region = _region(flow.events)
    region.flags.writeable = False  # as a ring consumer reads it
    rows = np.arange(len(flow.events), dtype=np.int64)
    _deliver(s, region, rows, rows.copy())
    assert s.store.next_seq > 2
    assert len(k.deliver_reports.signatures) == compiled
