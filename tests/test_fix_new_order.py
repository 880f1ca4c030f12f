"""The compiled NewOrderSingle checks (``fix_new_order.order_values``) against the Python
mapping they stand in for (``fix_orders.new_order``): on thousands of NewOrderSingles, framed
and validated by ``fix_scan`` first as in the gateway, the compiled path accepts an order
only where ``new_order`` does, with the same engine values, and leaves to it every
refusal."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from ringex.engine.wire import messages as m
from ringex.gateways import fix_new_order as fn
from ringex.gateways import fix_orders as fo
from ringex.gateways import fix_scan as fs
from ringex.gateways.fix_instrument import FixInstrument, FixRefusal
from ringex.gateways.fix_order_book import OrderBook
from test_fix_codec import frame, header

BTC = FixInstrument(id=7, symbol=b"BTC-USD", price_decimals=1, qty_decimals=3, tick_size=5, lot_size=10,
                    min_qty=10, max_qty=10**9)
ETH = FixInstrument(id=9, symbol=b"ETH-USD", price_decimals=0, qty_decimals=0, tick_size=1, lot_size=1, min_qty=1,
                    max_qty=10**6)
INSTRUMENTS = {BTC.symbol: BTC, ETH.symbol: ETH}
ACCOUNTS = (3, 100, 4294967295)

SYMBOLS = [b"BTC-USD", b"ETH-USD", b"XRP-USD", b"BTC-US", b"btc-usd"]
QUANTITIES = [b"1", b"0.01", b"0.010", b"0.0100", b"0.011", b"2", b"10", b"0", b"-1", b"000000000000000000002",
              b"1000000", b"1000001", b"999999999999999999", b"9223372036854775807", b"1" * 19, b".5", b"5.",
              b"0.0001", b"3.5000000000", b"12345678901234567.8"]
PRICES = [b"100", b"100.5", b"100.25", b"100.0", b"0", b"-5", b"0.5", b"922337203685477580.5", b"1" * 18,
          b"50000.00000", b"7.", b".5", b"33", b"100.3", b"7.1", b"0.1"]
EXEC_INST = [b"6", b"E", b"6 E", b"E 6", b"6 6", b"E E 6"]
CL_ORD_IDS = [b"a", b"order-1", b"x" * 64, b"y" * 65, b"with space", b"tab\tin", b"\x7f"]


def _draw(rng: random.Random, i: int) -> list[tuple[int, bytes]]:
    """A NewOrderSingle's body fields, each choice with good and bad values."""
    ord_type = rng.choice(b"12341")
    f = [(11, rng.choice(CL_ORD_IDS) if rng.random() < 0.2 else b"u%d" % i), (55, rng.choice(SYMBOLS)), (54, rng.choice((b"1", b"2", b"2"))),
         (60, b"20240102-03:04:05"), (40, bytes([ord_type]))]
    if rng.random() < 0.97:
        f.append((1, rng.choice((b"3", b"100", b"4294967295", b"7", b"0100", b"12345678901", b"4294967296", b"x"))))
    if rng.random() < 0.95:
        f.append((38, rng.choice(QUANTITIES)))
    priced = ord_type in b"24"
    if priced == (rng.random() < 0.95):
        f.append((44, rng.choice(PRICES)))
    stops = ord_type in b"34"
    if stops == (rng.random() < 0.95):
        f.append((99, rng.choice(PRICES)))
    if rng.random() < 0.6:
        f.append((59, rng.choice((b"0", b"1", b"3", b"4"))))
    if rng.random() < 0.2:
        f.append((18, rng.choice(EXEC_INST)))
    if rng.random() < 0.2:
        f.append((111, rng.choice((b"0.01", b"1", b"0.005", b"0", b"5000", b"0.02"))))
    if rng.random() < 0.2:
        f.append((7928, rng.choice((b"0", b"3", b"5", b"6", b"00", b"-1"))))
    if rng.random() < 0.1:
        f.append((58, b"free text"))
    rng.shuffle(f)
    return f


def _python(fields: dict[int, bytes], book: OrderBook) -> dict | None:
    try:
        return fo.new_order(fields, book, INSTRUMENTS, lambda a: a in ACCOUNTS, 1)
    except FixRefusal:
        return None


def test_compiled_checks_accept_what_new_order_accepts(tmp_path: Path) -> None:
    rng = random.Random(17)
    table = fn.instrument_table(INSTRUMENTS.values())
    rows = list(INSTRUMENTS.values())
    accounts = fn.account_array(ACCOUNTS)
    messages = np.zeros((1, fs.MESSAGE_WORDS), np.int64)
    fields = np.zeros((64, fs.FIELD_WORDS), np.int64)
    out = np.zeros((1, fn.ORDER_WORDS), np.int64)
    both = refused = left = 0
    with OrderBook(tmp_path / "b.orders") as book:
        for i in range(8000):
            body = _draw(rng, i)
            data = frame(header("D", i + 1) + body)
            buf = np.frombuffer(data, np.uint8)
            n, _ = fs.scan(buf, len(buf), 8192, np.frombuffer(b"CLIENT", np.uint8),
                           np.frombuffer(b"RINGEX", np.uint8), messages, fields)
            assert n == 1
            if not messages[0, fs.M_VALID]:
                continue  # the session rejects it before any mapping
            fn.orders_of(buf, messages, 1, fields, table.symbols, table.lengths, table.numbers, accounts, out)
            values = out[0].tolist()
            if book.in_use(dict(body)[11]):
                continue  # the book's to say (new_order_values asks it): a refusal either way
            kw = _python(dict(body), book)
            if not values[fn.O_OK]:
                if kw is None:
                    refused += 1
                else:  # accepted by Python only: numbers too long for int64 arithmetic, and only those
                    left += 1
                    assert any(len(v.lstrip(b"0").replace(b".", b"")) > 15 for t, v in body if t in (38, 44, 99, 111))
                continue
            assert kw is not None, body
            both += 1
            cl = data[values[fn.O_CL_START]:values[fn.O_CL_END]]
            assert cl == dict(body)[11]
            assert rows[values[fn.O_INSTRUMENT]].id == kw["instrument"]
            assert (values[fn.O_PRICE], values[fn.O_QTY], values[fn.O_DISPLAY], values[fn.O_STOP],
                    values[fn.O_ACCOUNT], values[fn.O_SIDE], values[fn.O_ORD_TYPE], values[fn.O_TIF],
                    values[fn.O_POST], values[fn.O_REDUCE], values[fn.O_STP]) == (
                kw["price"], kw["qty"], kw["displayQty"], kw["stopPrice"], kw["account"], int(kw["side"]),
                int(kw["ordType"]), int(kw["timeInForce"]), int(kw["postOnly"]), int(kw["reduceOnly"]),
                int(kw["stpMode"])), body
    assert both > 200 and refused > 2000 and left < both // 5, (both, refused, left)


def test_entering_checked_values_is_new_order(tmp_path: Path) -> None:
    """``new_order_values`` enters the order ``new_order`` would, the same record, and packs
    the same engine message (the codec's bytes); a ClOrdID in use is left to ``new_order`` (None, nothing entered)."""
    body = {11: b"o1", 55: b"BTC-USD", 54: b"2", 40: b"4", 38: b"0.02", 44: b"100.5", 99: b"101", 1: b"100",
            59: b"1", 18: b"6 E", 111: b"0.01", 7928: b"3", 60: b"20240102-03:04:05"}
    data = frame(header("D", 5) + list(body.items()))
    buf = np.frombuffer(data, np.uint8)
    messages, fields = np.zeros((1, fs.MESSAGE_WORDS), np.int64), np.zeros((64, fs.FIELD_WORDS), np.int64)
    fs.scan(buf, len(buf), 8192, np.zeros(0, np.uint8), np.zeros(0, np.uint8), messages, fields)
    table = fn.instrument_table(INSTRUMENTS.values())
    out = np.zeros((1, fn.ORDER_WORDS), np.int64)
    fn.orders_of(buf, messages, 1, fields, table.symbols, table.lengths, table.numbers, fn.account_array(ACCOUNTS),
                 out)
    values = out[0].tolist()
    assert values[fn.O_OK] == 1
    origin = fo.Origin(5, 1, 2)
    with OrderBook(tmp_path / "a.orders") as a, OrderBook(tmp_path / "b.orders") as b:
        kw_python = fo.new_order(body, a, INSTRUMENTS, lambda x: x in ACCOUNTS, 1, origin)
        payload = fo.new_order_values(b, b"o1", BTC, values, 1, origin)
        assert payload == fo.engine_message("NewOrder", kw_python) == m.NewOrder.encode(**kw_python)
        assert a.order(b"o1").json_text() == b.order(b"o1").json_text()
        assert fo.new_order_values(b, b"o1", BTC, values, 1, origin) is None  # in use now
        assert b.next_cl_ord_id == 2


def test_warm_up_compiles_what_the_gateway_calls() -> None:
    """The gateway's compiled calls, with the argument types it passes (bytes read as
    read-only arrays, a session's CompIDs, a connection not logged on yet), find the
    versions ``warm_up`` made: none compiles in a duty cycle. In a fresh interpreter, so
    that no other test's calls have made them already."""
    import subprocess
    import sys

    script = """
import numpy as np
from ringex.gateways import fix_new_order as fn, fix_scan as fs
from ringex.gateways.fix_codec import FixReader
from ringex.gateways.fix_gateway import _NO_COMP_IDS
fs.warm_up(); fn.warm_up()
made = (len(fs.scan.signatures), len(fn.orders_of.signatures))
reader = FixReader()
data = b"8=FIX.4.4\\x019=5\\x0135=0\\x0110=000\\x01"
for comp_ids in (_NO_COMP_IDS, (np.frombuffer(b"DEMO1", np.uint8), np.frombuffer(b"RINGEX", np.uint8))):
    got = reader.feed_scanned(data, *comp_ids)
    table = fn.instrument_table([])
    fn.orders_of(np.frombuffer(got.data, np.uint8), got.messages, got.count, got.fields, table.symbols,
                 table.lengths, table.numbers, fn.account_array([1]), np.zeros((8, fn.ORDER_WORDS), np.int64))
assert (len(fs.scan.signatures), len(fn.orders_of.signatures)) == made, (fs.scan.signatures, fn.orders_of.signatures)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
