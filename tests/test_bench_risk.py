"""``ringex bench engine`` under the money rules and ``ringex bench engine --risk``, at tiny
sizes through their public functions. Nothing here depends on timing: the figures' structure,
that the streams are accepted (no order refused for money or margin, marks applied), that the
liquidation check's small move liquidates nobody and its large one the accounts it should."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ringex.engine.wire.messages import CancelOrder, IndexPrice, NewOrder
from ringex.tools import bench_engine as B


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



def test_the_standard_bench_is_funded_and_unchanged():
    r = B.run_bench(orders=20_000, runs=1, seed=1, python_orders=0)
    assert r["orders_rejected"] == 0 and r["rejected_for_money"] == 0 and r["admin_rejected"] == 0
    # the figures of the engine before the money rules, for the same stream
    assert (r["trades"], r["orders_accepted"], r["live_orders_end"]) == (10_674, 14_077, 961)
    assert r["cancels_rejected"] > 0  # cancels of orders filled meanwhile: UnknownOrder, as before


@pytest.fixture(scope="module")
def risk() -> dict:
    return B.run_risk_bench(orders=20_000, accounts=200, runs=1, seed=1, liq_reps=5, liq_fraction=0.05)


def test_risk_bench_reports_its_figures(risk):
    for key in ("risk_orders_per_s", "risk_ns_per_order", "risk_messages_per_s", "baseline_orders_per_s",
                "risk_vs_baseline", "spot_accounts_orders_per_s", "risk_vs_spot_accounts",
                "liquidation_check_us_p50", "liquidation_check_us_p99", "liq_nomove_us_p50",
                "liq_nomove_us_p99", "process_call_us_p50", "jit_warmup_s"):
        assert isinstance(risk[key], float) and math.isfinite(risk[key]) and risk[key] > 0, key
    assert risk["liquidation_check_us_p99"] >= risk["liquidation_check_us_p50"]
    assert risk["liq_nomove_us_p99"] >= risk["liq_nomove_us_p50"]
    assert risk["orders"] == 20_000 and risk["accounts"] == 200 and risk["runs"] == 1
    assert risk["liq_reps"] == 5


def test_risk_stream_orders_pass_the_margin_check_and_marks_move(risk):
    assert risk["risk_orders_rejected"] == 0
    assert risk["rejected_for_margin"] == 0 and risk["risk_rejected_for_money"] == 0
    assert risk["risk_admin_rejected"] == 0
    assert risk["index_messages"] == 20 and risk["mark_updates"] == 20
    assert risk["risk_liquidations"] == 0
    # the same matching as the plain benchmark: same trades, same orders accepted
    assert risk["same_trades_as_baseline"] and risk["risk_trades"] == risk["baseline_trades"] == 10_674
    assert risk["risk_orders_accepted"] == 14_077
    assert risk["spot_accounts_rejected_for_money"] == 0


def test_liquidation_check_liquidates_only_on_the_large_move(risk):
    assert risk["liq_accounts_with_positions"] == 200
    assert risk["liq_nomove_liquidations"] == 0 and risk["liq_nomove_admin_rejected"] == 0
    assert risk["liquidation_admin_rejected"] == 0
    assert risk["accounts_at_risk"] == risk["accounts_at_risk_expected"] == 10
    assert risk["liquidations_done"] == 10
    assert risk["liquidation_move_ppm"] > risk["liq_nomove_move_ppm"] > 0
