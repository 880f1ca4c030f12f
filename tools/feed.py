"""``ringex feed``: follow the market-data feed, show the book live or record the ITCH stream.

Joins a configured ``[[feed]]`` (the embedded default's unless ``--config``) by snapshot, then
follows it (``ringex.feeds.subscriber``): gaps are filled by retransmission. On a terminal it
redraws the top of each book and the latest trades; otherwise it prints one line per trade.
``--write FILE`` records every message applied (the snapshot's first) in the standard ITCH
file framing, a 2-byte big-endian length before each message, which other ITCH tools read.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path
from typing import BinaryIO

from ringex.feeds.feed_book import BUY, SELL
from ringex.feeds.feed_config import FeedConfig
from ringex.feeds.subscriber import FeedSubscriber, SubscriberError
from ringex.gateways.gateway_config import parse_listen

__all__ = ["add_args", "run"]

DEPTH = 5


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="the exchange's TOML (default: the embedded default)")
    p.add_argument("--feed", default=None, help="which [[feed]] (default: the first)")
    p.add_argument("--listen", default=None,
                   help="host:port to receive on (default: the feed's destination)")
    p.add_argument("--no-snapshot", action="store_true",
                   help="join from sequence number 1 by retransmission, without the snapshot service")
    p.add_argument("--write", type=Path, default=None, metavar="FILE",
                   help="record every message in ITCH file framing (2-byte big-endian length, message)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--count", type=int, default=None, help="stop after this many messages")
    p.add_argument("--quiet", action="store_true", help="show nothing (with --write)")


def _feed_config(args: argparse.Namespace) -> tuple[FeedConfig, int]:
    """The ``[[feed]]`` to follow, and the most orders its book can hold (``max_orders``)."""
    from ringex.tools.config import DEFAULT_TOML, load_config, parse_config

    cfg = load_config(args.config) if args.config else parse_config(DEFAULT_TOML)
    if not cfg.feed:
        raise SystemExit("ringex feed: the configuration has no [[feed]]")
    if args.feed is None:
        return cfg.feed[0], cfg.engine.max_orders
    for f in cfg.feed:
        if f.name == args.feed:
            return f, cfg.engine.max_orders
    raise SystemExit(f"ringex feed: no [[feed]] named {args.feed!r} (have: {', '.join(cfg.feed_names())})")


def _price(p: int) -> str:
    return f"{p // 10000}.{p % 10000:04d}"


class Screen:
    """What ``ringex feed`` shows: top of book per stock and the latest trades."""

    def __init__(self, sub: FeedSubscriber, redraw: bool) -> None:
        self.sub = sub
        self.redraw = redraw
        self.trades: deque[str] = deque(maxlen=10)
        self._drawn = 0.0

    def trade(self, locate: int, shares: int, price: int, match: int) -> None:
        line = f"trade {self.sub.stocks.get(locate, locate)} {shares} @ {_price(price)} (match {match})"
        if self.redraw:
            self.trades.appendleft(line)
        else:
            print(line, flush=True)

    def draw(self, force: bool = False) -> None:
        if not self.redraw:
            return
        now = time.monotonic()
        if not force and now - self._drawn < 0.2:
            return
        self._drawn = now
        sub = self.sub
        out = ["\x1b[H\x1b[2J", f"session {sub.session.decode().strip() if sub.session else '?'}  "
               f"next {sub.next_seq}  messages {sub.messages}  executions {sub.executions}  "
               f"orders on the book {len(sub.book)}\n"]
        for locate, stock in sorted(sub.stocks.items()):
            state = sub.book.states.get(locate, b"?").decode()
            out.append(f"\n{stock}  (trading state {state})\n")
            out.append(f"{'bid qty':>12} {'bid':>14} | {'ask':<14} {'ask qty':<12}\n")
            bids = sub.book.depth(locate, BUY, DEPTH)
            asks = sub.book.depth(locate, SELL, DEPTH)
            for i in range(max(len(bids), len(asks), 1)):
                b = bids[i] if i < len(bids) else None
                a = asks[i] if i < len(asks) else None
                out.append(f"{b.shares if b else '':>12} {_price(b.price) if b else '':>14} | "
                           f"{_price(a.price) if a else '':<14} {a.shares if a else '':<12}\n")
        if self.trades:
            out.append("\nlatest trades\n" + "\n".join(self.trades) + "\n")
        sys.stdout.write("".join(out))
        sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    f, max_orders = _feed_config(args)
    listen = parse_listen(args.listen) if args.listen else f.destination_address()
    out: BinaryIO | None = open(args.write, "wb") if args.write else None

    def record(seq: int, msg: bytes) -> None:
        assert out is not None
        out.write(len(msg).to_bytes(2, "big") + msg)

    snapshot = None if args.no_snapshot else f.snapshot_address()
    redraw = sys.stdout.isatty() and not args.quiet
    sub = FeedSubscriber(listen, f.retransmit_address(), snapshot, f.username, f.password,
                         on_message=record if out else None, capacity=max_orders)
    screen = Screen(sub, redraw)
    if not args.quiet:
        sub.on_trade = screen.trade
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        with sub:
            try:
                nxt = sub.join()
            except (OSError, SubscriberError) as exc:
                print(f"ringex feed: cannot join the feed {f.name}: {exc}", file=sys.stderr)
                return 1
            if not redraw and not args.quiet:
                print(f"joined feed {f.name} at sequence number {nxt}; {len(sub.book)} orders on the book",
                      flush=True)
            while not sub.ended:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if args.count is not None and sub.messages >= args.count:
                    break
                try:
                    sub.poll(0.1)
                except SubscriberError as exc:
                    print(f"ringex feed: {exc}", file=sys.stderr)
                    return 1
                screen.draw()
            screen.draw(force=True)
            if sub.ended and not args.quiet:
                print("the feed's session ended", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if out is not None:
            out.close()
    return 0
