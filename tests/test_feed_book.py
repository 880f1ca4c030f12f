"""FeedBook: the order-level book an ITCH 5.0 feed describes (ringex.feeds.feed_book).

The rules under test are the module docstring's: an Add Order goes to the back of its level;
executions and partial cancels keep an order's place, and one left with no shares is off the
book; Order Delete removes it; Order Replace removes the original and adds the new reference
at the back of its new level, on the original's side and stock; an unknown reference, taking
more shares than an order shows, or reusing a live reference is a BookError.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringex.feeds import itch
from ringex.feeds.feed_book import BookError, FeedBook, Level

B, S = ord("B"), ord("S")


def refs(book: FeedBook, locate: int | None = None) -> list[int]:
    return [ref for ref, _ in book.in_priority(locate)]


def queue(book: FeedBook, locate: int, side: int, price: int) -> list[int]:
    return [ref for ref, o in book.in_priority(locate) if o.side == side and o.price == price]


# -- priority ----------------------------------------------------------------------------------

def test_adds_queue_in_arrival_order_per_level():
    book = FeedBook()
    book.add(1, 7, B, 100, 10_000)
    book.add(2, 7, B, 200, 10_000)
    book.add(3, 7, S, 50, 10_100)
    book.add(4, 7, B, 300, 10_000)
    book.add(5, 8, B, 10, 10_000)
    assert refs(book) == [1, 2, 3, 4, 5]
    assert refs(book, 7) == [1, 2, 3, 4]
    assert refs(book, 8) == [5]
    assert queue(book, 7, B, 10_000) == [1, 2, 4]
    o = dict(book.in_priority())[3]
    assert (o.locate, o.side, o.shares, o.price) == (7, S, 50, 10_100)
    assert len(book) == 5


def test_replace_moves_the_order_to_the_back_of_its_new_level():
    book = FeedBook()
    for ref in (1, 2, 3):
        book.add(ref, 1, B, 100, 10_000)
    # Same price, new reference: to the back.
    new = book.replace(1, 11, 100, 10_000)
    assert (new.locate, new.side, new.shares, new.price) == (1, B, 100, 10_000)
    assert queue(book, 1, B, 10_000) == [2, 3, 11]
    assert 1 not in book.orders
    # Another price: the new level's back, on the original's side and stock.
    book.add(4, 1, B, 5, 9_900)
    book.replace(2, 12, 70, 9_900)
    assert queue(book, 1, B, 9_900) == [4, 12]
    assert queue(book, 1, B, 10_000) == [3, 11]
    assert book.orders[12].side == B and book.orders[12].locate == 1 and book.orders[12].shares == 70


def test_replace_keeps_side_and_stock_of_the_original():
    book = FeedBook()
    book.add(1, 42, S, 100, 20_000)
    book.replace(1, 2, 30, 19_000)
    o = book.orders[2]
    assert (o.locate, o.side, o.shares, o.price) == (42, S, 30, 19_000)
    assert book.best(42, S) == Level(19_000, 30, 1)
    assert book.best(42, B) is None


def test_execution_and_partial_cancel_keep_the_place():
    book = FeedBook()
    for ref in (1, 2, 3):
        book.add(ref, 1, S, 100, 10_000)
    before = book.execute(1, 30)
    assert before.shares == 70  # the order object, as left by the execution
    book.cancel(2, 10)
    assert queue(book, 1, S, 10_000) == [1, 2, 3]
    assert [o.shares for _, o in book.in_priority()] == [70, 90, 100]
    assert book.best(1, S) == Level(10_000, 260, 3)


def test_execute_or_cancel_to_zero_removes_the_order():
    book = FeedBook()
    book.add(1, 1, B, 100, 10_000)
    book.add(2, 1, B, 50, 10_000)
    book.execute(1, 60)
    book.execute(1, 40)
    assert 1 not in book.orders
    assert book.depth(1, B) == [Level(10_000, 50, 1)]
    book.cancel(2, 50)
    assert 2 not in book.orders
    assert len(book) == 0
    assert book.depth(1, B) == []
    assert book.best(1, B) is None
    # The reference is free again once the order is gone.
    book.add(1, 1, B, 5, 10_000)
    assert book.depth(1, B) == [Level(10_000, 5, 1)]


# -- levels ------------------------------------------------------------------------------------

def test_depth_aggregates_shares_and_order_counts_best_first():
    book = FeedBook()
    book.add(1, 1, B, 100, 10_000)
    book.add(2, 1, B, 200, 10_000)
    book.add(3, 1, B, 300, 10_100)
    book.add(4, 1, B, 400, 9_900)
    book.add(5, 1, S, 10, 10_300)
    book.add(6, 1, S, 20, 10_200)
    book.add(7, 1, S, 30, 10_200)
    book.add(8, 2, B, 999, 50_000)  # another stock: not mixed in
    assert book.depth(1, B) == [Level(10_100, 300, 1), Level(10_000, 300, 2), Level(9_900, 400, 1)]
    assert book.depth(1, S) == [Level(10_200, 50, 2), Level(10_300, 10, 1)]
    assert book.depth(1, B, levels=2) == [Level(10_100, 300, 1), Level(10_000, 300, 2)]
    assert book.depth(1, S, levels=1) == [Level(10_200, 50, 2)]
    assert book.best(1, B) == Level(10_100, 300, 1)
    assert book.best(1, S) == Level(10_200, 50, 2)
    assert book.best(2, B) == Level(50_000, 999, 1)
    assert book.best(2, S) is None
    assert book.depth(3, B) == []
    assert book.best(3, S) is None


def test_level_goes_when_its_last_order_does():
    book = FeedBook()
    book.add(1, 1, B, 100, 10_100)
    book.add(2, 1, B, 100, 10_000)
    book.add(3, 1, B, 100, 10_000)
    book.delete(1)
    assert book.best(1, B) == Level(10_000, 200, 2)
    book.delete(2)
    assert book.depth(1, B) == [Level(10_000, 100, 1)]
    book.replace(3, 4, 100, 9_000)
    assert book.depth(1, B) == [Level(9_000, 100, 1)]
    book.execute(4, 100)
    assert book.depth(1, B) == []
    assert book.best(1, B) is None


def test_delete_returns_the_order_and_updates_the_level():
    book = FeedBook()
    book.add(1, 3, S, 77, 12_345)
    book.add(2, 3, S, 23, 12_345)
    o = book.delete(1)
    assert (o.locate, o.side, o.shares, o.price) == (3, S, 77, 12_345)
    assert book.depth(3, S) == [Level(12_345, 23, 1)]


def test_clear_empties_orders_levels_and_states():
    book = FeedBook()
    book.add(1, 1, B, 1, 1)
    book.states[1] = b"T"
    book.clear()
    assert len(book) == 0 and book.states == {} and book.depth(1, B) == [] and book.canonical() == []


# -- errors ------------------------------------------------------------------------------------

def one_order_book() -> FeedBook:
    book = FeedBook()
    book.add(1, 1, B, 100, 10_000)
    book.add(2, 1, S, 50, 10_100)
    return book


@pytest.mark.parametrize("op", [
    lambda b: b.execute(99, 1),
    lambda b: b.cancel(99, 1),
    lambda b: b.delete(99),
    lambda b: b.replace(99, 100, 10, 10_000),
], ids=["execute", "cancel", "delete", "replace"])
def test_unknown_reference_is_a_book_error(op):
    book = one_order_book()
    before = book.canonical()
    with pytest.raises(BookError):
        op(book)
    assert book.canonical() == before
    assert book.depth(1, B) == [Level(10_000, 100, 1)]


@pytest.mark.parametrize("op", [
    lambda b: b.execute(1, 101),
    lambda b: b.cancel(1, 101),
    lambda b: b.execute(1, 0),
    lambda b: b.cancel(1, 0),
    lambda b: b.execute(1, -5),
    lambda b: b.cancel(1, -5),
], ids=["over-execute", "over-cancel", "execute-0", "cancel-0", "execute-neg", "cancel-neg"])
def test_bad_share_counts_are_book_errors_and_change_nothing(op):
    book = one_order_book()
    before = book.canonical()
    with pytest.raises(BookError):
        op(book)
    assert book.canonical() == before
    assert book.depth(1, B) == [Level(10_000, 100, 1)]


@pytest.mark.parametrize("shares", [0, -1])
def test_add_with_no_shares_is_a_book_error(shares):
    book = one_order_book()
    before = book.canonical()
    with pytest.raises(BookError):
        book.add(3, 1, B, shares, 10_000)
    assert book.canonical() == before and 3 not in book.orders
    assert book.depth(1, B) == [Level(10_000, 100, 1)]


@pytest.mark.parametrize("shares", [0, -1])
def test_replace_with_no_shares_is_a_book_error(shares):
    book = one_order_book()
    with pytest.raises(BookError):
        book.replace(1, 3, shares, 10_000)
    assert 3 not in book.orders


def test_add_reusing_a_live_reference_is_a_book_error():
    book = one_order_book()
    before = book.canonical()
    with pytest.raises(BookError):
        book.add(1, 1, B, 5, 9_000)
    with pytest.raises(BookError):
        book.add(2, 2, S, 5, 9_000)  # whatever stock or side
    assert book.canonical() == before
    assert book.depth(1, B) == [Level(10_000, 100, 1)]


def test_replace_reusing_a_live_reference_is_a_book_error():
    book = one_order_book()
    before = book.canonical()
    with pytest.raises(BookError):
        book.replace(1, 2, 10, 10_000)
    assert book.canonical() == before
    assert book.depth(1, B) == [Level(10_000, 100, 1)]
    assert book.depth(1, S) == [Level(10_100, 50, 1)]


@pytest.mark.parametrize("side", [ord("X"), 0, b"B", "B", None])
def test_bad_side_is_a_book_error(side):
    book = one_order_book()
    before = book.canonical()
    with pytest.raises(BookError):
        book.add(3, 1, side, 10, 10_000)
    assert book.canonical() == before and 3 not in book.orders


def test_book_error_is_a_value_error():
    assert issubclass(BookError, ValueError)


# -- apply(decoded ITCH) -------------------------------------------------------------------------

def test_apply_each_message_kind_matches_the_primitives():
    msgs = [
        itch.stock_directory(1, 0, 1, "AAA", b"Q", b"N", 100, b"N", b"C", "Z", b"P", b"N", b"N",
                             b"1", b"N", 0, b"N"),
        itch.system_event(0, 0, 2, b"O"),
        itch.stock_trading_action(1, 0, 3, "AAA", b"T", ""),
        itch.add_order(1, 0, 4, 1, b"B", 100, "AAA", 10_000),
        itch.add_order_mpid(1, 0, 5, 2, b"S", 200, "AAA", 10_100, "MPID"),
        itch.add_order(1, 0, 6, 3, b"B", 300, "AAA", 10_000),
        itch.order_executed(1, 0, 7, 1, 40, 1),
        itch.order_executed_with_price(1, 0, 8, 2, 50, 2, b"Y", 10_050),
        itch.order_cancel(1, 0, 9, 3, 100),
        itch.order_replace(1, 0, 10, 1, 4, 70, 9_900),
        itch.trade(1, 0, 11, 0, b"B", 10, "AAA", 10_000, 3),
        itch.order_delete(1, 0, 12, 2),
        itch.add_order(2, 0, 13, 5, b"S", 10, "BBB", 5_000),
        itch.stock_trading_action(2, 0, 14, "BBB", b"H", "LUDP"),
    ]
    applied = FeedBook()
    for m in msgs:
        applied.apply(itch.decode(m))

    prim = FeedBook()
    prim.states[1] = b"T"
    prim.add(1, 1, B, 100, 10_000)
    prim.add(2, 1, S, 200, 10_100)
    prim.add(3, 1, B, 300, 10_000)
    prim.execute(1, 40)
    prim.execute(2, 50)
    prim.cancel(3, 100)
    prim.replace(1, 4, 70, 9_900)
    prim.delete(2)
    prim.add(5, 2, S, 10, 5_000)
    prim.states[2] = b"H"

    assert applied.canonical() == prim.canonical()
    assert refs(applied) == refs(prim) == [3, 4, 5]
    assert applied.states == prim.states == {1: b"T", 2: b"H"}
    for loc in (1, 2):
        for side in (B, S):
            assert applied.depth(loc, side) == prim.depth(loc, side)
    assert applied.depth(1, B) == [Level(10_000, 200, 1), Level(9_900, 70, 1)]


@pytest.mark.parametrize("msg", [
    itch.order_executed(1, 0, 1, 9, 1, 1),
    itch.order_executed_with_price(1, 0, 1, 9, 1, 1, b"N", 1),
    itch.order_cancel(1, 0, 1, 9, 1),
    itch.order_delete(1, 0, 1, 9),
    itch.order_replace(1, 0, 1, 9, 10, 1, 1),
], ids=["E", "C", "X", "D", "U"])
def test_apply_of_an_unknown_reference_is_a_book_error(msg):
    book = FeedBook()
    with pytest.raises(BookError):
        book.apply(itch.decode(msg))


def test_apply_add_reusing_a_live_reference_is_a_book_error():
    book = FeedBook()
    book.apply(itch.decode(itch.add_order(1, 0, 1, 1, b"B", 1, "AAA", 1)))
    with pytest.raises(BookError):
        book.apply(itch.decode(itch.add_order_mpid(1, 0, 2, 1, b"S", 1, "AAA", 1, "X")))
    with pytest.raises(BookError):
        book.apply(itch.decode(itch.order_executed(1, 0, 3, 1, 2, 1)))


# -- canonical -----------------------------------------------------------------------------------

def test_canonical_ignores_interleaving_across_levels():
    a, b = FeedBook(), FeedBook()
    a.add(1, 1, B, 10, 100)
    a.add(2, 1, S, 20, 200)
    a.add(3, 1, B, 30, 100)
    a.add(4, 2, B, 40, 100)
    b.add(4, 2, B, 40, 100)
    b.add(2, 1, S, 20, 200)
    b.add(1, 1, B, 10, 100)
    b.add(3, 1, B, 30, 100)
    assert a.canonical() == b.canonical()
    assert a.canonical() == [(1, B, 100, 1, 10), (1, B, 100, 3, 30), (1, S, 200, 2, 20), (2, B, 100, 4, 40)]


def test_canonical_differs_when_a_queue_differs():
    a, b = FeedBook(), FeedBook()
    a.add(1, 1, B, 10, 100)
    a.add(2, 1, B, 10, 100)
    b.add(2, 1, B, 10, 100)
    b.add(1, 1, B, 10, 100)
    assert a.depth(1, B) == b.depth(1, B)
    assert a.canonical() != b.canonical()


@pytest.mark.parametrize("change", [
    lambda b: b.execute(1, 1),          # shares
    lambda b: b.replace(1, 1 + 100, 10, 100),  # reference (and queue place)
    lambda b: b.delete(2),              # an order fewer
    lambda b: b.add(9, 1, B, 1, 100),   # an order more
], ids=["shares", "reference", "fewer", "more"])
def test_canonical_differs_when_orders_differ(change):
    a, b = FeedBook(), FeedBook()
    for bk in (a, b):
        bk.add(1, 1, B, 10, 100)
        bk.add(2, 1, B, 10, 100)
    change(b)
    assert a.canonical() != b.canonical()


def test_canonical_differs_by_price_side_and_stock():
    base = FeedBook()
    base.add(1, 1, B, 10, 100)
    for loc, side, price in ((2, B, 100), (1, S, 100), (1, B, 101)):
        other = FeedBook()
        other.add(1, loc, side, 10, price)
        assert other.canonical() != base.canonical()


# -- the model ---------------------------------------------------------------------------------

class ModelBook:
    """A list of [ref, locate, side, shares, price] in time priority: the simplest thing that
    follows the rules."""

    def __init__(self) -> None:
        self.orders: list[list[int]] = []

    def find(self, ref: int) -> int:
        for i, o in enumerate(self.orders):
            if o[0] == ref:
                return i
        raise KeyError(ref)

    def add(self, ref, locate, side, shares, price):
        self.orders.append([ref, locate, side, shares, price])

    def reduce(self, ref, shares):
        i = self.find(ref)
        self.orders[i][3] -= shares
        if self.orders[i][3] == 0:
            del self.orders[i]

    def delete(self, ref):
        del self.orders[self.find(ref)]

    def replace(self, orig, new, shares, price):
        o = self.orders.pop(self.find(orig))
        self.orders.append([new, o[1], o[2], shares, price])

    def depth(self, locate, side, levels=10):
        agg: dict[int, list[int]] = {}
        for ref, loc, sd, shares, price in self.orders:
            if loc == locate and sd == side:
                lv = agg.setdefault(price, [0, 0])
                lv[0] += shares
                lv[1] += 1
        prices = sorted(agg, reverse=side == B)[:levels]
        return [Level(p, agg[p][0], agg[p][1]) for p in prices]

    def canonical(self):
        rows = [(loc, sd, price, i, ref, shares) for i, (ref, loc, sd, shares, price) in enumerate(self.orders)]
        rows.sort()
        return [(loc, sd, price, ref, shares) for loc, sd, price, _, ref, shares in rows]


def run_model(rng: random.Random, steps: int, use_itch: bool) -> None:
    book, model = FeedBook(), ModelBook()
    next_ref = 1
    for step in range(steps):
        live = [o[0] for o in model.orders]
        kind = rng.choice(["add", "add", "add", "execute", "cancel", "delete", "replace"]) if live else "add"
        loc = rng.choice((1, 2))
        if kind == "add":
            side = rng.choice((B, S))
            shares, price = rng.randint(1, 500), rng.choice((9_900, 10_000, 10_100, 10_200))
            live_refs = {o[0] for o in model.orders}
            dead = sorted(r for r in range(1, next_ref) if r not in live_refs)
            if dead and rng.random() < 0.2:
                ref = rng.choice(dead)  # a reference whose order is gone may be used again
            else:
                ref = next_ref
                next_ref += 1
            model.add(ref, loc, side, shares, price)
            if use_itch:
                book.apply(itch.decode(itch.add_order(loc, 0, step, ref, bytes([side]), shares, "AAA", price)))
            else:
                book.add(ref, loc, side, shares, price)
        else:
            ref = rng.choice(live)
            have = model.orders[model.find(ref)][3]
            if kind in ("execute", "cancel"):
                n = rng.choice((have, rng.randint(1, have)))
                model.reduce(ref, n)
                if use_itch:
                    m = itch.order_executed(loc, 0, step, ref, n, step) if kind == "execute" else \
                        itch.order_cancel(loc, 0, step, ref, n)
                    book.apply(itch.decode(m))
                elif kind == "execute":
                    book.execute(ref, n)
                else:
                    book.cancel(ref, n)
            elif kind == "delete":
                model.delete(ref)
                if use_itch:
                    book.apply(itch.decode(itch.order_delete(loc, 0, step, ref)))
                else:
                    book.delete(ref)
            else:
                new = next_ref
                next_ref += 1
                shares, price = rng.randint(1, 500), rng.choice((9_900, 10_000, 10_100, 10_200))
                model.replace(ref, new, shares, price)
                if use_itch:
                    book.apply(itch.decode(itch.order_replace(loc, 0, step, ref, new, shares, price)))
                else:
                    book.replace(ref, new, shares, price)
        assert len(book) == len(model.orders)
        assert book.canonical() == model.canonical()
        assert [r for r, _ in book.in_priority()] == [o[0] for o in model.orders]
        for loc2 in (1, 2):
            for side in (B, S):
                assert book.depth(loc2, side) == model.depth(loc2, side)
                assert book.depth(loc2, side, 2) == model.depth(loc2, side, 2)
                d = model.depth(loc2, side, 1)
                assert book.best(loc2, side) == (d[0] if d else None)
        for loc2 in (1, 2):
            assert [r for r, _ in book.in_priority(loc2)] == [o[0] for o in model.orders if o[1] == loc2]


@settings(max_examples=40, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), use_itch=st.booleans())
def test_random_operations_agree_with_the_model(seed, use_itch):
    run_model(random.Random(seed), 60, use_itch)


def test_rebuilding_from_in_priority_gives_an_equal_book():
    rng = random.Random(7)
    book = FeedBook()
    ref = 0
    for _ in range(200):
        live = list(book.orders)
        if live and rng.random() < 0.4:
            r = rng.choice(live)
            if rng.random() < 0.5:
                ref += 1
                book.replace(r, ref, rng.randint(1, 50), rng.choice((1, 2, 3)))
            else:
                book.execute(r, rng.randint(1, book.orders[r].shares))
        else:
            ref += 1
            book.add(ref, rng.choice((1, 2)), rng.choice((B, S)), rng.randint(1, 50), rng.choice((1, 2, 3)))
    copy = FeedBook()
    for r, o in book.in_priority():
        copy.add(r, o.locate, o.side, o.shares, o.price)
    assert copy.canonical() == book.canonical()
    for loc in (1, 2):
        for side in (B, S):
            assert copy.depth(loc, side) == book.depth(loc, side)
