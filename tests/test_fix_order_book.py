"""A FIX session's persistent order book (gateways/fix_order_book.py): reopen, torn and
corrupted tails, foreign files, compaction."""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
from pathlib import Path

import pytest

from ringex.engine.wire import messages as m
from ringex.gateways import fix_orders as fo
from ringex.gateways import fix_order_book
from ringex.gateways.fix_order_book import MAGIC, OrderBook, OrderBookError

from fix_kit import INSTRUMENTS, SESSION, accepted, new, nos, one, report, trade


def test_reopen_restores(tmp_path: Path) -> None:
    path = tmp_path / "b.orders"
    with OrderBook(path) as b:
        accepted(b, b"A1", 900, t38=b"3")
        trade(b, price=5_000_050, qty=1000, makerOrderId=900, makerClOrdId=1, makerLeavesQty=2000,
              makerSessionId=SESSION)
        kw = fo.replace({11: b"R1", 41: b"A1", 38: b"3", 44: b"50000"}, b, INSTRUMENTS, SESSION)  # pending
        new(b, nos(b"A2"))
    with OrderBook(path) as b:
        assert b.cut_bytes == 0 and b.next_cl_ord_id == 4
        o = b.order(b"A1")
        assert (o.order_id, o.cum_qty, o.leaves_qty, o.notional, o.status) == (900, 1000, 2000, 5_000_050 * 1000, b"1")
        assert b.in_use(b"R1") and b.order(b"A2").status == b"A"
        f = one(report(b, "OrderReplaced", m.OrderReplaced, orderId=900, clOrdId=kw["clOrdId"], origClOrdId=1,
                       price=5_000_000, qty=3000, leavesQty=2000, sessionId=SESSION))
        assert (f[11], f[41], f[6]) == (b"R1", b"A1", b"50000.5")
    with OrderBook(path) as b:
        assert b.order(b"R1").num == 2 and b.by_engine_id(2) is b.order(b"A1") and b.pending(2) is None


def test_torn_tail_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "b.orders"
    with OrderBook(path) as b:
        new(b, nos(b"A1"))
        new(b, nos(b"A2"))
    full = path.read_bytes()
    for cut in (1, 5, 9, 30):
        path.write_bytes(full[:-cut])
        with OrderBook(path) as b:
            assert b.cut_bytes > 0 and b.order(b"A1") is not None and b.order(b"A2") is None
            assert b.next_cl_ord_id == 2
            new(b, nos(b"A3"))  # appends after the cut
        with OrderBook(path) as b:
            assert b.cut_bytes == 0 and b.order(b"A3").num == 2


def test_corrupted_record_detected(tmp_path: Path) -> None:
    path = tmp_path / "b.orders"
    with OrderBook(path) as b:
        new(b, nos(b"A1"))
        new(b, nos(b"A2"))
    data = bytearray(path.read_bytes())
    length = struct.unpack_from("<I", data, 16)[0]
    second = 16 + 8 + length
    data[second + 20] ^= 0x40  # a flipped bit in the second record's payload
    path.write_bytes(bytes(data))
    with OrderBook(path) as b:
        assert b.cut_bytes == len(data) - second
        assert b.order(b"A1") is not None and b.order(b"A2") is None
    assert path.stat().st_size == second


def test_not_our_file(tmp_path: Path) -> None:
    path = tmp_path / "other"
    path.write_bytes(b"hello world, this is not an order book")
    with pytest.raises(OrderBookError, match="not a FIX order book"):
        OrderBook(path)
    path.write_bytes(b"xy")
    with pytest.raises(OrderBookError):
        OrderBook(path)
    path.write_bytes(struct.pack("<II8x", MAGIC, 99))
    with pytest.raises(OrderBookError, match="version"):
        OrderBook(path)
    path.write_bytes(struct.pack("<II8x", MAGIC, 1)[:5])  # a crash while creating it
    with OrderBook(path) as b:
        assert b.next_cl_ord_id == 1


def test_compaction_keeps_live_orders(tmp_path: Path) -> None:
    path = tmp_path / "b.orders"
    with OrderBook(path) as b:
        accepted(b, b"LIVE", 1)
        for i in range(20):
            accepted(b, b"D%d" % i, 100 + i)
            report(b, "OrderCanceled", m.OrderCanceled, orderId=100 + i, clOrdId=b.order(b"D%d" % i).num,
                   canceledQty=1500, sessionId=SESSION, reason=m.CancelReason.User)
        accepted(b, b"P", 2)
        fo.cancel({11: b"C", 41: b"P"}, b, SESSION)
        b.flush()
        before = path.stat().st_size
        b.compact()
        assert path.stat().st_size < before / 5
        assert b.order(b"D3") is None and b.order(b"LIVE").order_id == 1
        new(b, nos(b"AFTER"))
    assert not (tmp_path / "b.orders.tmp").exists()
    with OrderBook(path) as b:
        assert b.order(b"D3") is None and b.order(b"LIVE").live and b.in_use(b"C")
        assert b.order(b"AFTER").num == 24 and b.next_cl_ord_id == 25
        f = one(report(b, "OrderCanceled", m.OrderCanceled, orderId=2, clOrdId=b.order(b"P").num, canceledQty=1500,
                       sessionId=SESSION, reason=m.CancelReason.User))
        assert (f[11], f[41]) == (b"C", b"P")


def test_automatic_compaction_bounds_the_file(tmp_path: Path) -> None:
    path = tmp_path / "b.orders"
    with OrderBook(path, compact_bytes=8192) as b:
        for i in range(200):
            accepted(b, b"X", i + 1)
            report(b, "OrderCanceled", m.OrderCanceled, orderId=i + 1, clOrdId=b.order(b"X").num, canceledQty=1500,
                   sessionId=SESSION, reason=m.CancelReason.User)
            b.flush()
            b.settle()  # (the compaction's thread done and its file in place)
            assert path.stat().st_size <= 8192 + 1024
        assert b.next_cl_ord_id == 201
    with OrderBook(path) as b:
        assert b.next_cl_ord_id == 201
    assert os.path.getsize(path) <= 8192 + 1024


def _canceled(b: OrderBook, cl: bytes, order_id: int) -> None:
    accepted(b, cl, order_id)
    report(b, "OrderCanceled", m.OrderCanceled, orderId=order_id, clOrdId=b.order(cl).num, canceledQty=1500,
           sessionId=SESSION, reason=m.CancelReason.User)
    b.flush()  # (as the gateway does each duty cycle)


def _into_compaction(b: OrderBook) -> None:
    """A live order, then orders that end, until an automatic compaction begins."""
    accepted(b, b"LIVE", 1)
    for i in range(1, 1000):
        _canceled(b, b"X%d" % i, 100 + i)
        if b.compacting:
            return
    raise AssertionError("no compaction began")


def _state(b: OrderBook) -> tuple:
    return (b.next_cl_ord_id, sorted((o.cl_ord_id, o.order_id, o.status, o.leaves_qty) for o in b.live_orders()))


def _opened_copy(path: Path, where: Path) -> tuple:
    """The state a process crash right now would leave: the files on disk, opened."""
    where.mkdir()
    shutil.copy(path, where / path.name)
    with OrderBook(where / path.name) as c:
        assert c.cut_bytes == 0
        return _state(c)


def test_automatic_compaction_writes_beside_the_duty_cycle(tmp_path: Path, monkeypatch) -> None:
    """The new file is written and synced by a thread: records appended meanwhile go to the
    old file, which holds everything until the rename, and then to the new one; a crash at
    any point leaves a file with every record."""
    path = tmp_path / "b.orders"
    release, writing, written = threading.Event(), threading.Event(), threading.Event()
    real = fix_order_book._write_synced

    def slow(tmp: Path, data: bytes) -> None:
        writing.set()
        assert release.wait(10)
        real(tmp, data)
        written.set()

    monkeypatch.setattr(fix_order_book, "_write_synced", slow)
    with OrderBook(path, compact_bytes=8192) as b:
        _into_compaction(b)
        assert writing.wait(10)
        big = path.stat().st_size
        for k in range(5):  # the duty cycle goes on: to the old file, nothing waits
            accepted(b, b"DURING%d" % k, 50 + k)
            _canceled(b, b"GONE%d" % k, 60 + k)
        b.flush()
        assert b.compacting and path.stat().st_size > big
        expected = _state(b)
        assert _opened_copy(path, tmp_path / "crash-while-writing") == expected
        release.set()
        assert written.wait(10)
        for _ in range(500):  # a later write_events, once the thread has ended, puts the new file in place
            b.write_events()
            if not b.compacting:
                break
            time.sleep(0.01)
        assert not b.compacting and path.stat().st_size < big
        assert _state(b) == expected and _opened_copy(path, tmp_path / "crash-after") == expected
        accepted(b, b"AFTER", 99)
        expected = _state(b)
    with OrderBook(path) as b:
        assert b.cut_bytes == 0 and _state(b) == expected
        assert b.order(b"DURING4").live and b.order(b"GONE4") is not None and b.order(b"X1") is None
    assert not (tmp_path / "b.orders.tmp").exists()


def test_a_failed_compaction_keeps_the_old_file(tmp_path: Path, monkeypatch, caplog) -> None:
    def full(tmp: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    path = tmp_path / "b.orders"
    monkeypatch.setattr(fix_order_book, "_write_synced", full)
    with OrderBook(path, compact_bytes=8192) as b:
        _into_compaction(b)
        b.settle()
        assert "compaction failed (No space left on device)" in caplog.text
        size = path.stat().st_size
        assert size > 8192
        for k in range(3):
            _canceled(b, b"Y%d" % k, 500 + k)  # not tried again until the file doubles
        assert not b.compacting
        expected = _state(b)
    with OrderBook(path) as b:
        assert b.cut_bytes == 0 and _state(b) == expected and b.order(b"X1") is not None


def test_close_waits_for_a_compaction_in_flight(tmp_path: Path, monkeypatch) -> None:
    release = threading.Event()
    real = fix_order_book._write_synced

    def slow(tmp: Path, data: bytes) -> None:
        assert release.wait(10)
        real(tmp, data)

    monkeypatch.setattr(fix_order_book, "_write_synced", slow)
    path = tmp_path / "b.orders"
    b = OrderBook(path, compact_bytes=8192)
    _into_compaction(b)
    accepted(b, b"LAST", 2)
    expected = _state(b)
    threading.Timer(0.2, release.set).start()
    b.close()
    assert path.stat().st_size < 8192 and not (tmp_path / "b.orders.tmp").exists()
    with OrderBook(path) as again:
        assert _state(again) == expected


def _append_record(path: Path, payload: bytes) -> None:
    """A record as the file's layout says: length, CRC-32 of the payload, the payload."""
    import zlib

    with open(path, "ab") as f:
        f.write(struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)


def test_state_records_carry_what_events_change(tmp_path: Path) -> None:
    """Acceptance, fills and the end of an order are U records, a fraction of the order's
    O record; read back they give the order as it was."""
    path = tmp_path / "b.orders"
    with OrderBook(path) as b:
        accepted(b, b"A1", 900, t38=b"3")
        b.flush()
        size = path.stat().st_size
        trade(b, price=5_000_050, qty=1000, makerOrderId=900, makerClOrdId=1, makerLeavesQty=2000,
              makerSessionId=SESSION)
        b.write_events()
        grew = path.stat().st_size - size
        state = (b.order(b"A1").order_id, b.order(b"A1").status, b.order(b"A1").cum_qty, b.order(b"A1").notional)
    assert b'U[1,900,"1",1000,2000,5000050000,false]' in path.read_bytes()  # (outside an event: alone)
    assert grew < 120  # an O record of the order is ~450 bytes
    with OrderBook(path) as b:
        o = b.order(b"A1")
        assert b.cut_bytes == 0 and (o.order_id, o.status, o.cum_qty, o.notional) == state
        assert struct.unpack_from("<I", path.read_bytes(), 4)[0] == 2


def test_a_version_1_file_is_read_and_becomes_version_2(tmp_path: Path) -> None:
    path = tmp_path / "b.orders"
    with OrderBook(path) as b:
        new(b, nos(b"A1"))
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 4, 1)  # the same records under the old version: it had no U records
    path.write_bytes(bytes(data))
    with OrderBook(path) as b:
        assert b.cut_bytes == 0 and b.order(b"A1") is not None
        accepted(b, b"A2", 901)
    assert struct.unpack_from("<I", path.read_bytes(), 4)[0] == 2
    with OrderBook(path) as b:
        assert b.order(b"A2").order_id == 901


@pytest.mark.parametrize("payload", [
    b'U[1,900,"0",0,3000,0,false,7]', b'U[1,900,"00",0,3000,0,false]', b'U[1,"900","0",0,3000,0,false]',
    b'U[1,900,"0",0,3000,0,0]', b'U[99,900,"0",0,3000,0,false]', b'U{"key":1}',
    b'E{"r":[["U",[99,900,"0",0,3000,0,false]]],"w":[0,1,2]}',
    b'E{"r":[["U",[1,900,"0",0,3000,0,false]],["U",[1,900,"2",0,true,0,false]]],"w":[0,1,2]}',
])
def test_a_state_record_that_does_not_read_is_cut(tmp_path: Path, payload: bytes) -> None:
    """CRC-valid but not a U record of a known order: corruption, cut with all after it,
    and an event record is applied whole or not at all."""
    path = tmp_path / "b.orders"
    with OrderBook(path) as b:
        new(b, nos(b"A1"))
    good = path.stat().st_size
    _append_record(path, payload)
    with OrderBook(path) as b:
        assert b.cut_bytes == path.stat().st_size - good or b.cut_bytes > 0
        o = b.order(b"A1")
        assert (o.order_id, o.status) == (0, b"A")
    assert path.stat().st_size == good


def test_records_written_by_hand_are_what_json_writes() -> None:
    """Orders and requests render their records by hand: the bytes ``json.dumps`` (keys
    sorted, compact) writes of ``to_json()``, for thousands of drawn ones (text needing
    escapes, flags, chains, positions, parameters)."""
    import json
    import random

    from ringex.gateways.fix_order_book import Order, Pending

    def dumps(d: dict) -> bytes:
        return json.dumps(d, separators=(",", ":"), sort_keys=True).encode("ascii")

    rng = random.Random(9)
    texts = [b"a", b"order-1", b'quo"te', b"back\\slash", b"x" * 64, b" spaced "]
    for i in range(3000):
        o = Order(key=i, num=i + rng.randrange(3), cl_ord_id=rng.choice(texts), chain=rng.sample(texts, rng.randrange(3)),
                  nums=[i, i + 5][:rng.randrange(1, 3)], order_id=rng.choice((0, 10**15)), account=rng.randrange(9),
                  instrument=1, symbol=rng.choice((b"BTC-USD", b'E"TH')), price_decimals=2, qty_decimals=0,
                  side=1, ord_type=2, tif=rng.choice((0, 3)), qty=rng.randrange(1, 10**12), price=rng.randrange(10**9),
                  stop_price=0, display_qty=rng.choice((0, 5)), post_only=rng.random() < 0.5,
                  reduce_only=rng.random() < 0.5, stp_mode=rng.randrange(6), cum_qty=rng.randrange(9),
                  leaves_qty=rng.randrange(9), notional=rng.randrange(10**15), status=rng.choice((b"0", b"A", b"2")),
                  triggered=rng.random() < 0.5, in_seq=rng.randrange(3), at=rng.choice(([], [7, 8])))
        assert o.json_text() == dumps(o.to_json())
        params = rng.choice(({}, {"price": 5, "qty": 2, "display": 0}, {"type": "7", "symbol": 'B"TC'}))
        p = Pending(num=i, kind=rng.choice(("cancel", "replace", "mass")), cl_ord_id=rng.choice(texts),
                    key=rng.randrange(9), params=params, held=rng.random() < 0.5, released=rng.random() < 0.5,
                    in_seq=rng.choice((0, 12)), at=rng.choice(([], [3, 4])))
        assert p.json_text() == dumps(p.to_json())
