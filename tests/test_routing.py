"""Which session an engine event is for (gateways/routing.py): one compiled pass over a batch
of ring slots, by the session fields the schema gives each template."""

from __future__ import annotations

import numpy as np

from ringex.engine.wire import messages as m
from ringex.gateways.routing import MESSAGE_SIZE, route


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
