"""Probe: how long the FIX order book's automatic compaction holds up its caller.

    python docs/probes/fix_book_compaction.py [LIVE ...]

For each LIVE count (100, 2,000 and 20,000 by default), a book in a temporary directory
(under /tmp) with that many live orders takes orders that end at once (an order and its
cancel, flushed each time, as the gateway's duty cycle writes them) until five automatic
compactions have passed (4 MiB threshold). Prints, in ms, the median over the compactions
of the ``flush`` that began one, of the one that put its file in place (the same call when
the compaction is done in the caller), and the longest other flush. Runs on a tree without
``OrderBook.compacting`` too (a compaction then shows as the file getting smaller).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from ringex.gateways import fix_orders as fo
from ringex.gateways.fix_instrument import FixInstrument
from ringex.gateways.fix_order_book import OrderBook

INSTRUMENT = FixInstrument(id=1, symbol=b"BTC-USD", price_decimals=0, qty_decimals=0, tick_size=1, lot_size=1,
                           min_qty=1, max_qty=10**6)
COMPACTIONS = 5


def _order(b: OrderBook, cl: bytes, ends: bool) -> None:
    fo._enter(b, cl, INSTRUMENT, 1, 1, 2, 1, 1, 100, 0, 0, False, False, 0, 1, None)
    if ends:
        o = b.order(cl)
        o.status, o.leaves_qty = b"4", 0
        b.save_state(o)


def one_book(live: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        b = OrderBook(Path(d) / "x.orders", compact_bytes=4 << 20)
        for i in range(live):
            _order(b, b"L%d" % i, ends=False)
        b.flush()
        getattr(b, "settle", lambda: None)()
        began: list[float] = []
        placed: list[float] = []
        other = 0.0
        i = 0
        while len(placed) < COMPACTIONS:
            _order(b, b"C%d" % i, ends=True)
            i += 1
            was, size = getattr(b, "compacting", False), b._size
            t = time.perf_counter()
            b.flush()
            took = (time.perf_counter() - t) * 1e3
            now = getattr(b, "compacting", False)
            if b._size < size:  # the compacted file in place
                placed.append(took)
                if not was:
                    began.append(took)
            elif now and not was:
                began.append(took)
            else:
                other = max(other, took)
        b.close()
    return statistics.median(began), statistics.median(placed), other


def main() -> int:
    for live in [int(x) for x in sys.argv[1:]] or [100, 2_000, 20_000]:
        began, placed, other = one_book(live)
        print(f"live {live:>6,}: flush that began a compaction {began:7.2f} ms, that put it in place {placed:7.2f} ms"
              f" (median of {COMPACTIONS}); longest other flush {other:6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
