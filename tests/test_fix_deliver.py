"""A FIX session's engine events (``FixGatewaySession.deliver_events``), in process: each
event's reports stored under its ring position, what a run of events changed in the book
in one record, and after a crash (the book behind the flow) the events read again applied
to the book once and not reported twice."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ringex.engine.wire import messages as m
from ringex.gateways import fix_orders as fo
from ringex.gateways.fix_codec import FixReader, encode, utc_timestamp
from ringex.gateways.fix_gateway import EVENT_RECORD_CHANGES, FixGatewaySession
from ringex.gateways.fix_instrument import FixInstrument
from ringex.gateways.fix_order_book import OrderBook
from ringex.gateways.gateway_config import GatewayConfig, SessionConfig
from ringex.gateways.session_store import SOURCE_OUTPUT

INST = FixInstrument(id=1, symbol=b"BTC-USD", price_decimals=0, qty_decimals=0, tick_size=1, lot_size=1,
                     min_qty=1, max_qty=10**6)
CFG = SessionConfig(id=1, credentials="pw", accounts=[1], target_comp_id="DEMO1", max_msgs_per_s=0)
GATEWAY = GatewayConfig(name="fix", protocol="fix", session=[CFG])
CREATED = 77  # the output ring's creation time


def _session(directory: Path) -> FixGatewaySession:
    now, wall = time.monotonic_ns(), time.time_ns()
    s = FixGatewaySession(CFG, GATEWAY, directory, {INST.symbol: INST}, now, inbound_mark=lambda: (1, 0))
    s.fix.connected(now)
    logon = encode(b"A", b"DEMO1", b"RINGEX", 1, utc_timestamp(wall), [(98, 0), (108, 30), (141, b"Y"), (554, b"pw")])
    s.fix.on_message(FixReader().feed(logon)[0], now, wall)
    assert s.fix.active
    return s


def _orders(s: FixGatewaySession, n: int) -> np.ndarray:
    """``n`` orders entered, and the engine's OrderAccepted of each, as ring slots."""
    events = np.zeros((n, m.SLOT_SIZE), np.uint8)
    for i in range(n):
        fields = {11: b"C%d" % i, 1: b"1", 55: b"BTC-USD", 54: b"1", 38: b"1", 40: b"2", 44: b"100", 59: b"1"}
        kw = fo.new_order(fields, s.book, {INST.symbol: INST}, s.account_ok, s.id, fo.Origin(i + 2, 1, i))
        accepted = m.OrderAccepted.encode(seq=i + 1, timestampNs=1, orderId=1000 + i, clOrdId=kw["clOrdId"],
                                          sessionId=1, account=1, instrument=1)
        events[i, :len(accepted)] = np.frombuffer(accepted, np.uint8)
    s.book.flush()
    return events


def _deliver(s: FixGatewaySession, events: np.ndarray) -> None:
    rows = np.arange(len(events))
    s.deliver_events(events, rows, np.zeros(len(rows), np.int64), rows, SOURCE_OUTPUT, CREATED)


def _event_records(path: Path) -> int:
    return path.read_bytes().count(b'E{"r":[')


def test_a_run_of_events_is_one_record(tmp_path: Path) -> None:
    s = _session(tmp_path)
    n = 3 * EVENT_RECORD_CHANGES + 5
    events = _orders(s, n)
    sent_before = s.store.next_seq
    _deliver(s, events)
    assert s.store.next_seq - sent_before == n  # one ExecutionReport New each
    path = tmp_path / "session-1.orders"
    assert _event_records(path) == 4  # 64 changes a record at most
    s.close()
    with OrderBook(path) as b:
        assert b.applied_through(SOURCE_OUTPUT, CREATED) == n - 1
        assert all(b.order(b"C%d" % i).order_id == 1000 + i for i in range(n))


def test_events_the_book_lost_are_applied_again_not_reported_again(tmp_path: Path) -> None:
    """The book written after the flow: a crash can lose the last run's record, never the
    reports. Read again, those events change the book once and send nothing."""
    s = _session(tmp_path)
    n = EVENT_RECORD_CHANGES + 10
    events = _orders(s, n)
    _deliver(s, events)
    s.close()
    path = tmp_path / "session-1.orders"
    data = path.read_bytes()
    last = data.rindex(b'E{"r":[') - 8  # the last record's start: its length and CRC, 4 bytes each
    path.write_bytes(data[:last])  # as if killed between the store's write and the book's
    s = _session_again(tmp_path)
    assert s.book.applied_through(SOURCE_OUTPUT, CREATED) == EVENT_RECORD_CHANGES - 1
    assert s.book.order(b"C%d" % (n - 1)).order_id == 0  # its acceptance lost with the record
    sent_before = s.store.next_seq
    _deliver(s, events)
    assert s.store.next_seq == sent_before  # reported already: nothing sent twice
    assert all(s.book.order(b"C%d" % i).order_id == 1000 + i for i in range(n))
    assert s.book.applied_through(SOURCE_OUTPUT, CREATED) == n - 1
    s.close()


def _session_again(directory: Path) -> FixGatewaySession:
    """The session restarted on its files (no new Logon: what was stored stays)."""
    return FixGatewaySession(CFG, GATEWAY, directory, {INST.symbol: INST}, time.monotonic_ns(),
                             inbound_mark=lambda: (1, 0))
