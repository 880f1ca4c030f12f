"""``ringex bench engine`` under the money rules and ``ringex bench engine --risk``, at tiny
sizes through their public functions. Nothing here depends on timing: the figures' structure,
that the streams are accepted (no order refused for money or margin, marks applied), that the
liquidation check's small move liquidates nobody and its large one the accounts it should.
The matching figures (trades, orders accepted, orders left working, cancels of filled orders)
are not copied from an earlier run of the engine: ``replay_book`` derives them from the
stream with a plain price-time book of its own."""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

import numpy as np
import pytest

from ringex.engine.engine import pack_slots
from ringex.engine.wire.messages import CancelOrder, IndexPrice, NewOrder, Side, TimeInForce
from ringex.tools import bench_engine as B

BUY, SELL = int(Side.Buy), int(Side.Sell)


def _field(slots: np.ndarray, layout, name: str) -> np.ndarray:
    return slots.view(layout.slot_dtype(slots.shape[1]))[:, 0][name]


# -- the streams (no engine needed) ----------------------------------------------------------


def test_the_risk_stream_is_the_standard_orders_over_more_accounts_with_index_prices():
    orders, accounts, every = 5_000, 300, 1_000
    std = B.make_stream(orders, seed=3)
    risk, n_index = B.make_risk_stream(orders, seed=3, accounts=accounts, index_every=every)
    assert n_index == orders // every and len(risk) == orders + n_index

    tid = _field(risk, NewOrder, "templateId")
    where = np.flatnonzero(tid == IndexPrice.template_id)
    assert where.tolist() == [j * (every + 1) - 1 for j in range(1, n_index + 1)]
    assert (_field(risk[where], IndexPrice, "instrument") == B.INSTRUMENT).all()
    prices = _field(risk[where], IndexPrice, "price")
    assert (abs(prices - B.REFERENCE_PRICE) < 20_000).all()
    seq = _field(risk, NewOrder, "seq")
    assert (np.diff(seq.astype(np.int64)) == 1).all() and seq[0] > 3 * accounts + 3

    body = np.delete(risk, where, axis=0)
    assert (_field(body, NewOrder, "templateId") == _field(std, NewOrder, "templateId")).all()
    # same orders (prices, quantities, sides, kinds, cancel targets), other owners and stamps
    a, b = body.copy(), std.copy()
    for s in (a, b):
        s[:, 8:32] = 0
        is_new = _field(s, NewOrder, "templateId") == NewOrder.template_id
        s[is_new, NewOrder.offset("account"): NewOrder.offset("account") + 4] = 0
        s[~is_new, CancelOrder.offset("account"): CancelOrder.offset("account") + 4] = 0
    assert (a == b).all()

    # every cancel names the account that placed its order; the accounts are all used
    is_new = _field(body, NewOrder, "templateId") == NewOrder.template_id
    owner = _field(body[is_new], NewOrder, "account")  # order ids are 1, 2, ... in stream order
    cxl = body[~is_new]
    targets = _field(cxl, CancelOrder, "orderId").astype(np.int64)
    assert (owner[targets - 1] == _field(cxl, CancelOrder, "account")).all()
    assert set(owner.tolist()) == set(range(1, accounts + 1))


# -- through the engine -------------------------------------------------------------------------


def liquidations_at(eng, mark: int) -> int:
    """How many accounts the engine starts liquidating when the mark moves to ``mark``; the
    engine's state is put back afterwards."""
    snap = eng.snapshot()
    try:
        return B.tally(eng.process(B.index_slot(mark, seq=10**6)))["Liquidation:Start"]
    finally:
        eng.restore(snap)


def test_the_liquidation_state_puts_a_known_number_at_risk():
    eng, state = B.liquidation_state(400, B.risk_config(400, max_orders=1 << 12))
    assert len(state) == 400 and sum(q for _, q, _ in state) == 0
    p0, gap, step = B.REFERENCE_PRICE, B.LIQ_GAP, B.LIQ_STEP
    assert liquidations_at(eng, p0) == 0
    assert liquidations_at(eng, p0 - gap // 2) == 0
    assert liquidations_at(eng, p0 + gap // 2) == 0
    for k in (1, 7, 200):
        assert liquidations_at(eng, p0 - gap - step * (k - 1) - 1) == k  # longs, from the top
        assert liquidations_at(eng, p0 + gap + step * (k - 1) + 1) == k  # shorts, from the bottom
    # every account could open its position at the reference price (liquidation_state raises
    # when the engine refuses one), and at that mark still has initial margin to spare
    assert min(eng.account_risk(a)["free"] for a, _, _ in state) >= 0


# -- an independent book ---------------------------------------------------------------------


@dataclass
class Book:
    """What the bench's stream must do to a price-time book, by a plain replay of it."""
    trades: int = 0
    orders_accepted: int = 0
    cancels_rejected: int = 0  # cancels of orders the stream's own IOCs filled meanwhile
    live: dict[int, list] = field(default_factory=dict)  # order id -> [side, price, leaves, account]
    bids: dict[int, deque] = field(default_factory=lambda: defaultdict(deque))  # price -> order ids, oldest first
    asks: dict[int, deque] = field(default_factory=lambda: defaultdict(deque))
    paid: Counter = field(default_factory=Counter)  # account -> quote paid (negative: received)
    bought: Counter = field(default_factory=Counter)  # account -> base bought (negative: sold)


def replay_book(stream: np.ndarray) -> Book:
    """Replay the bench's stream (one instrument, limit GTC and IOC orders and cancels, STP off,
    no fees) through the simplest book there is: order ids 1, 2, ... in stream order, each
    aggressor fills the best opposite price first and, at a price, the oldest order first; one
    trade per maker it fills, at the maker's price. Index prices move no order."""
    book = Book()
    tid = _field(stream, NewOrder, "templateId")
    new = stream.view(NewOrder.slot_dtype(stream.shape[1]))[:, 0]
    cxl = stream.view(CancelOrder.slot_dtype(stream.shape[1]))[:, 0]
    for i in range(len(stream)):
        if tid[i] == CancelOrder.template_id:
            oid = int(cxl["orderId"][i])
            if oid not in book.live:
                book.cancels_rejected += 1
                continue
            side, price, _, _ = book.live.pop(oid)
            (book.bids if side == BUY else book.asks)[price].remove(oid)
            continue
        if tid[i] != NewOrder.template_id:
            continue
        book.orders_accepted += 1
        oid = book.orders_accepted
        side, price, qty = int(new["side"][i]), int(new["price"][i]), int(new["qty"][i])
        account = int(new["account"][i])
        other = book.asks if side == BUY else book.bids
        while qty:
            levels = [p for p, q in other.items() if q]
            if not levels:
                break
            best = min(levels) if side == BUY else max(levels)
            if (side == BUY and best > price) or (side != BUY and best < price):
                break
            maker = book.live[other[best][0]]
            fill = min(qty, maker[2])
            qty -= fill
            maker[2] -= fill
            book.trades += 1
            buyer, seller = (account, maker[3]) if side == BUY else (maker[3], account)
            book.paid[buyer] += fill * best
            book.paid[seller] -= fill * best
            book.bought[buyer] += fill
            book.bought[seller] -= fill
            if maker[2] == 0:
                del book.live[other[best].popleft()]
        if qty and int(new["timeInForce"][i]) == int(TimeInForce.GTC):
            book.live[oid] = [side, price, qty, account]
            (book.bids if side == BUY else book.asks)[price].append(oid)
    return book


def engine_book(eng, side: int) -> list[list[tuple[int, int]]]:
    return [[(oid, leaves) for oid, _, leaves in level] for level in eng.book(B.INSTRUMENT, side)]


def replayed_book(book: Book, side: int) -> list[list[tuple[int, int]]]:
    levels = book.bids if side == BUY else book.asks
    prices = sorted((p for p, q in levels.items() if q), reverse=side == BUY)
    return [[(oid, book.live[oid][2]) for oid in levels[p]] for p in prices]


def test_the_replay_book_matches_by_price_then_time():
    """The independent book itself, on a hand-made stream: a sell at 101 then two at 100; a buy
    of 5 at 101 takes the older 100 (2), the newer 100 (2), then 1 of the 101; an IOC buy at
    99 finds nothing; a cancel of the filled order is refused, of the resting one accepted."""
    rows = [NewOrder.encode(clOrdId=1, account=1, instrument=1, side="Sell", ordType="Limit", timeInForce="GTC",
                            price=101, qty=3),
            NewOrder.encode(clOrdId=2, account=2, instrument=1, side="Sell", ordType="Limit", timeInForce="GTC",
                            price=100, qty=2),
            NewOrder.encode(clOrdId=3, account=3, instrument=1, side="Sell", ordType="Limit", timeInForce="GTC",
                            price=100, qty=2),
            NewOrder.encode(clOrdId=4, account=4, instrument=1, side="Buy", ordType="Limit", timeInForce="GTC",
                            price=101, qty=5),
            NewOrder.encode(clOrdId=5, account=4, instrument=1, side="Buy", ordType="Limit", timeInForce="IOC",
                            price=99, qty=5),
            CancelOrder.encode(clOrdId=6, orderId=2, account=2, instrument=1),
            CancelOrder.encode(clOrdId=7, orderId=1, account=1, instrument=1)]
    book = replay_book(pack_slots(rows))
    assert (book.trades, book.orders_accepted, book.cancels_rejected) == (3, 5, 1)
    assert book.live == {}
    assert book.paid == Counter({4: 2 * 100 + 2 * 100 + 101, 2: -200, 3: -200, 1: -101})
    assert book.bought == Counter({4: 5, 2: -2, 3: -2, 1: -1})


def test_the_standard_bench_matches_the_independent_book_and_conserves_money():
    r = B.run_bench(orders=20_000, runs=1, seed=1, python_orders=0)
    assert r["orders_rejected"] == 0 and r["rejected_for_money"] == 0 and r["admin_rejected"] == 0
    stream = B.make_stream(20_000, seed=1)
    book = replay_book(stream)
    assert book.cancels_rejected > 0 and book.trades > 0  # the stream exercises both
    assert (r["trades"], r["orders_accepted"], r["live_orders_end"], r["cancels_rejected"]) == (
        book.trades, book.orders_accepted, len(book.live), book.cancels_rejected)

    def inspect(eng) -> None:
        # the book left working is the replay's, order for order
        assert engine_book(eng, BUY) == replayed_book(book, BUY)
        assert engine_book(eng, SELL) == replayed_book(book, SELL)
        # every account's balances are its deposits moved by exactly its trades (no fees)
        for a in range(1, B.ACCOUNTS + 1):
            assert eng.balance(a, B.QUOTE_ASSET) == B.QUOTE_DEPOSIT - book.paid[a], a
            assert eng.balance(a, B.BASE_ASSET) == B.BASE_DEPOSIT + book.bought[a], a
        # and money is conserved: nothing made or lost, whatever the fee account holds
        quote = sum(eng.balance(a, B.QUOTE_ASSET) for a in range(B.ACCOUNTS + 1)) + eng.fee_balance()
        assert quote == B.ACCOUNTS * B.QUOTE_DEPOSIT
        assert sum(eng.balance(a, B.BASE_ASSET) for a in range(B.ACCOUNTS + 1)) == B.ACCOUNTS * B.BASE_DEPOSIT

    counts = B.check_run(stream, inspect=inspect)
    assert counts["Trade"] == book.trades
    assert counts["CancelRejected:UnknownOrder"] == book.cancels_rejected


RISK_ORDERS, RISK_ACCOUNTS, RISK_FRACTION = 20_000, 200, 0.05


@pytest.fixture(scope="module")
def risk() -> dict:
    return B.run_risk_bench(orders=RISK_ORDERS, accounts=RISK_ACCOUNTS, runs=1, seed=1, liq_reps=5,
                            liq_fraction=RISK_FRACTION)


@pytest.fixture(scope="module")
def risk_stream() -> np.ndarray:
    return B.make_risk_stream(RISK_ORDERS, seed=1, accounts=RISK_ACCOUNTS)[0]


def test_risk_bench_reports_its_figures(risk):
    for key in ("risk_orders_per_s", "risk_ns_per_order", "risk_messages_per_s", "baseline_orders_per_s",
                "risk_vs_baseline", "spot_accounts_orders_per_s", "risk_vs_spot_accounts",
                "liquidation_check_us_p50", "liquidation_check_us_p99", "liq_nomove_us_p50",
                "liq_nomove_us_p99", "process_call_us_p50", "jit_warmup_s"):
        assert isinstance(risk[key], float) and math.isfinite(risk[key]) and risk[key] > 0, key
    assert risk["liquidation_check_us_p99"] >= risk["liquidation_check_us_p50"]
    assert risk["liq_nomove_us_p99"] >= risk["liq_nomove_us_p50"]
    assert risk["orders"] == RISK_ORDERS and risk["accounts"] == RISK_ACCOUNTS and risk["runs"] == 1
    assert risk["liq_reps"] == 5


def test_risk_stream_orders_pass_the_margin_check_and_marks_move(risk, risk_stream):
    assert risk["risk_orders_rejected"] == 0
    assert risk["rejected_for_margin"] == 0 and risk["risk_rejected_for_money"] == 0
    assert risk["risk_admin_rejected"] == 0
    assert risk["index_messages"] == risk["mark_updates"] == RISK_ORDERS // B.INDEX_EVERY
    assert risk["risk_liquidations"] == 0
    # the same matching as the plain benchmark (the same orders, other owners, STP off), and
    # both what the independent book says of the stream
    book = replay_book(risk_stream)
    assert risk["same_trades_as_baseline"] and risk["risk_trades"] == risk["baseline_trades"] == book.trades
    assert risk["risk_orders_accepted"] == book.orders_accepted
    assert risk["risk_live_orders_end"] == len(book.live)
    assert risk["spot_accounts_rejected_for_money"] == 0


def test_risk_stream_positions_and_cash_follow_the_trades(risk_stream):
    """docs/risk.md, perpetuals: each fill moves the buyer's cash down and the seller's up by its
    notional (no fees here) and the positions by its quantity; positions sum to zero and the
    cash of the accounts, the insurance fund and the fee account is conserved."""
    book = replay_book(risk_stream)
    accounts = range(1, RISK_ACCOUNTS + 1)

    def inspect(eng) -> None:
        for a in accounts:
            assert eng.position(a, B.INSTRUMENT)["qty"] == book.bought[a], a
            assert eng.balance(a, B.QUOTE_ASSET) == B.COLLATERAL - book.paid[a], a
        assert sum(eng.position(a, B.INSTRUMENT)["qty"] for a in range(RISK_ACCOUNTS + 1)) == 0
        cash = sum(eng.balance(a, B.QUOTE_ASSET) for a in range(RISK_ACCOUNTS + 1)) + eng.fee_balance()
        assert cash == RISK_ACCOUNTS * B.COLLATERAL + B.INSURANCE_DEPOSIT

    counts = B.check_run(risk_stream, 1024, B.risk_config(RISK_ACCOUNTS), B.risk_admin_slots(RISK_ACCOUNTS), inspect)
    assert counts["Trade"] == book.trades and book.trades > 0
    assert any(book.bought[a] for a in accounts)  # positions were opened: the checks above bite


def test_liquidation_check_liquidates_only_on_the_large_move(risk):
    assert risk["liq_accounts_with_positions"] == RISK_ACCOUNTS
    assert risk["liq_nomove_liquidations"] == 0 and risk["liq_nomove_admin_rejected"] == 0
    assert risk["liquidation_admin_rejected"] == 0
    # the state is built so that the large move puts exactly this fraction of the accounts at risk
    at_risk = round(RISK_FRACTION * RISK_ACCOUNTS)
    assert risk["accounts_at_risk"] == risk["accounts_at_risk_expected"] == at_risk
    assert risk["liquidations_done"] == at_risk
    assert risk["liquidation_move_ppm"] > risk["liq_nomove_move_ppm"] > 0
