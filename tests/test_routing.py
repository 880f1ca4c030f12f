"""Which session an engine event is for (gateways/routing.py): one compiled pass over a batch
of ring slots, by the session fields the schema gives each template."""

from __future__ import annotations

import numpy as np

from ringex.engine.wire import messages as m
from ringex.gateways.routing import MESSAGE_SIZE, route, route_by_session


def slot(b: bytes) -> np.ndarray:
    r = np.zeros(m.SLOT_SIZE, np.uint8)
    r[:len(b)] = np.frombuffer(b, np.uint8)
    return r


def test_each_event_goes_to_its_sessions_and_a_trade_to_both_sides_once():
    rows = np.stack([
        slot(m.OrderAccepted.encode(sessionId=5, side="Buy", ordType="Limit", timeInForce="GTC")),
        slot(m.BookAdd.encode(side="Buy")),  # market data: nobody's
        slot(m.Trade.encode(makerSessionId=5, takerSessionId=7, aggressorSide="Buy")),
        slot(m.Trade.encode(makerSessionId=7, takerSessionId=7, aggressorSide="Buy")),  # a self-trade: once
        slot(m.Trade.encode(makerSessionId=9, takerSessionId=5, aggressorSide="Sell")),  # only the taker is ours
        slot(m.OrderCanceled.encode(sessionId=8, reason="User")),  # another gateway's session
        slot(m.MassCancelDone.encode(sessionId=7, scope="Session")),
    ])
    got_rows, got_sessions = route(rows, np.array([5, 7], np.int64))
    assert list(zip(got_rows.tolist(), got_sessions.tolist())) == [(0, 5), (2, 5), (2, 7), (3, 7), (4, 5), (6, 7)]
    empty_rows, empty_sessions = route(rows[:0], np.array([5], np.int64))
    assert len(empty_rows) == len(empty_sessions) == 0


def test_every_event_a_session_can_get_has_a_size_and_market_data_has_no_session():
    for layout in m.RING:
        assert MESSAGE_SIZE[layout.template_id] == layout.size
    for layout in (m.BookAdd, m.BookExecute, m.BookReduce, m.BookDelete, m.BookReplace, m.MarkPrice):
        rows = slot(layout.encode())[None, :]
        assert len(route(rows, np.array([0], np.int64))[0]) == 0


def test_deliveries_grouped_by_session_are_the_routes_in_session_order():
    # route_by_session is what the gateway hands each session: route's deliveries, grouped by
    # ascending session id (row order kept within one), with each message's size and ring
    # position; held against route on random batches
    rng = np.random.default_rng(11)
    kinds = [
        lambda a, b: m.OrderAccepted.encode(sessionId=a, side="Buy", ordType="Limit", timeInForce="GTC"),
        lambda a, b: m.Trade.encode(makerSessionId=a, takerSessionId=b, aggressorSide="Buy"),
        lambda a, b: m.OrderCanceled.encode(sessionId=a, reason="User"),
        lambda a, b: m.BookAdd.encode(side="Sell"),
        lambda a, b: m.MassCancelDone.encode(sessionId=b, scope="Session"),
    ]
    served = np.array([2, 3, 5, 8], np.int64)
    for trial in range(200):
        n = int(rng.integers(0, 40))
        region = np.stack([slot(kinds[int(rng.integers(len(kinds)))](*(int(x) for x in rng.integers(1, 10, 2))))
                           for _ in range(n)]) if n else np.zeros((0, m.SLOT_SIZE), np.uint8)
        at = int(rng.integers(0, 1 << 40))
        d = route_by_session(region, served, at)
        rows, sids = route(region, served)
        want_sessions = sorted(set(sids.tolist()))
        assert d.sessions == want_sessions
        assert len(d.bounds) == len(want_sessions) + 1 and d.bounds[0] == 0 and d.bounds[-1] == len(rows)
        for i, sid in enumerate(d.sessions):
            mine = rows[sids == sid]
            got = d.rows[d.bounds[i]:d.bounds[i + 1]]
            assert got.tolist() == mine.tolist()
            tids = region[mine, 2].astype(np.int64) | (region[mine, 3].astype(np.int64) << 8)
            assert d.sizes[d.bounds[i]:d.bounds[i + 1]].tolist() == MESSAGE_SIZE[tids].tolist()
            assert d.positions[d.bounds[i]:d.bounds[i + 1]].tolist() == (at + mine).tolist()
