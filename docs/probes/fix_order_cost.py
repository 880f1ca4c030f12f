"""Probe: what one FIX order costs the FIX gateway's own code, without sockets or rings.

    python docs/probes/fix_order_cost.py [ORDERS]

One ``FixGatewaySession`` (its session layer, ClOrdID book and store in a temporary
directory) is logged on, then given ORDERS (20,000) NewOrderSingles as bytes, 64 KiB at a
time, as a socket would deliver them; each is framed and checked (``fix_scan``, and
``fix_new_order`` its order, as the gateway's ``_receive`` does), taken by the session's fast
lane, entered in the book as the engine's NewOrder and SBE-encoded, and counted applied;
then the engine's OrderAccepted of each (made here) is reported back as an
ExecutionReport, 64 events a batch, as the gateway delivers them. Prints the microseconds per order of each step and in all. The garbage
collector is off, as in the exchange's agents. What the exchange adds (duty cycles, the
rings, system calls) is not here: ``ringex bench fix`` measures that.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ringex.engine.wire import messages as m
from ringex.gateways import fix_orders as fo
from ringex.gateways.fix_codec import FixReader, encode, utc_timestamp
from ringex.gateways.fix_gateway import FixGatewaySession
from ringex.gateways.fix_new_order import O_CL_END, O_CL_START, O_OK, ORDER_WORDS, instrument_table, orders_of
from ringex.gateways.fix_new_order import warm_up as warm_up_new_order
from ringex.gateways.fix_scan import M_SENT_NS, M_SEQ, M_VALID
from ringex.gateways.fix_scan import warm_up as warm_up_scan
from ringex.gateways.fix_instrument import FixInstrument
from ringex.gateways.gateway_config import GatewayConfig, SessionConfig


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    gc.disable()
    inst = FixInstrument(id=1, symbol=b"BTC-USD", price_decimals=0, qty_decimals=0, tick_size=1, lot_size=1,
                         min_qty=1, max_qty=10**6)
    instruments = {inst.symbol: inst}
    cfg = SessionConfig(id=1, credentials="pw", accounts=[1], target_comp_id="DEMO1", max_msgs_per_s=0)
    gateway = GatewayConfig(name="fix", protocol="fix", session=[cfg])
    now, wall = time.monotonic_ns(), time.time_ns()
    ts = utc_timestamp(wall)
    with tempfile.TemporaryDirectory() as directory:
        s = FixGatewaySession(cfg, gateway, Path(directory), instruments, now, inbound_mark=lambda: (1, 0))
        reader = FixReader()
        s.fix.connected(now)
        logon = encode(b"A", b"DEMO1", b"RINGEX", 1, ts, [(98, 0), (108, 30), (141, b"Y"), (554, b"pw")])
        s.fix.on_message(reader.feed(logon)[0], now, wall)
        assert s.fix.active, "the probe's Logon was refused"
        stream = b"".join(encode(b"D", b"DEMO1", b"RINGEX", i + 2, ts, [
            (11, b"C%d" % i), (1, b"1"), (55, b"BTC-USD"), (54, b"1"), (60, ts), (38, b"1"), (40, b"2"),
            (44, b"49990"), (59, b"1")]) for i in range(n))
        events = np.zeros((n, m.SLOT_SIZE), np.uint8)
        took = dict.fromkeys(("framing", "session", "order entry", "applied", "reports"), 0.0)
        clock = time.perf_counter
        warm_up_scan()  # as the gateway does at start
        warm_up_new_order()
        table = instrument_table([inst])
        t = clock()
        scans = []
        for at in range(0, len(stream), 1 << 16):
            got = reader.feed_scanned(stream[at:at + (1 << 16)], *s.comp_ids)
            orders = np.zeros((got.count, ORDER_WORDS), np.int64)  # the NewOrderSingles checked, compiled
            orders_of(np.frombuffer(got.data, np.uint8), got.messages, got.count, got.fields, table.symbols,
                      table.lengths, table.numbers, s.account_array, orders)
            scans.append((got.data, got.messages[:got.count].copy(), orders.tolist()))
        took["framing"] = clock() - t
        i = 0
        for data, rows, orders in scans:  # as FixGatewayAgent._receive takes each scanned message
            for (seq, sent, valid), values in zip(rows[:, [M_SEQ, M_SENT_NS, M_VALID]].tolist(), orders):
                t1 = clock()
                assert valid and s.fix.take_in_order(seq, sent, now, wall) and values[O_OK]
                t1b = clock()
                took["session"] += t1b - t1
                t1 = t1b
                num = s.book.next_cl_ord_id  # the engine clOrdId the order gets
                fo.new_order_values(s.book, data[values[O_CL_START]:values[O_CL_END]], inst, values, s.id,
                                    fo.Origin(seq, 1, i))  # (its engine message packed too)
                t2 = clock()
                s.applied(seq)
                t3 = clock()
                took["order entry"] += t2 - t1
                took["applied"] += t3 - t2
                accepted = m.OrderAccepted.encode(seq=i + 1, timestampNs=wall, orderId=1000 + i,
                                                  clOrdId=num, sessionId=1, account=1, instrument=1)
                events[i, :len(accepted)] = np.frombuffer(accepted, np.uint8)
                i += 1
        assert i == n
        rows = np.arange(n)
        t = clock()
        for at in range(0, n, 64):
            batch = rows[at:at + 64]
            s.deliver_events(events, batch, np.zeros(len(batch), np.int64), batch, 1, 77)
        took["reports"] = clock() - t
        s.close()
    per = {k: v / n * 1e6 for k, v in took.items()}
    print(f"{n:,} NewOrderSingles, each acknowledged by an ExecutionReport, µs per order:")
    for k, v in per.items():
        print(f"  {k:<14} {v:7.2f}")
    print(f"  {'in all':<14} {sum(per.values()):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
