"""Probe: how long the FIX order book's automatic compaction holds up its caller.

    python docs/probes/fix_book_compaction.py [LIVE ...]

For each LIVE count (100, 2,000, 20,000), a book in a temporary directory (under /tmp) with
that many live orders takes orders that end at once (an order and its cancel, flushed each
time, as the gateway's duty cycle writes them) until three automatic compactions have
passed (4 MiB threshold); prints the longest ``flush`` call and the share of flushes over
a millisecond. With the compaction's write and fsync on a thread, what remains in the
caller is making the new file's records (live orders: ~4 µs each) and the rename.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from ringex.gateways import fix_orders as fo
from ringex.gateways.fix_instrument import FixInstrument
from ringex.gateways.fix_order_book import OrderBook

INSTRUMENT = FixInstrument(id=1, symbol=b"BTC-USD", price_decimals=0, qty_decimals=0, tick_size=1, lot_size=1,
                           min_qty=1, max_qty=10**6)


def one_book(live: int) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        b = OrderBook(Path(d) / "x.orders", compact_bytes=4 << 20)
        for i in range(live):
            fo._enter(b, b"L%d" % i, INSTRUMENT, 1, 1, 2, 1, 1, 100, 0, 0, False, False, 0, 1, None)
        b.flush()
        b.settle()
        compactions, worst, slow, flushes, i = 0, 0.0, 0, 0, 0
        while compactions < 3:
            cl = b"C%d" % i
            i += 1
            fo._enter(b, cl, INSTRUMENT, 1, 1, 2, 1, 1, 100, 0, 0, False, False, 0, 1, None)
            o = b.order(cl)
            o.status, o.leaves_qty = b"4", 0
            b.save_state(o)
            was = b.compacting
            t = time.perf_counter()
            b.flush()
            took = time.perf_counter() - t
            flushes += 1
            worst = max(worst, took)
            slow += took > 1e-3
            compactions += was and not b.compacting
        b.close()
    return worst * 1e3, 100 * slow / flushes, flushes


def main() -> int:
    for live in [int(x) for x in sys.argv[1:]] or [100, 2_000, 20_000]:
        worst, slow, flushes = one_book(live)
        print(f"live {live:>6,}: longest flush {worst:7.2f} ms, {slow:.3f}% of {flushes:,} flushes over 1 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
