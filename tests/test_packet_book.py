"""The subscriber's compiled book (feeds/packet_book.py) against ``FeedBook``, the rules'
statement: the same messages give the same book, order for order, level for level; what the
book refuses is refused with its status and changes nothing; other messages stop the kernel
where Python takes over."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ringex.feeds import itch
from ringex.feeds import moldudp64 as mold
from ringex.feeds.feed_book import BookError, FeedBook
from ringex.feeds.packet_book import BAD_SIDE, OK, REUSED, STOP, TOO_MANY_SHARES, UNKNOWN, PacketBook, apply_packet

TS = 1_000


def apply(book: PacketBook, msgs: list[bytes], seq: int = 1, expected: int | None = None):
    pkt = np.frombuffer(mold.encode_packet(b"S", seq, msgs), np.uint8)
    fills = np.zeros((64, 4), np.int64)
    status, nxt, at, nfill, _ = apply_packet(pkt, len(pkt), 20, seq if expected is None else expected, *book.args(),
                                             fills, True, np.zeros(0, np.int64), False, 0, 0)
    return status, nxt, at, fills[:nfill].tolist()


def random_flow(r: random.Random, n: int) -> list[bytes]:
    """Valid messages only: a model keeps the live orders."""
    live: dict[int, list[int]] = {}  # ref -> [locate, side, shares, price]
    next_ref, out = 1, []
    for _ in range(n):
        x = r.random()
        if x < 0.4 or not live:
            ref, next_ref = next_ref, next_ref + 1
            o = [r.choice((1, 2)), r.choice((66, 83)), r.randint(1, 50), r.randint(99, 103) * 100]
            live[ref] = o
            out.append(itch.add_order(o[0], 0, TS, ref, bytes((o[1],)), o[2], "S", o[3]))
            continue
        ref = r.choice(sorted(live))
        o = live[ref]
        if x < 0.6:
            q = r.randint(1, o[2])
            out.append(itch.order_executed(o[0], 0, TS, ref, q, r.randint(1, 10**9)))
        elif x < 0.75:
            q = r.randint(1, o[2])
            out.append(itch.order_cancel(o[0], 0, TS, ref, q))
        elif x < 0.85:
            out.append(itch.order_delete(o[0], 0, TS, ref))
            del live[ref]
            continue
        else:
            new, next_ref = next_ref, next_ref + 1
            o[2], o[3] = r.randint(1, 50), r.randint(99, 103) * 100
            out.append(itch.order_replace(o[0], 0, TS, ref, new, o[2], o[3]))
            live[new] = live.pop(ref)
            continue
        o[2] -= q
        if o[2] == 0:
            del live[ref]
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_same_messages_make_the_same_book(seed: int) -> None:
    r = random.Random(seed)
    msgs = random_flow(r, 3000)
    model, book = FeedBook(), PacketBook(1 << 12)
    for msg in msgs:
        model.apply(itch.decode(msg))
    seq = 1
    while seq <= len(msgs):  # packets of 1..40 messages
        k = r.randint(1, 40)
        status, nxt, _, _ = apply(book, msgs[seq - 1:seq - 1 + k], seq)
        assert status == OK and nxt == min(seq + k, len(msgs) + 1)
        seq = nxt
    mine = book.to_feed_book()
    assert mine.canonical() == model.canonical() and len(book) == len(model)
    for locate in (1, 2):
        for side in (66, 83):
            assert mine.depth(locate, side, 100) == model.depth(locate, side, 100)


def test_messages_below_the_expected_number_are_skipped() -> None:
    book = PacketBook(64)
    msgs = [itch.add_order(1, 0, TS, ref, b"B", 5, "S", 100) for ref in (1, 2, 3)]
    status, nxt, _, _ = apply(book, msgs, seq=10, expected=12)  # 10 and 11 were applied before
    assert (status, nxt) == (OK, 13) and len(book) == 1 and book.to_feed_book().orders.keys() == {3}


def test_executions_come_out_at_the_resting_price() -> None:
    book = PacketBook(64)
    apply(book, [itch.add_order(2, 0, TS, 7, b"S", 5, "S", 12_345)])
    status, _, _, fills = apply(book, [itch.order_executed(2, 0, TS, 7, 2, 99)])
    assert status == OK and fills == [[2, 2, 12_345, 99]] and book.executions == 1


@pytest.mark.parametrize("msg, status", [
    (itch.order_executed(1, 0, TS, 99, 1, 1), UNKNOWN),
    (itch.order_delete(1, 0, TS, 99), UNKNOWN),
    (itch.order_executed(1, 0, TS, 1, 6, 1), TOO_MANY_SHARES),
    (itch.order_cancel(1, 0, TS, 1, 6), TOO_MANY_SHARES),
    (itch.add_order(1, 0, TS, 1, b"B", 1, "S", 100), REUSED),
    (itch.order_replace(1, 0, TS, 1, 2, 1, 100), REUSED),
    (itch.add_order(1, 0, TS, 3, b"B", 1, "S", 100)[:19] + b"Q" + itch.add_order(1, 0, TS, 3, b"B", 1, "S", 100)[20:],
     BAD_SIDE),
])
def test_what_the_book_refuses_changes_nothing(msg: bytes, status: int) -> None:
    book = PacketBook(64)
    setup = [itch.add_order(1, 0, TS, 1, b"B", 5, "S", 100), itch.add_order(1, 0, TS, 2, b"S", 5, "S", 101)]
    apply(book, setup)
    before = book.to_feed_book().canonical()
    got, nxt, at, _ = apply(book, [msg], seq=3)
    assert (got, nxt, at) == (status, 3, 20)
    assert book.to_feed_book().canonical() == before
    with pytest.raises((BookError, itch.ItchError)):  # the model refuses it too (a bad side: at decoding)
        model = FeedBook()
        for x in setup:
            model.apply(itch.decode(x))
        model.apply(itch.decode(msg))


def test_other_messages_stop_the_kernel_where_python_takes_over() -> None:
    book = PacketBook(64)
    msgs = [itch.add_order(1, 0, TS, 1, b"B", 5, "S", 100),
            itch.system_event(0, 0, TS, b"O"),
            itch.add_order(1, 0, TS, 2, b"B", 5, "S", 100)]
    status, nxt, at, _ = apply(book, msgs)
    assert (status, nxt) == (STOP, 2) and at == 20 + 2 + 36  # the System Event's block
    pkt = np.frombuffer(mold.encode_packet(b"S", 1, msgs), np.uint8)
    status, nxt, _, _, _ = apply_packet(pkt, len(pkt), at + 2 + 12, 3, *book.args(), np.zeros((1, 4), np.int64),
                                        False, np.zeros(0, np.int64), False, 0, 0)
    assert (status, nxt, len(book)) == (OK, 4, 2)


def _with_other_messages(r: random.Random, msgs: list[bytes]) -> list[bytes]:
    """``msgs`` with System Events and Stock Trading Actions among them, and some Add Orders
    and Order Executeds written as their MPID and with-price forms (the same effect on the
    book, read by Python rather than the kernel)."""
    out = []
    for msg in msgs:
        x = r.random()
        if x < 0.01:
            out.append(itch.system_event(0, 0, TS, b"Q"))
        elif x < 0.02:
            out.append(itch.stock_trading_action(r.choice((1, 2)), 0, TS, "S", r.choice((b"H", b"T")), "X"))
        if msg[:1] == b"A" and r.random() < 0.01:
            a = itch.decode(msg)
            msg = itch.add_order_mpid(a.stock_locate, 0, TS, a.order_reference_number, a.buy_sell_indicator,
                                      a.shares, "S", a.price, "RGX")
        elif msg[:1] == b"E" and r.random() < 0.05:
            e = itch.decode(msg)
            msg = itch.order_executed_with_price(e.stock_locate, 0, TS, e.order_reference_number, e.executed_shares,
                                                 e.match_number, b"Y", 10_000)
        out.append(msg)
    return out


@pytest.mark.parametrize("seed", [4, 5])
def test_a_replay_leaves_the_book_one_by_one_would(seed: int) -> None:
    """``replay`` (a restarted publisher rebuilding its book from its store) against
    ``FeedBook.apply`` of each message: the same book, order for order and level for level,
    and the same trading states, from a book that already holds orders, with more live orders
    than the arrays first take (they grow) and messages the kernel leaves to Python."""
    from ringex.feeds.packet_book import replay

    r = random.Random(seed)
    msgs = _with_other_messages(r, [itch.add_order(1, 0, TS, 10**6 + i, b"B", 5, "S", 9_000 - i) for i in range(3000)]
                                + random_flow(r, 20_000))
    base = FeedBook()
    for msg in msgs[:500]:
        base.apply(itch.decode(msg))
    before = base.canonical()
    model = FeedBook()
    for msg in msgs:
        model.apply(itch.decode(msg))
    mine = replay(base, msgs[500:])
    assert base.canonical() == before  # the book given is not changed
    assert mine.canonical() == model.canonical() and len(mine) > 1024
    assert mine.states == model.states and model.states
    for locate in (1, 2):
        for side in (66, 83):
            assert mine.depth(locate, side, 1000) == model.depth(locate, side, 1000)
    with pytest.raises(BookError):
        replay(model, [itch.order_delete(1, 0, TS, 999_999_999)])
