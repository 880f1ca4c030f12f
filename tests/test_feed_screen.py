"""``ringex feed``'s screen (tools/feed.py): the top of each book and the latest trades, drawn
from a subscriber's book and executions, prices in Price(4) decimals."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

from ringex.feeds import itch
from ringex.feeds.subscriber import FeedSubscriber
from ringex.tools.feed import Screen


def test_the_screen_shows_each_books_top_and_the_trades() -> None:
    with FeedSubscriber(("127.0.0.1", 0), ("127.0.0.1", 1)) as sub:
        screen = Screen(sub, redraw=True)
        sub.on_trade = screen.trade
        msgs = [itch.stock_directory(1, 0, 0, "BTC-USD", b" ", b" ", 1, b"N", b" ", "", b"P", b" ", b" ", b" ", b" ", 0,
                                     b"N"),
                itch.add_order(1, 0, 0, 1, b"B", 3, "BTC-USD", 499_900_000),
                itch.add_order(1, 0, 0, 2, b"B", 2, "BTC-USD", 499_900_000),
                itch.add_order(1, 0, 0, 3, b"S", 4, "BTC-USD", 500_100_000),
                itch.order_executed(1, 0, 0, 3, 1, 77)]
        for i, m in enumerate(msgs, 1):
            sub._apply(i, m)
        out = io.StringIO()
        with redirect_stdout(out):
            screen.draw(force=True)
        text = out.getvalue()
    assert "BTC-USD" in text
    assert "49990.0000" in text and "50010.0000" in text
    bid_line = next(line for line in text.splitlines() if "49990.0000" in line)
    assert bid_line.split()[0] == "5"  # both bids at the level
    assert "trade BTC-USD 1 @ 50010.0000 (match 77)" in text
