"""The reference model (tests/reference_model.py) against event sequences written by hand from
docs/engine.md, one rule at a time.  Every message also goes through the stream
invariants (``EventChecker``) and the model's own consistency check."""

from __future__ import annotations

from typing import Any

import pytest

from event_checker import EventChecker
from message_builder import FUNDING, Msgs
from raw_wire import (
    BUY, CLOSED, DAY, FOK, GTC, HALTED, IOC, LIMIT, MARKET, PERPETUAL, SELL, STOP, STOP_LIMIT, TRADING,
    describe, encode_event, raw_decode, raw_encode,
)
from reference_model import Model, Unpredictable
from ringex.engine.wire.codec import HEADER
from ringex.engine.wire.messages import SCHEMA, CancelReason as C, RejectReason as R, StpMode as S

QUEUE, REJECT = 2, 1
CONFIG = dict(max_instruments=4, max_accounts=8, max_orders=50, price_levels=100, max_stops=10,
              market_protection_ticks=5)


FUND_ASSETS = (0, 1, 2)  # the settlement asset and the base assets the scenarios use


class H:
    """One model, its message builder and the stream checker.

    Every account created (``CreateAccount`` answered ``None``) is funded at once: a deposit
    of ``FUNDING`` of each of ``FUND_ASSETS``, stamped as the ``CreateAccount`` so that the
    scenarios' sequence numbers and times (the circuit breaker's) stay as written, and sent
    on its own so that the events a scenario looks at are those of its ``CreateAccount``."""

    def __init__(self, instruments: bool = True, **cfg: Any) -> None:
        self.model = Model(**{**CONFIG, **cfg})
        self.m = Msgs()
        self.checker = EventChecker()
        if instruments:
            self.send(self.m.instrument(1))  # tick 1, lot 1, qty 1..1000, ref 100: prices 50..149
            for a in (1, 2, 3):
                self.send(self.m.account(a, stp=S.Off))
            self.send(self.m.account(4, stp=S.CancelResting))

    def send(self, buf: bytes) -> list:
        events = self.send_one(buf)
        tid, m, _ = raw_decode(buf)
        if tid == 11 and any(n == "AdminResult" and f["refTemplateId"] == 11 and f["reason"] == R["None"]
                             for n, f in events):
            for deposit in self.m.funding(buf, m["account"], FUND_ASSETS):
                expect(self.send_one(deposit), ("AdminResult", {"refTemplateId": 12, "reason": R["None"],
                                                                "value": FUNDING}))
        return events

    def send_one(self, buf: bytes) -> list:
        events = self.model.process(buf)
        self.checker.feed(events)
        self.model.check()
        for e in events:  # every event encodes (enums valid, fields in range)
            assert SCHEMA.decode(encode_event(e)).fields == e[1]
        return events

    def __getattr__(self, name: str):  # h.order(...) builds and sends
        build = getattr(self.m, name)
        return lambda *a, **k: self.send(build(*a, **k))


def expect(events: list, *specs: Any) -> None:
    """``specs``: ``"Name"`` or ``("Name", {field: value, ...})``, one per event, in order."""
    got = "\n".join(describe(e) for e in events)
    assert len(events) == len(specs), f"expected {len(specs)} events, got:\n{got}"
    for i, (e, spec) in enumerate(zip(events, specs)):
        name, want = (spec, {}) if isinstance(spec, str) else spec
        assert e[0] == name, f"event {i}: expected {name}, got:\n{got}"
        diff = {k: (e[1][k], v) for k, v in want.items() if e[1][k] != v}
        assert not diff, f"event {i} {name}: (got, want) {diff}\n{got}"


def reject(reason: int) -> tuple:
    return ("OrderRejected", {"reason": reason, "orderId": 0, "refTemplateId": 1})


# -- admin ----------------------------------------------------------------------------------


def test_instrument_definition_and_stamp():
    h = H(instruments=False)
    buf = h.m.instrument(2, tick=5, ref=500, status=HALTED)
    ev = h.send(buf)
    _, _, stamp = raw_decode(buf)
    expect(ev, ("AdminResult", {"reason": R["None"], "refTemplateId": 10, "instrument": 2, "account": 0,
                                "value": 0}),
           ("InstrumentStatus", {"instrument": 2, "status": HALTED}))
    for e in ev:
        assert (e[1]["seq"], e[1]["timestampNs"], e[1]["ingressNs"]) == stamp
    expect(h.send(h.m.instrument(2)), ("AdminResult", {"reason": R.DuplicateInstrument}))
    expect(h.send(h.m.instrument(0)), ("AdminResult", {"reason": R.InstrumentCapacity, "instrument": 0}))
    expect(h.send(h.m.instrument(4)), ("AdminResult", {"reason": R.InstrumentCapacity}))
    # duplicate comes before invalid
    expect(h.send(h.m.instrument(2, tick=0)), ("AdminResult", {"reason": R.DuplicateInstrument}))


@pytest.mark.parametrize("bad", [
    dict(tick=0), dict(tick=-1), dict(lot=0), dict(min_qty=0), dict(min_qty=10, max_qty=5),
    dict(lot=5, min_qty=3, max_qty=10), dict(lot=5, min_qty=5, max_qty=12), dict(ref=0), dict(ref=-5),
    dict(tick=5, ref=102), dict(kind=0), dict(kind=3), dict(policy=0), dict(policy=3), dict(status=0),
    dict(status=4),
    # docs/risk.md: a spot instrument's base asset is 1 .. max_assets-1, a perpetual's 0; fees
    dict(base_asset=0), dict(base_asset=8), dict(base_asset=2**32 - 1), dict(kind=PERPETUAL, base_asset=1),
    dict(kind=PERPETUAL, base_asset=8), dict(taker_fee=-1, maker_fee=-1), dict(taker_fee=1_000_001),
    dict(taker_fee=250, maker_fee=251), dict(taker_fee=250, maker_fee=-251), dict(taker_fee=0, maker_fee=-1),
    dict(taker_fee=-(2**31), maker_fee=0),
])
def test_invalid_instrument_definition(bad):
    h = H(instruments=False)
    expect(h.send(h.m.instrument(1, **bad)), ("AdminResult", {"reason": R.InvalidInstrumentDefinition}))
    expect(h.send(h.m.instrument(1)), ("AdminResult", {"reason": R["None"]}), "InstrumentStatus")


@pytest.mark.parametrize("good", [
    dict(base_asset=1), dict(base_asset=7), dict(kind=PERPETUAL, base_asset=0), dict(taker_fee=0, maker_fee=0),
    dict(taker_fee=250, maker_fee=-250), dict(taker_fee=1_000_000, maker_fee=1_000_000),
    dict(taker_fee=1_000_000, maker_fee=-1_000_000),
])
def test_instrument_definition_assets_and_fees_at_their_limits(good):
    h = H(instruments=False)
    expect(h.send(h.m.instrument(1, **good)), ("AdminResult", {"reason": R["None"]}), "InstrumentStatus")


def test_at_most_32_perpetuals():
    h = H(instruments=False, max_instruments=40)
    for i in range(1, 33):
        expect(h.send(h.m.instrument(i, kind=PERPETUAL)), ("AdminResult", {"reason": R["None"]}), "InstrumentStatus")
    expect(h.send(h.m.instrument(33, kind=PERPETUAL, tick=0)),  # checked after the definition's own fields
           ("AdminResult", {"reason": R.InvalidInstrumentDefinition}))
    expect(h.send(h.m.instrument(33, kind=PERPETUAL)), ("AdminResult", {"reason": R.InstrumentCapacity}))
    expect(h.send(h.m.instrument(33)), ("AdminResult", {"reason": R["None"]}), "InstrumentStatus")  # spot


def test_book_range():
    h = H(instruments=False, price_levels=10)
    h.send(h.m.instrument(1, tick=5, ref=100))  # ref 20 ticks: base 15, prices 75..120
    h.send(h.m.instrument(2, tick=1, ref=3))  # base max(1, 3-5) = 1: prices 1..10
    h.account(1)
    expect(h.order(1, BUY, 1, 70), reject(R.PriceOutOfRange))
    expect(h.order(1, BUY, 1, 75), "OrderAccepted", "BookAdd")
    expect(h.order(1, SELL, 1, 120), "OrderAccepted", "BookAdd")
    expect(h.order(1, SELL, 1, 125), reject(R.PriceOutOfRange))
    expect(h.order(1, SELL, 1, 101), reject(R.BadTick))
    expect(h.order(1, BUY, 1, 1, instrument=2), "OrderAccepted", "BookAdd")
    expect(h.order(1, BUY, 1, 10, instrument=2), "OrderAccepted", "BookAdd")
    expect(h.order(1, BUY, 1, 11, instrument=2), reject(R.PriceOutOfRange))


def test_create_account():
    h = H(instruments=False)
    expect(h.account(1, S.DecrementBoth), ("AdminResult", {"reason": R["None"], "account": 1, "refTemplateId": 11}))
    expect(h.account(1, S.Off), ("AdminResult", {"reason": R.DuplicateAccount}))
    expect(h.account(0), ("AdminResult", {"reason": R.AccountCapacity}))
    expect(h.account(8), ("AdminResult", {"reason": R.AccountCapacity}))
    expect(h.account(2, S.AccountDefault), ("AdminResult", {"reason": R.InvalidStpMode}))
    expect(h.account(2, 6), ("AdminResult", {"reason": R.InvalidStpMode}))
    expect(h.account(7, S.CancelBoth), ("AdminResult", {"reason": R["None"]}))


def test_status_update_rejects():
    h = H()
    expect(h.status(3, HALTED), ("AdminResult", {"reason": R.UnknownInstrument, "instrument": 3, "refTemplateId": 14}))
    expect(h.status(1, 0), ("AdminResult", {"reason": R.InvalidInstrumentDefinition}))
    expect(h.status(1, 9), ("AdminResult", {"reason": R.InvalidInstrumentDefinition}))
    expect(h.status(1, TRADING), ("AdminResult", {"reason": R["None"]}), ("InstrumentStatus", {"status": TRADING}))


# -- risk (docs/risk.md): money, as far as the model follows it --------------------------------


def funds_result(reason: int, account: int, value: int) -> tuple:
    return ("AdminResult", {"reason": reason, "refTemplateId": 12, "account": account, "instrument": 0,
                            "value": value})


def test_funds_checks_in_order_and_balance_after():
    h = H(instruments=False)  # max_assets 8
    h.send(h.m.instrument(1))
    h.account(1, S.Off)  # funded by H: FUNDING of assets 0-2
    dep, wd = 1, 2
    # account 0 (the insurance fund) or a created one; then the asset; then the action; then the amount
    expect(h.funds(5, 0, 10), funds_result(R.UnknownAccount, 5, 0))
    expect(h.funds(5, 99, 10, action=7), funds_result(R.UnknownAccount, 5, 0))
    expect(h.funds(1, 8, 10), funds_result(R.UnknownAsset, 1, 0))
    expect(h.funds(1, 2**32 - 1, -1, action=0), funds_result(R.UnknownAsset, 1, 0))
    expect(h.funds(1, 0, -1, action=0), funds_result(R.InvalidScope, 1, FUNDING))
    expect(h.funds(1, 0, 10, action=3), funds_result(R.InvalidScope, 1, FUNDING))
    expect(h.funds(1, 0, 0), funds_result(R.QtyOutOfRange, 1, FUNDING))
    expect(h.funds(1, 0, -(2**63), action=wd), funds_result(R.QtyOutOfRange, 1, FUNDING))
    # a deposit may take a balance to 2**60, not past it
    expect(h.funds(1, 0, 2**60 - FUNDING + 1), funds_result(R.QtyOutOfRange, 1, FUNDING))
    expect(h.funds(1, 0, 2**63 - 1), funds_result(R.QtyOutOfRange, 1, FUNDING))
    expect(h.funds(1, 0, 2**60 - FUNDING), funds_result(R["None"], 1, 2**60))
    expect(h.funds(1, 0, 1), funds_result(R.QtyOutOfRange, 1, 2**60))
    expect(h.funds(1, 0, 2**60 - FUNDING, action=wd), funds_result(R["None"], 1, FUNDING))
    # a withdrawal needs the balance
    expect(h.funds(1, 3, 1, action=wd), funds_result(R.InsufficientFunds, 1, 0))
    expect(h.funds(1, 7, 5, action=dep), funds_result(R["None"], 1, 5))
    expect(h.funds(1, 7, 6, action=wd), funds_result(R.InsufficientFunds, 1, 5))
    expect(h.funds(1, 7, 5, action=wd), funds_result(R["None"], 1, 0))
    # the insurance fund takes deposits and withdrawals
    expect(h.funds(0, 0, 1000), funds_result(R["None"], 0, 1000))
    expect(h.funds(0, 0, 1001, action=wd), funds_result(R.InsufficientFunds, 0, 1000))
    expect(h.funds(0, 0, 400, action=wd), funds_result(R["None"], 0, 600))
    # money already held by a working order is not available (checked before anything else is)
    h.order(1, BUY, 5, 100)  # 1
    expect(h.funds(1, 0, FUNDING + 1, action=wd), funds_result(R.InsufficientFunds, 1, FUNDING))
    expect(h.funds(1, 0, 10), funds_result(R["None"], 1, FUNDING + 10))  # a deposit is just added


def test_money_the_model_does_not_follow_is_refused_not_guessed():
    h = H()
    h.order(1, SELL, 1, 100)
    h.order(2, BUY, 1, 100)  # accounts 1 and 2 have traded: their balances are settled money
    with pytest.raises(Unpredictable):
        h.send(h.m.funds(1, 0, 10))
    h = H()
    h.order(1, BUY, 1, 90)
    with pytest.raises(Unpredictable):  # how much it holds is not followed
        h.send(h.m.funds(1, 0, 10, action=2))
    h = H()
    h.send(h.m.instrument(2, max_qty=10**15))
    h.order(1, BUY, 10**10, 100, instrument=2)  # affordable
    with pytest.raises(Unpredictable):  # more than the account could surely afford
        h.order(1, BUY, 10**13, 100, instrument=2)


def test_index_price_and_mark():
    h = H()  # instrument 1 is spot
    h.send(h.m.instrument(2, kind=PERPETUAL, tick=2, ref=300))  # base 150 - 50: prices 200..398
    ok = ("AdminResult", {"reason": R["None"], "refTemplateId": 13, "instrument": 2, "account": 0, "value": 0})
    expect(h.index(3, 300), ("AdminResult", {"reason": R.UnknownInstrument, "refTemplateId": 13, "instrument": 3}))
    expect(h.index(1, 100), ("AdminResult", {"reason": R.NotPerpetual, "refTemplateId": 13, "instrument": 1}))
    for bad in (199, 399, 0, -2, 2**63 - 1, -(2**63)):
        expect(h.index(2, bad), ("AdminResult", {"reason": R.PriceOutOfRange, "refTemplateId": 13}))
    # any price in the book window, a multiple of the tick or not
    expect(h.index(2, 398), ok, ("MarkPrice", {"markPrice": 398, "indexPrice": 398, "basis": 0, "instrument": 2}))
    expect(h.index(2, 200), ok, ("MarkPrice", {"markPrice": 200, "indexPrice": 200, "basis": 0}))
    expect(h.index(2, 301), ok, ("MarkPrice", {"markPrice": 301, "indexPrice": 301, "basis": 0}))
    # no basis cap (the default): mark = index, whatever the book
    h.order(1, BUY, 1, 310, instrument=2)
    h.order(2, SELL, 1, 330, instrument=2)
    expect(h.index(2, 299), ok, ("MarkPrice", {"markPrice": 299, "indexPrice": 299, "basis": 0}))


def test_mark_price_basis_average_and_cap():
    h = H()
    h.send(h.m.instrument(2, kind=PERPETUAL))  # ref 100
    ok = ("AdminResult", {"reason": R["None"], "refTemplateId": 17, "instrument": 2})
    expect(h.perp_params(2, basis_cap_ppm=50_000, basis_ema_ppm=500_000), ok)
    mark = lambda m, i, b: ("MarkPrice", {"markPrice": m, "indexPrice": i, "basis": b})  # noqa: E731
    # one side empty: the sample is 0
    h.order(1, BUY, 1, 110, instrument=2)
    expect(h.index(2, 100), "AdminResult", mark(100, 100, 0))
    h.order(2, SELL, 1, 120, instrument=2)  # mid 115
    expect(h.index(2, 100), "AdminResult", mark(105, 100, 5))  # ema 0 + trunc(15 / 2) = 7, cap 5
    expect(h.index(2, 140), "AdminResult", mark(133, 140, -7))  # ema 7 + trunc(-32 / 2) = -9, cap 7
    expect(h.index(2, 115), "AdminResult", mark(110, 115, -5))  # ema -9 + trunc(9 / 2) = -5, cap 5
    expect(h.perp_params(2, basis_cap_ppm=1_000_000, basis_ema_ppm=0), ok)  # the average stays, uncapped
    expect(h.index(2, 100), "AdminResult", mark(95, 100, -5))
    # the mark stays in the book window (50..149); the event's basis is mark - index after that
    expect(h.index(2, 50), "AdminResult", mark(50, 50, 0))  # 50 - 5 = 45
    expect(h.perp_params(2, basis_cap_ppm=1_000_000, basis_ema_ppm=1_000_000), ok)
    expect(h.index(2, 60), "AdminResult", mark(115, 60, 55))  # the average is the sample: 115 - 60
    expect(h.perp_params(2, basis_cap_ppm=1_000_000, basis_ema_ppm=0), ok)
    expect(h.index(2, 140), "AdminResult", mark(149, 140, 9))  # 140 + 55 = 195


def test_perpetual_params_checks():
    h = H()
    h.send(h.m.instrument(2, kind=PERPETUAL))
    res = lambda r, i=2: ("AdminResult", {"reason": r, "refTemplateId": 17, "instrument": i})  # noqa: E731
    expect(h.perp_params(3), res(R.UnknownInstrument, 3))
    expect(h.perp_params(1), res(R.NotPerpetual, 1))
    expect(h.perp_params(1, im_ppm=0), res(R.NotPerpetual, 1))
    for bad in (dict(im_ppm=0), dict(im_ppm=1_000_001), dict(mm_ppm=0), dict(mm_ppm=-1), dict(mm_ppm=1_000_001),
                dict(tier_notional=-1), dict(tier_step_ppm=-1), dict(tier_step_ppm=1_000_001),
                dict(funding_interval_ns=2**63), dict(funding_cap_ppm=-1), dict(funding_cap_ppm=1_000_001),
                dict(basis_cap_ppm=-1), dict(basis_cap_ppm=1_000_001), dict(basis_ema_ppm=-1),
                dict(basis_ema_ppm=1_000_001)):
        expect(h.perp_params(2, **bad), res(R.InvalidInstrumentDefinition))
    expect(h.perp_params(2, im_ppm=1, mm_ppm=1, tier_notional=2**63 - 1, tier_step_ppm=1_000_000,
                         funding_cap_ppm=1_000_000, basis_cap_ppm=1_000_000, basis_ema_ppm=1_000_000),
           res(R["None"]))
    expect(h.perp_params(2, funding_interval_ns=2**63 - 1), res(R["None"]))
    with pytest.raises(Unpredictable):  # funding is not modelled
        h.send(h.m.index(2, 100))


# -- risk (docs/risk.md): kill switches ------------------------------------------------------

ACCOUNT, SESSION, INSTRUMENT, EXCHANGE = 1, 2, 3, 4
ENGAGE, RELEASE = 1, 2


def kill_ok(scope: int, action: int, **f: int) -> list:
    return [("AdminResult", {"reason": R["None"], "refTemplateId": 15, "account": f.get("account", 0),
                             "instrument": f.get("instrument", 0)}),
            ("KillSwitchStatus", {"scope": scope, "action": action, "account": f.get("account", 0),
                                  "sessionId": f.get("session", 0), "instrument": f.get("instrument", 0)})]


def test_kill_switch_rejects():
    h = H()
    expect(h.kill(9, ENGAGE, account=1, session=4, instrument=1),
           ("AdminResult", {"reason": R.InvalidScope, "refTemplateId": 15, "account": 1, "instrument": 1}))
    expect(h.kill(0, ENGAGE), ("AdminResult", {"reason": R.InvalidScope}))
    expect(h.kill(ACCOUNT, 3, account=1), ("AdminResult", {"reason": R.InvalidScope}))
    expect(h.kill(ACCOUNT, ENGAGE, account=7), ("AdminResult", {"reason": R.UnknownAccount, "account": 7}))
    expect(h.kill(INSTRUMENT, ENGAGE, instrument=3), ("AdminResult", {"reason": R.UnknownInstrument, "instrument": 3}))
    # a release of what is not engaged succeeds (nothing to cancel)
    expect(h.kill(ACCOUNT, RELEASE, account=1), *kill_ok(ACCOUNT, RELEASE, account=1))


def test_kill_switch_account_cancels_and_blocks():
    h = H()
    h.order(1, BUY, 5, 99)  # 1 resting
    h.order(2, SELL, 5, 101)  # 2, another account
    h.order(1, BUY, 2, ord_type=STOP, stop=110)  # 3 pending stop
    h.order(1, SELL, 3, 102)  # 4 resting
    expect(h.kill(ACCOUNT, ENGAGE, account=1), *kill_ok(ACCOUNT, ENGAGE, account=1),
           ("OrderCanceled", {"orderId": 1, "reason": C.KillSwitch, "canceledQty": 5}), ("BookDelete", {"orderId": 1}),
           ("OrderCanceled", {"orderId": 3, "reason": C.KillSwitch, "canceledQty": 2}),
           ("OrderCanceled", {"orderId": 4, "reason": C.KillSwitch, "canceledQty": 3}), ("BookDelete", {"orderId": 4}))
    expect(h.order(1, BUY, 1, 101), reject(R.KillSwitchAccount))
    expect(h.order(2, BUY, 1, 100), ("OrderAccepted", {"orderId": 5}), "BookAdd")
    expect(h.cancel(2, 5), ("OrderCanceled", {"orderId": 5, "reason": C.User}), "BookDelete")  # cancels work
    # engaging again succeeds and finds nothing
    expect(h.kill(ACCOUNT, ENGAGE, account=1), *kill_ok(ACCOUNT, ENGAGE, account=1))
    expect(h.kill(ACCOUNT, RELEASE, account=1), *kill_ok(ACCOUNT, RELEASE, account=1))
    expect(h.order(1, BUY, 1, 100), ("OrderAccepted", {"orderId": 6}), "BookAdd")


def test_kill_switch_levels_and_check_order():
    h = H()
    h.send(h.m.instrument(2))
    h.order(1, BUY, 1, 90, session=7)  # 1
    h.order(2, BUY, 1, 91, session=7)  # 2: same session id, another account
    h.order(3, BUY, 1, 92, session=8)  # 3
    h.order(3, BUY, 1, 93, session=8, instrument=2)  # 4
    expect(h.kill(SESSION, ENGAGE, session=7), *kill_ok(SESSION, ENGAGE, session=7),
           ("OrderCanceled", {"orderId": 1, "reason": C.KillSwitch}), ("BookDelete", {"orderId": 1}),
           ("OrderCanceled", {"orderId": 2, "reason": C.KillSwitch}), ("BookDelete", {"orderId": 2}))
    expect(h.order(3, BUY, 1, 90, session=7), reject(R.KillSwitchSession))
    expect(h.kill(INSTRUMENT, ENGAGE, instrument=2), *kill_ok(INSTRUMENT, ENGAGE, instrument=2),
           ("OrderCanceled", {"orderId": 4, "reason": C.KillSwitch}), ("BookDelete", {"orderId": 4}))
    expect(h.order(3, BUY, 1, 93, instrument=2), reject(R.KillSwitchInstrument))
    expect(h.order(3, BUY, 1, 93, instrument=2, session=7), reject(R.KillSwitchSession))  # session before instrument
    expect(h.kill(ACCOUNT, ENGAGE, account=3), *kill_ok(ACCOUNT, ENGAGE, account=3),
           ("OrderCanceled", {"orderId": 3, "reason": C.KillSwitch}), ("BookDelete", {"orderId": 3}))
    expect(h.order(3, BUY, 1, 93, instrument=2, session=7), reject(R.KillSwitchAccount))  # account first
    expect(h.order(9, BUY, 1, 93), reject(R.UnknownAccount))  # after UnknownAccount
    h.order(4, SELL, 1, 120)  # 5
    h.order(4, BUY, 1, ord_type=STOP, stop=130)  # 6
    expect(h.kill(EXCHANGE, ENGAGE), *kill_ok(EXCHANGE, ENGAGE),
           ("OrderCanceled", {"orderId": 5, "reason": C.KillSwitch}), ("BookDelete", {"orderId": 5}),
           ("OrderCanceled", {"orderId": 6, "reason": C.KillSwitch}))
    expect(h.order(4, BUY, 1, 93), reject(R.KillSwitchExchange))
    expect(h.order(4, BUY, 1, 93, instrument=2), reject(R.KillSwitchInstrument))
    for scope, f in ((EXCHANGE, {}), (INSTRUMENT, {"instrument": 2}), (SESSION, {"session": 7}),
                     (ACCOUNT, {"account": 3})):
        expect(h.kill(scope, RELEASE, **f), *kill_ok(scope, RELEASE, **f))
    expect(h.order(3, BUY, 1, 93, instrument=2, session=7), ("OrderAccepted", {"orderId": 7}), "BookAdd")


def test_kill_switch_cancels_queued_orders_and_session_table_capacity():
    h = H(instruments=False)
    h.send(h.m.instrument(1, policy=QUEUE))
    h.send(h.m.account(1))
    h.status(1, HALTED)
    expect(h.order(1, BUY, 2, 100), ("OrderAccepted", {"orderId": 1}))  # queued
    expect(h.kill(ACCOUNT, ENGAGE, account=1), *kill_ok(ACCOUNT, ENGAGE, account=1),
           ("OrderCanceled", {"orderId": 1, "reason": C.KillSwitch, "canceledQty": 2}))
    for s in range(32):
        expect(h.kill(SESSION, ENGAGE, session=1000 + s), *kill_ok(SESSION, ENGAGE, session=1000 + s))
    expect(h.kill(SESSION, ENGAGE, session=5000), ("AdminResult", {"reason": R.KillSwitchCapacity}))
    expect(h.kill(SESSION, ENGAGE, session=1005), *kill_ok(SESSION, ENGAGE, session=1005))  # already in
    expect(h.kill(SESSION, RELEASE, session=1005), *kill_ok(SESSION, RELEASE, session=1005))
    expect(h.kill(SESSION, ENGAGE, session=5000), *kill_ok(SESSION, ENGAGE, session=5000))


# -- risk: pre-trade limits ---------------------------------------------------------------------


def test_price_band():
    h = H(instruments=False)
    h.send(h.m.instrument(1))
    h.send(h.m.limits(1, band_ppm=100_000))  # ref 100: band 90..110 until the first trade
    for a in (1, 2):
        h.send(h.m.account(a))
    expect(h.order(1, BUY, 1, 89), reject(R.PriceBand))
    expect(h.order(1, SELL, 1, 111), reject(R.PriceBand))
    expect(h.order(1, BUY, 1, 90), "OrderAccepted", "BookAdd")  # 1
    expect(h.order(1, BUY, 1, ord_type=STOP_LIMIT, price=120, stop=105), reject(R.PriceBand))
    expect(h.order(2, SELL, 1, 110), "OrderAccepted", "BookAdd")  # 2
    expect(h.order(1, BUY, 1, 110), "OrderAccepted", "Trade", "BookExecute")  # 3: last = 110, band 99..121
    expect(h.order(1, BUY, 1, 98), reject(R.PriceBand))
    expect(h.order(1, BUY, 1, 121), "OrderAccepted", "BookAdd")  # 4
    # a replace: the band applies to a new price only
    expect(h.replace(1, 1, 2, 90), ("OrderReplaced", {"orderId": 1}), ("BookReplace", {"price": 90}))  # same price
    expect(h.replace(1, 1, 2, 95), ("CancelRejected", {"reason": R.PriceBand, "refTemplateId": 3}))
    expect(h.replace(1, 1, 2, 99), ("OrderReplaced", {"orderId": 1}), ("BookReplace", {"price": 99}))
    # a market order's protection is clipped to the band: asks at 121 (in band) and 125 (out)
    h.order(2, SELL, 1, 121)  # 5: trades with 4 at 121 (last 121: band 109..133)
    h.order(2, SELL, 1, 130)  # 6
    h.order(2, SELL, 1, 133)  # 7
    h.send(h.m.instrument(2))
    h.send(h.m.limits(2, band_ppm=20_000))  # ref 100: band 98..102
    h.order(2, SELL, 1, 102, instrument=2)  # 8
    h.order(2, SELL, 1, 103, instrument=2)  # 9 is out of band: rejected
    expect(h.order(1, BUY, 3, ord_type=MARKET, tif=IOC, instrument=2),
           ("OrderAccepted", {"orderId": 9}), ("Trade", {"price": 102, "qty": 1}), "BookExecute",
           ("OrderCanceled", {"orderId": 9, "reason": C.MarketRemainder, "canceledQty": 2}))


def test_market_protection_clipped_to_band():
    h = H(instruments=False)
    h.send(h.m.instrument(1))
    h.send(h.m.limits(1, band_ppm=100_000))  # band 90..110
    for a in (1, 2):
        h.send(h.m.account(a))
    h.order(2, SELL, 1, 108)  # 1
    h.order(2, SELL, 1, 110)  # 2
    expect(h.order(1, BUY, 1, 100), "OrderAccepted", "BookAdd")  # 3, so the band stays at ref 100
    # protection 5 ticks past 108 = 113, clipped to 110: both asks trade (last 108, then 110)
    expect(h.order(1, BUY, 5, ord_type=MARKET),
           ("OrderAccepted", {"orderId": 4}), ("Trade", {"price": 108}), "BookExecute",
           ("Trade", {"price": 110}), "BookExecute",
           ("OrderCanceled", {"orderId": 4, "reason": C.MarketRemainder, "canceledQty": 3}))
    h.order(2, SELL, 1, 112)  # 5: last 110, band 99..121
    h.order(2, SELL, 1, 114)  # 6
    h.send(h.m.instrument(2))
    h.send(h.m.limits(2, band_ppm=10_000))  # band 99..101
    h.order(2, SELL, 1, 101, instrument=2)  # 7
    h.order(2, SELL, 1, 101, instrument=2)  # 8
    expect(h.order(1, BUY, 5, ord_type=MARKET, instrument=2),
           ("OrderAccepted", {"orderId": 9}), ("Trade", {"price": 101}), "BookExecute",
           ("Trade", {"price": 101}), "BookExecute",
           ("OrderCanceled", {"orderId": 9, "reason": C.MarketRemainder, "canceledQty": 3}))
    h.order(2, SELL, 1, 101, instrument=2)  # 10: last 101, band 100..102
    h.order(2, SELL, 1, 102, instrument=2)  # 11
    h.order(1, BUY, 1, 100, instrument=2)  # 12
    # a sell market: best bid 100, protection down to 95, clipped to the band's 100
    expect(h.order(1, SELL, 2, ord_type=MARKET, instrument=2),
           ("OrderAccepted", {"orderId": 13}), ("Trade", {"price": 100, "qty": 1}), "BookExecute",
           ("OrderCanceled", {"orderId": 13, "reason": C.MarketRemainder, "canceledQty": 1}))


def test_max_notional():
    h = H(instruments=False)
    h.send(h.m.instrument(1, lot=2, min_qty=2))
    h.send(h.m.limits(1, max_notional=500, divisor=2))  # price * qty / 2 <= 500 (lot 2: exact)
    for a in (1, 2):
        h.send(h.m.account(a))
    expect(h.order(1, BUY, 10, 100), "OrderAccepted", "BookAdd")  # 1: 500, not above
    expect(h.order(1, BUY, 12, 83), "OrderAccepted", "BookAdd")  # 2: 498
    expect(h.order(1, BUY, 10, 101), reject(R.MaxNotional))  # 505
    expect(h.order(1, BUY, 10, ord_type=STOP, stop=120), reject(R.MaxNotional))  # at the stop price: 600
    expect(h.order(1, BUY, 8, ord_type=STOP, stop=120), "OrderAccepted")  # 3: 480
    # market: at the protection price (best ask + 5 ticks); no ask: not checked
    expect(h.order(2, BUY, 20, ord_type=MARKET), ("OrderAccepted", {"orderId": 4}),
           ("OrderCanceled", {"orderId": 4, "reason": C.MarketRemainder}))
    h.order(2, SELL, 2, 105)  # 5
    expect(h.order(1, BUY, 10, ord_type=MARKET), reject(R.MaxNotional))  # 110 * 10 / 2 = 550
    expect(h.order(1, BUY, 8, ord_type=MARKET), "OrderAccepted", "Trade", "BookExecute", "OrderCanceled")
    expect(h.replace(1, 1, 10, 101), ("CancelRejected", {"reason": R.MaxNotional, "refTemplateId": 3}))
    expect(h.replace(1, 1, 8, 101), ("OrderReplaced", {"orderId": 1}), "BookReplace")


def test_max_open_orders():
    h = H(instruments=False)
    h.send(h.m.instrument(1))
    h.send(h.m.account(1, max_open=2))
    h.send(h.m.account(2))
    expect(h.order(1, BUY, 1, 90), "OrderAccepted", "BookAdd")  # 1
    expect(h.order(1, BUY, 1, ord_type=STOP, stop=120), "OrderAccepted")  # 2: a pending stop is working
    expect(h.order(1, BUY, 1, 91), reject(R.MaxOpenOrders))
    expect(h.order(1, BUY, 1, 91, tif=IOC), reject(R.MaxOpenOrders))  # even one that would not rest
    h.cancel(1, 2)
    expect(h.order(1, BUY, 1, 91), "OrderAccepted", "BookAdd")  # 3
    h.order(2, SELL, 1, 90)  # 4: trades with order 3 (the best bid, 91): account 1 has one left
    expect(h.order(1, BUY, 1, 92), "OrderAccepted", "BookAdd")  # 5


def test_pre_trade_checks_sit_between_capacity_and_post_only():
    h = H(instruments=False, max_orders=2)
    h.send(h.m.instrument(1))
    h.send(h.m.limits(1, band_ppm=100_000, max_notional=1000))
    h.send(h.m.account(1, max_open=1))
    h.send(h.m.account(2))
    h.order(2, SELL, 1, 100)  # 1
    expect(h.order(1, BUY, 20, 111, post_only=1), reject(R.PriceBand))  # before PostOnlyWouldTrade
    expect(h.order(1, BUY, 20, 100, post_only=1), reject(R.MaxNotional))  # notional first, then open orders
    expect(h.order(1, BUY, 2, 95), "OrderAccepted", "BookAdd")  # 2
    expect(h.order(1, BUY, 1, 100, post_only=1), reject(R.BookFull))  # capacity (step 8) first
    h.cancel(2, 1)
    expect(h.order(1, BUY, 1, 111), reject(R.PriceBand))
    expect(h.order(1, BUY, 1, 96), reject(R.MaxOpenOrders))
    expect(h.order(2, BUY, 20, 100, tif=FOK), reject(R.MaxNotional))  # before FokUnfillable


def test_max_order_qty():
    """docs/risk.md pre-trade check 4: first of the pre-trade checks; replaces too."""
    h = H(instruments=False)
    h.send(h.m.instrument(1))
    h.send(h.m.account(1, max_open=1))
    h.send(h.m.account(2))
    expect(h.limits(1, max_order_qty=10, band_ppm=100_000, max_notional=999), limits_ok())  # band 90..110
    expect(h.order(1, BUY, 11, 100), reject(R.MaxOrderQty))
    expect(h.order(1, BUY, 11, 200, post_only=1), reject(R.PriceOutOfRange))  # after the engine's checks
    expect(h.order(1, BUY, 11, 120), reject(R.MaxOrderQty))  # before PriceBand
    expect(h.order(1, BUY, 11, ord_type=MARKET), reject(R.MaxOrderQty))  # whatever the type, book or not
    expect(h.order(1, BUY, 11, ord_type=STOP, stop=105), reject(R.MaxOrderQty))
    expect(h.order(1, BUY, 10, 120), reject(R.PriceBand))
    expect(h.order(1, BUY, 10, 100), reject(R.MaxNotional))  # 1000 > 999
    expect(h.order(1, BUY, 5, 100), "OrderAccepted", "BookAdd")  # 1
    expect(h.order(1, BUY, 11, 100), reject(R.MaxOrderQty))  # before MaxOpenOrders
    expect(h.order(1, BUY, 1, 100), reject(R.MaxOpenOrders))
    # a replace: after InvalidDisplayQty, before PriceBand (even at a new price out of the band)
    expect(h.replace(1, 1, 11, 100, display=12), ("CancelRejected", {"reason": R.InvalidDisplayQty}))
    expect(h.replace(1, 1, 11, 120), ("CancelRejected", {"reason": R.MaxOrderQty, "refTemplateId": 3}))
    expect(h.replace(1, 1, 11, 100), ("CancelRejected", {"reason": R.MaxOrderQty}))
    expect(h.replace(1, 1, 5, 120), ("CancelRejected", {"reason": R.PriceBand}))
    expect(h.replace(1, 1, 10, 95, cl=9), ("OrderReplaced", {"qty": 10}), ("BookReplace", {"price": 95, "qty": 10}))
    # a new limit applies to new orders and replaces only; 0 lifts it
    expect(h.limits(1, max_order_qty=3), limits_ok())
    expect(h.order(2, SELL, 4, 95), reject(R.MaxOrderQty))
    expect(h.order(2, SELL, 3, 95), "OrderAccepted", ("Trade", {"qty": 3, "makerClOrdId": 9}), "BookExecute")
    expect(h.replace(1, 1, 4, 95), ("CancelRejected", {"reason": R.MaxOrderQty}))  # 7 resting: left alone
    expect(h.limits(1), limits_ok())
    expect(h.order(2, SELL, 1000, 100), "OrderAccepted", "BookAdd")


def test_reduce_only():
    """docs/risk.md pre-trade check 5: reduce-only is for perpetuals (InvalidFlags on spot, with
    the other flag values: docs/engine.md step 2); on a perpetual it must reduce the position."""
    h = H()
    h.send(h.m.instrument(2, kind=PERPETUAL, max_qty=10**6))
    h.send(h.m.limits(2, max_position=10))
    o = h.order
    expect(o(1, BUY, 1, 100, reduce_only=1), reject(R.InvalidFlags))
    expect(o(1, BUY, 1, 0, reduce_only=1, ord_type=STOP, stop=105), reject(R.InvalidFlags))
    expect(o(1, BUY, 1, 200, reduce_only=1), reject(R.InvalidFlags))  # before the price checks
    expect(o(1, BUY, 0, 100, reduce_only=1, stp=6), reject(R.InvalidFlags))  # before InvalidStpMode
    expect(o(1, 3, 1, 100, reduce_only=1, tif=9), reject(R.InvalidSide))  # after side, type, time in force
    expect(o(1, BUY, 1, 100, reduce_only=1, tif=9), reject(R.InvalidTimeInForce))
    expect(o(1, BUY, 1, 100, reduce_only=2, instrument=2), reject(R.InvalidFlags))  # not 0/1: step 2
    # no position: nothing to reduce
    expect(o(1, BUY, 1, 100, reduce_only=1, instrument=2), reject(R.ReduceOnlyWouldIncrease))
    expect(o(1, SELL, 1, 100, reduce_only=1, instrument=2), reject(R.ReduceOnlyWouldIncrease))
    o(2, SELL, 4, 100, instrument=2)  # 1
    expect(o(1, BUY, 4, 100, instrument=2), ("OrderAccepted", {"orderId": 2}), "Trade", "BookExecute")  # long 4
    expect(o(1, BUY, 1, 99, reduce_only=1, instrument=2), reject(R.ReduceOnlyWouldIncrease))  # same side
    expect(o(1, SELL, 5, 101, reduce_only=1, instrument=2), reject(R.ReduceOnlyWouldIncrease))  # more than 4
    expect(o(2, SELL, 1, 101, reduce_only=1, instrument=2), reject(R.ReduceOnlyWouldIncrease))  # 2 is short
    expect(o(2, BUY, 5, 99, reduce_only=1, instrument=2), reject(R.ReduceOnlyWouldIncrease))
    # the position limit: with every open order filled; reduce-only orders are not checked
    expect(o(1, BUY, 7, 90, instrument=2), reject(R.PositionLimit))  # 4 + 7 > 10
    expect(o(1, BUY, 6, 90, instrument=2), ("OrderAccepted", {"orderId": 3}), "BookAdd")  # 4 + 6
    expect(o(1, BUY, 1, 90, instrument=2), reject(R.PositionLimit))
    expect(o(1, SELL, 15, 110, instrument=2), reject(R.PositionLimit))  # 4 - 15 = -11
    expect(o(1, SELL, 14, 110, instrument=2), ("OrderAccepted", {"orderId": 4}), "BookAdd")  # 4 - 14 = -10
    expect(o(1, SELL, 4, 0, ord_type=STOP, stop=95, reduce_only=1, instrument=2),
           ("OrderAccepted", {"orderId": 5, "reduceOnly": 1}))
    expect(o(2, BUY, 4, 0, reduce_only=1, ord_type=STOP, stop=120, instrument=2),
           ("OrderAccepted", {"orderId": 6, "reduceOnly": 1}))  # 2 is short 4
    # a replace that grows the open quantity is checked too (one that does not is not)
    expect(h.replace(1, 3, 7, 90, instrument=2), ("CancelRejected", {"reason": R.PositionLimit, "refTemplateId": 3}))
    expect(h.replace(1, 3, 6, 89, instrument=2), ("OrderReplaced", {"orderId": 3}), "BookReplace")
    expect(h.replace(1, 4, 14, 111, instrument=2), ("OrderReplaced", {"orderId": 4}), "BookReplace")
    expect(h.replace(1, 4, 15, 111, instrument=2), ("CancelRejected", {"reason": R.PositionLimit}))
    # the overflow cap: 2**56 // top, with no maxPosition (top of the window: 149)
    expect(h.limits(2), limits_ok(2))
    expect(o(3, BUY, 2**56 // 149 + 1, 60, instrument=2), reject(R.QtyOutOfRange))  # maxQty first
    h.send(h.m.instrument(3, kind=PERPETUAL, max_qty=2**57 // 149))
    expect(o(3, BUY, 2**56 // 149 + 1, 60, instrument=3), reject(R.PositionLimit))
    expect(o(3, SELL, 2**56 // 149 + 1, 140, instrument=3), reject(R.PositionLimit))


def test_spot_buys_never_trade_above_their_hold_price():
    """docs/risk.md "Spot holds": a Stop buy holds at its stop price + the protection (5 ticks
    here) and its execution is capped there; a Market buy holds at its protection price at
    arrival, so a queued one is capped by the book it arrived to (and trades nothing when
    the ask side was empty).  Sells and perpetuals are not capped."""
    h = H()
    h.order(2, SELL, 1, 101)  # 1
    h.order(2, SELL, 1, 104)  # 2
    h.order(2, SELL, 5, 107)  # 3
    expect(h.order(1, BUY, 5, 0, ord_type=STOP, stop=101), ("OrderAccepted", {"orderId": 4}))  # holds at 106
    # the trigger: best ask 104 + 5 = 109, capped at 106: 107 is out of reach
    expect(h.order(3, BUY, 1, 101), ("OrderAccepted", {"orderId": 5}), ("Trade", {"price": 101}), "BookExecute",
           ("StopTriggered", {"orderId": 4, "triggerPrice": 101}), ("Trade", {"price": 104, "qty": 1}),
           "BookExecute", ("OrderCanceled", {"orderId": 4, "reason": C.MarketRemainder, "canceledQty": 4}))
    # a sell stop has no such floor: it trades at 90, below its stop price less 5 ticks
    h.order(3, BUY, 1, 95)  # 6
    h.order(3, BUY, 3, 90)  # 7
    expect(h.order(1, SELL, 4, 0, ord_type=STOP, stop=100), ("OrderAccepted", {"orderId": 8}))
    expect(h.order(2, SELL, 1, 95), ("OrderAccepted", {"orderId": 9}), ("Trade", {"price": 95}), "BookExecute",
           ("StopTriggered", {"orderId": 8, "triggerPrice": 95}), ("Trade", {"price": 90, "qty": 3}), "BookExecute",
           ("OrderCanceled", {"orderId": 8, "reason": C.MarketRemainder, "canceledQty": 1}))
    # queued market buys
    h.send(h.m.instrument(2, policy=QUEUE))
    h.order(2, SELL, 1, 100, instrument=2)  # 10
    h.status(2, HALTED)
    h.order(2, SELL, 2, 106, instrument=2)  # 11: queued
    h.order(2, SELL, 1, 104, instrument=2)  # 12: queued
    expect(h.order(1, BUY, 2, 0, ord_type=MARKET, instrument=2), ("OrderAccepted", {"orderId": 13}))  # holds at 105
    h.cancel(2, 10, instrument=2)
    expect(h.order(3, BUY, 1, 0, ord_type=MARKET, instrument=2), ("OrderAccepted", {"orderId": 14}))  # no ask
    expect(h.status(2, TRADING), "AdminResult", "InstrumentStatus",
           ("BookAdd", {"orderId": 11, "price": 106}), ("BookAdd", {"orderId": 12, "price": 104}),
           # 13: best ask 104, protection 109, capped at 105
           ("Trade", {"takerOrderId": 13, "price": 104}), "BookExecute",
           ("OrderCanceled", {"orderId": 13, "reason": C.MarketRemainder, "canceledQty": 1}),
           ("OrderCanceled", {"orderId": 14, "reason": C.MarketRemainder, "canceledQty": 1}))  # it holds nothing
    # a perpetual's Stop buy is not capped (it holds no money; margin is not a budget)
    h.send(h.m.instrument(3, kind=PERPETUAL))
    h.order(2, SELL, 1, 101, instrument=3)  # 15
    h.order(2, SELL, 1, 104, instrument=3)  # 16
    h.order(2, SELL, 1, 107, instrument=3)  # 17
    expect(h.order(1, BUY, 2, 0, ord_type=STOP, stop=101, instrument=3), ("OrderAccepted", {"orderId": 18}))
    expect(h.order(3, BUY, 1, 101, instrument=3), "OrderAccepted", "Trade", "BookExecute", "StopTriggered",
           ("Trade", {"price": 104}), "BookExecute", ("Trade", {"price": 107}), "BookExecute")


def test_fok_stop_buy_fillability_is_not_capped_at_its_hold_price():
    """A spot FOK Stop buy is checked for fillability at arrival from the book as it is, up
    to the best ask + protection, not up to its hold price (stop + protection), which caps
    only its execution (the engine's reading; docs/risk.md leaves it open)."""
    h = H()
    h.order(2, SELL, 1, 100)  # 1
    h.order(1, BUY, 1, 100)  # 2: last 100
    h.order(2, SELL, 2, 105)  # 3
    h.order(2, SELL, 2, 108)  # 4
    # holds at 102 + 5 = 107, yet fillable: 4 reachable up to 105 + 5 = 110
    expect(h.order(1, BUY, 4, 0, ord_type=STOP, stop=102, tif=FOK), ("OrderAccepted", {"orderId": 5}))
    expect(h.order(3, BUY, 1, 105), ("OrderAccepted", {"orderId": 6}), ("Trade", {"price": 105}), "BookExecute",
           ("StopTriggered", {"orderId": 5, "triggerPrice": 105}), ("Trade", {"price": 105, "qty": 1}),
           "BookExecute", ("OrderCanceled", {"orderId": 5, "reason": C.MarketRemainder, "canceledQty": 3}))


def test_messages_the_engine_does_not_take():
    h = H()
    good = h.m.order(1, BUY, 1, 100)
    body = good[HEADER.size:]
    stamp = raw_decode(good)[2]
    for header, tid in [((82, 1, 7002, 1), 1), ((82, 1, 7001, 2), 1),
                        ((89, 100, 7001, 1), 100), ((82, 999, 7001, 1), 999)]:
        ev = h.send(HEADER.pack(*header) + body)
        expect(ev, ("OrderRejected", {"reason": R.UnsupportedMessage, "refTemplateId": tid, "clOrdId": 0,
                                      "account": 0, "instrument": 0, "sessionId": 0}))
        assert (ev[0][1]["seq"], ev[0][1]["timestampNs"], ev[0][1]["ingressNs"]) == stamp
    expect(h.send(good), ("OrderAccepted", {"orderId": 1}), "BookAdd")  # order ids untouched


# -- new order checks -----------------------------------------------------------------------


def test_new_order_checks_in_order():
    h = H()
    h.send(h.m.instrument(2, lot=5, min_qty=10, max_qty=50, tick=2))
    o = h.order
    expect(o(1, BUY, 1, 100, instrument=3), reject(R.UnknownInstrument))
    expect(o(1, BUY, 1, 100, instrument=99), reject(R.UnknownInstrument))
    expect(o(5, BUY, 1, 100), reject(R.UnknownAccount))
    expect(o(5, 3, 1, 100, instrument=3), reject(R.UnknownInstrument))  # 1 before 2
    expect(o(1, 0, 1, 100), reject(R.InvalidSide))
    expect(o(1, 3, 1, 100, ord_type=9), reject(R.InvalidSide))
    expect(o(1, BUY, 1, 100, ord_type=5, tif=2), reject(R.InvalidOrdType))
    expect(o(1, BUY, 1, 100, tif=2, post_only=2), reject(R.InvalidTimeInForce))
    expect(o(1, BUY, 1, 100, tif=5), reject(R.InvalidTimeInForce))
    expect(o(1, BUY, 1, 100, post_only=2, stp=7), reject(R.InvalidFlags))
    expect(o(1, BUY, 1, 100, reduce_only=3), reject(R.InvalidFlags))
    expect(o(1, BUY, 1, 100, stp=6), reject(R.InvalidStpMode))
    expect(o(1, BUY, 0, 100, stp=6), reject(R.InvalidStpMode))  # 2 before 4
    expect(o(1, BUY, 0, 100), reject(R.QtyOutOfRange))
    expect(o(1, BUY, -5, 100, instrument=2), reject(R.QtyOutOfRange))
    expect(o(1, BUY, 12, 100, instrument=2), reject(R.BadLot))
    expect(o(1, BUY, 5, 100, instrument=2), reject(R.QtyOutOfRange))
    expect(o(1, BUY, 55, 100, instrument=2), reject(R.QtyOutOfRange))
    expect(o(1, BUY, 55, 101, instrument=2), reject(R.QtyOutOfRange))  # 4 before 5
    expect(o(1, BUY, 10, 0), reject(R.PriceOutOfRange))
    expect(o(1, BUY, 10, -2, instrument=2), reject(R.PriceOutOfRange))
    expect(o(1, BUY, 10, 101, instrument=2), reject(R.BadTick))
    expect(o(1, BUY, 10, 150), reject(R.PriceOutOfRange))
    expect(o(1, BUY, 10, 49), reject(R.PriceOutOfRange))
    expect(o(1, BUY, 10, 100, ord_type=MARKET), reject(R.PriceOutOfRange))
    expect(o(1, BUY, 10, 1, ord_type=STOP, stop=101), reject(R.PriceOutOfRange))
    expect(o(1, BUY, 10, 0, ord_type=STOP, stop=0), reject(R.InvalidStopPrice))
    expect(o(1, BUY, 10, 0, ord_type=STOP, stop=150), reject(R.InvalidStopPrice))
    expect(o(1, BUY, 10, 0, ord_type=STOP, stop=-1), reject(R.InvalidStopPrice))
    expect(o(1, BUY, 10, 100, ord_type=STOP_LIMIT, stop=101, instrument=2), reject(R.InvalidStopPrice))
    expect(o(1, BUY, 10, 100, stop=101), reject(R.InvalidStopPrice))
    expect(o(1, BUY, 10, 0, ord_type=MARKET, stop=101), reject(R.InvalidStopPrice))
    expect(o(1, BUY, 10, 100, post_only=1, tif=IOC), reject(R.InvalidFlags))
    expect(o(1, BUY, 10, 100, post_only=1, tif=FOK), reject(R.InvalidFlags))
    expect(o(1, BUY, 10, 0, post_only=1, ord_type=MARKET), reject(R.InvalidFlags))
    expect(o(1, BUY, 10, 100, post_only=1, ord_type=STOP_LIMIT, stop=101), reject(R.InvalidFlags))
    expect(o(1, BUY, 10, 100, post_only=1, tif=IOC, display=-1), reject(R.InvalidFlags))  # flags before display
    expect(o(1, BUY, 10, 100, display=-1), reject(R.InvalidDisplayQty))
    expect(o(1, BUY, 10, 100, display=11), reject(R.InvalidDisplayQty))
    expect(o(1, BUY, 10, 100, display=3, tif=IOC), reject(R.InvalidDisplayQty))
    expect(o(1, BUY, 10, 0, display=3, ord_type=MARKET), reject(R.InvalidDisplayQty))
    expect(o(1, BUY, 10, 0, display=3, ord_type=STOP, stop=101), reject(R.InvalidDisplayQty))
    expect(o(1, BUY, 20, 100, display=7, instrument=2), reject(R.InvalidDisplayQty))
    expect(o(1, BUY, 20, 100, display=5, instrument=2), ("OrderAccepted", {"orderId": 1, "displayQty": 5}),
           ("BookAdd", {"qty": 5}))
    expect(o(1, BUY, 10, 100, display=10, ord_type=STOP_LIMIT, stop=101, tif=GTC), "OrderAccepted")
    expect(o(1, BUY, 10, 100, display=10, post_only=1, tif=GTC), "OrderAccepted", "BookAdd")


def test_order_accepted_echoes_the_order():
    h = H()
    h.send(h.m.instrument(2, kind=PERPETUAL))  # reduce-only is for perpetuals: account 2 goes long 7
    h.order(1, SELL, 7, 100, instrument=2)  # 1
    expect(h.order(2, BUY, 7, 100, instrument=2), ("OrderAccepted", {"orderId": 2}), "Trade", "BookExecute")
    buf = h.m.order(2, SELL, 7, 0, ord_type=STOP, stop=90, tif=GTC, reduce_only=1, stp=S.CancelBoth,
                    cl=77, session=9, instrument=2)
    ev = h.send(buf)
    sent = raw_decode(buf)[1]
    want = {k: sent[k] for k in ("seq", "timestampNs", "ingressNs", "clOrdId", "price", "qty", "displayQty",
                                 "stopPrice", "sessionId", "account", "instrument", "side", "ordType",
                                 "timeInForce", "postOnly", "reduceOnly")}
    assert ev == [("OrderAccepted", {**want, "orderId": 3})]


def test_capacity():
    h = H(max_orders=3, max_stops=1)
    expect(h.order(1, BUY, 1, 100), "OrderAccepted", "BookAdd")
    expect(h.order(1, BUY, 1, 0, ord_type=STOP, stop=101), "OrderAccepted")
    expect(h.order(1, SELL, 1, 90, ord_type=STOP_LIMIT, stop=90), reject(R.StopCapacity))
    expect(h.order(1, SELL, 1, 120), "OrderAccepted", "BookAdd")
    expect(h.order(2, SELL, 1, 0, ord_type=MARKET), reject(R.BookFull))  # even one that would not rest
    expect(h.order(2, SELL, 1, 0, ord_type=STOP, stop=90), reject(R.BookFull))  # BookFull first
    expect(h.cancel(1, 3), ("OrderCanceled", {"reason": C.User}), "BookDelete")
    expect(h.order(2, SELL, 1, 100, tif=IOC), ("OrderAccepted", {"orderId": 4}), "Trade", "BookExecute")
    expect(h.order(2, SELL, 1, 110), ("OrderAccepted", {"orderId": 5}), "BookAdd")


def test_post_only():
    h = H()
    h.order(1, SELL, 5, 101)
    h.order(2, BUY, 5, 99)
    expect(h.order(1, BUY, 1, 101, post_only=1), reject(R.PostOnlyWouldTrade))  # own orders included
    expect(h.order(3, BUY, 1, 102, post_only=1), reject(R.PostOnlyWouldTrade))
    expect(h.order(3, SELL, 1, 99, post_only=1), reject(R.PostOnlyWouldTrade))
    expect(h.order(3, BUY, 1, 100, post_only=1), "OrderAccepted", ("BookAdd", {"price": 100}))
    expect(h.order(3, SELL, 1, 100, post_only=1), reject(R.PostOnlyWouldTrade))


# -- matching -------------------------------------------------------------------------------


def test_price_time_priority_and_trade_fields():
    h = H()
    h.order(1, SELL, 5, 101, cl=11, session=21)  # 1
    h.order(2, SELL, 3, 100, cl=12, session=22)  # 2
    h.order(1, SELL, 4, 100, cl=13, session=21)  # 3
    h.order(2, SELL, 2, 102, cl=14, session=22)  # 4
    ev = h.order(3, BUY, 10, 101, cl=15, session=23)
    expect(ev, ("OrderAccepted", {"orderId": 5}),
           ("Trade", {"tradeId": 1, "price": 100, "qty": 3, "makerOrderId": 2, "makerClOrdId": 12,
                      "makerLeavesQty": 0, "takerOrderId": 5, "takerClOrdId": 15, "takerLeavesQty": 7,
                      "instrument": 1, "makerAccount": 2, "makerSessionId": 22, "takerAccount": 3,
                      "takerSessionId": 23, "aggressorSide": BUY}),
           ("BookExecute", {"orderId": 2, "qty": 3, "price": 100, "tradeId": 1, "instrument": 1}),
           ("Trade", {"tradeId": 2, "price": 100, "qty": 4, "makerOrderId": 3, "takerLeavesQty": 3}),
           ("BookExecute", {"orderId": 3, "qty": 4}),
           ("Trade", {"tradeId": 3, "price": 101, "qty": 3, "makerOrderId": 1, "makerLeavesQty": 2,
                      "takerLeavesQty": 0}),
           ("BookExecute", {"orderId": 1, "qty": 3, "price": 101}))
    assert h.model.book(1)[SELL] == [(101, 1, 2), (102, 4, 2)]
    # a limit stops at its price and rests the rest
    expect(h.order(3, BUY, 5, 101), "OrderAccepted", ("Trade", {"qty": 2, "price": 101}), "BookExecute",
           ("BookAdd", {"orderId": 6, "price": 101, "qty": 3, "side": BUY}))
    # a sell walks the bids downwards
    h.order(1, BUY, 2, 99)  # 7
    expect(h.order(2, SELL, 10, 99, tif=IOC), "OrderAccepted",
           ("Trade", {"price": 101, "qty": 3, "makerOrderId": 6, "aggressorSide": SELL}), "BookExecute",
           ("Trade", {"price": 99, "qty": 2, "makerOrderId": 7}), "BookExecute",
           ("OrderCanceled", {"orderId": 8, "canceledQty": 5, "reason": C.IocRemainder}))


def test_market_orders_and_protection():
    h = H(market_protection_ticks=2)
    expect(h.order(1, BUY, 5, 0, ord_type=MARKET),  # empty book
           "OrderAccepted", ("OrderCanceled", {"canceledQty": 5, "reason": C.MarketRemainder}))
    h.order(2, SELL, 1, 100)
    h.order(2, SELL, 1, 102)
    h.order(2, SELL, 1, 103)
    expect(h.order(1, BUY, 5, 0, ord_type=MARKET, tif=GTC), "OrderAccepted",
           ("Trade", {"price": 100}), "BookExecute", ("Trade", {"price": 102}), "BookExecute",
           ("OrderCanceled", {"canceledQty": 3, "reason": C.MarketRemainder}))
    # the limit is fixed at arrival: best bid 98 - 2 ticks = 96
    h.order(3, BUY, 1, 98)
    h.order(3, BUY, 1, 96)
    h.order(3, BUY, 1, 95)
    expect(h.order(1, SELL, 5, 0, ord_type=MARKET, tif=IOC), "OrderAccepted",
           ("Trade", {"price": 98}), "BookExecute", ("Trade", {"price": 96}), "BookExecute",
           ("OrderCanceled", {"canceledQty": 3, "reason": C.MarketRemainder}))


def test_market_protection_zero():
    h = H(market_protection_ticks=0)
    h.order(2, SELL, 1, 100)
    h.order(2, SELL, 1, 101)
    expect(h.order(1, BUY, 5, 0, ord_type=MARKET), "OrderAccepted", ("Trade", {"price": 100}), "BookExecute",
           ("OrderCanceled", {"canceledQty": 4, "reason": C.MarketRemainder}))


def test_fok():
    h = H()
    h.order(2, SELL, 3, 100)
    h.order(3, SELL, 3, 101)
    expect(h.order(1, BUY, 7, 101, tif=FOK), reject(R.FokUnfillable))
    expect(h.order(1, BUY, 6, 100, tif=FOK), reject(R.FokUnfillable))
    expect(h.order(1, BUY, 6, 0, ord_type=MARKET, tif=FOK), ("OrderAccepted", {"orderId": 3}),
           "Trade", "BookExecute", "Trade", "BookExecute")
    expect(h.order(1, BUY, 1, 0, ord_type=MARKET, tif=FOK), reject(R.FokUnfillable))  # empty ask side


def test_fok_and_stp():
    h = H()
    h.order(4, SELL, 2, 100)  # own (account 4: default CancelResting)
    h.order(2, SELL, 2, 100)
    # CancelResting: own skipped, 2 available
    expect(h.order(4, BUY, 3, 100, tif=FOK), reject(R.FokUnfillable))
    expect(h.order(4, BUY, 4, 100, tif=FOK, stp=S.Off), "OrderAccepted", "Trade", "BookExecute",
           "Trade", "BookExecute")
    h.order(4, SELL, 2, 100)  # 4
    h.order(2, SELL, 2, 100)  # 5
    # own order met first: unfillable for CancelAggressor / CancelBoth / DecrementBoth
    for mode in (S.CancelAggressor, S.CancelBoth, S.DecrementBoth):
        expect(h.order(4, BUY, 1, 100, tif=FOK, stp=mode), reject(R.FokUnfillable))
    expect(h.order(4, BUY, 2, 100, tif=FOK),  # CancelResting by default
           "OrderAccepted", ("OrderCanceled", {"orderId": 4, "reason": C.SelfTrade, "canceledQty": 2}),
           ("BookDelete", {"orderId": 4}), ("Trade", {"makerOrderId": 5}), "BookExecute")


def test_fok_follows_iceberg_refills():
    """Level 100: other's iceberg 1 shown (4 in all), then an own order: the refill moves the iceberg
    behind the own order, which a CancelAggressor FOK then meets."""
    h = H()
    h.order(2, SELL, 4, 100, display=1)
    h.order(1, SELL, 5, 100)
    expect(h.order(1, BUY, 2, 100, tif=FOK, stp=S.CancelAggressor), reject(R.FokUnfillable))
    expect(h.order(1, BUY, 1, 100, tif=FOK, stp=S.CancelAggressor), "OrderAccepted", "Trade", "BookExecute",
           ("BookAdd", {"orderId": 1, "qty": 1}))
    assert h.model.book(1)[SELL] == [(100, 2, 5), (100, 1, 1)]


def test_iceberg():
    h = H()
    expect(h.order(2, SELL, 10, 100, display=4), "OrderAccepted", ("BookAdd", {"qty": 4}))
    h.order(3, SELL, 2, 100)
    expect(h.order(1, BUY, 5, 100), "OrderAccepted",
           ("Trade", {"makerOrderId": 1, "qty": 4, "makerLeavesQty": 6, "takerLeavesQty": 1}),
           ("BookExecute", {"orderId": 1, "qty": 4}),
           ("BookAdd", {"orderId": 1, "qty": 4, "price": 100, "side": SELL}),  # refill, to the back
           ("Trade", {"makerOrderId": 2, "qty": 1, "makerLeavesQty": 1}), ("BookExecute", {"orderId": 2}))
    expect(h.order(1, BUY, 8, 100), "OrderAccepted",
           ("Trade", {"makerOrderId": 2, "qty": 1}), "BookExecute",
           ("Trade", {"makerOrderId": 1, "qty": 4, "makerLeavesQty": 2}), "BookExecute",
           ("BookAdd", {"orderId": 1, "qty": 2}),
           ("Trade", {"makerOrderId": 1, "qty": 2, "makerLeavesQty": 0, "takerLeavesQty": 1}),
           ("BookExecute", {"orderId": 1, "qty": 2}), ("BookAdd", {"orderId": 4, "qty": 1, "side": BUY}))
    # an aggressor's own split does not matter; its remainder rests with its display
    h.order(2, SELL, 2, 101)
    expect(h.order(1, BUY, 9, 101, display=3), "OrderAccepted",
           ("Trade", {"price": 101, "qty": 2, "takerLeavesQty": 7}), "BookExecute",
           ("BookAdd", {"qty": 3, "price": 101}))


# -- self-trade prevention ------------------------------------------------------------------


def stp_book(h: H) -> None:
    h.order(1, SELL, 3, 100)  # 1 own
    h.order(2, SELL, 3, 100)  # 2 other
    h.order(1, SELL, 3, 101)  # 3 own


def test_stp_off_trades_with_itself():
    h = H()
    stp_book(h)
    expect(h.order(1, BUY, 2, 100), "OrderAccepted", ("Trade", {"makerOrderId": 1, "takerAccount": 1,
                                                                "makerAccount": 1}), "BookExecute")


def test_stp_cancel_resting():
    h = H()
    stp_book(h)
    expect(h.order(1, BUY, 5, 101, stp=S.CancelResting), "OrderAccepted",
           ("OrderCanceled", {"orderId": 1, "canceledQty": 3, "reason": C.SelfTrade}), ("BookDelete", {"orderId": 1}),
           ("Trade", {"makerOrderId": 2, "qty": 3}), "BookExecute",
           ("OrderCanceled", {"orderId": 3, "canceledQty": 3, "reason": C.SelfTrade}), ("BookDelete", {"orderId": 3}),
           ("BookAdd", {"orderId": 4, "qty": 2, "price": 101}))


def test_stp_cancel_aggressor():
    h = H()
    stp_book(h)
    expect(h.order(1, BUY, 5, 101, stp=S.CancelAggressor), "OrderAccepted",
           ("OrderCanceled", {"orderId": 4, "canceledQty": 5, "reason": C.SelfTrade}))
    h2 = H()
    h2.order(2, SELL, 2, 100)
    h2.order(1, SELL, 2, 100)
    expect(h2.order(1, BUY, 5, 100, stp=S.CancelAggressor, tif=GTC), "OrderAccepted", ("Trade", {"qty": 2}),
           "BookExecute", ("OrderCanceled", {"orderId": 3, "canceledQty": 3, "reason": C.SelfTrade}))


def test_stp_cancel_both():
    h = H()
    stp_book(h)
    expect(h.order(1, BUY, 5, 101, stp=S.CancelBoth), "OrderAccepted",
           ("OrderCanceled", {"orderId": 1, "canceledQty": 3, "reason": C.SelfTrade}), ("BookDelete", {"orderId": 1}),
           ("OrderCanceled", {"orderId": 4, "canceledQty": 5, "reason": C.SelfTrade}))
    assert h.model.book(1)[SELL] == [(100, 2, 3), (101, 3, 3)]


def test_stp_account_default():
    h = H()
    h.order(4, SELL, 3, 100)
    expect(h.order(4, BUY, 1, 100), "OrderAccepted",  # account 4 defaults to CancelResting
           ("OrderCanceled", {"orderId": 1, "reason": C.SelfTrade}), "BookDelete", ("BookAdd", {"orderId": 2}))


def test_stp_decrement_both():
    h = H()
    h.order(1, SELL, 3, 100)  # 1
    h.order(2, SELL, 3, 100)  # 2
    h.order(1, SELL, 10, 101, display=4)  # 3: iceberg
    expect(h.order(1, BUY, 8, 101, stp=S.DecrementBoth), "OrderAccepted",
           ("OrderCanceled", {"orderId": 1, "canceledQty": 3, "reason": C.SelfTrade}), ("BookDelete", {"orderId": 1}),
           ("OrderCanceled", {"orderId": 4, "canceledQty": 3, "reason": C.SelfTrade}),
           ("Trade", {"makerOrderId": 2, "qty": 3, "takerLeavesQty": 2}), "BookExecute",
           # d = 2 from the iceberg's 4 shown
           ("OrderCanceled", {"orderId": 3, "canceledQty": 2, "reason": C.SelfTrade}),
           ("BookReduce", {"orderId": 3, "qty": 2}),
           ("OrderCanceled", {"orderId": 4, "canceledQty": 2, "reason": C.SelfTrade}))
    assert h.model.book(1)[SELL] == [(101, 3, 2)]
    # d = 5 > 2 shown: all shown removed, 3 from the reserve, then a refill of min(4, 3)
    expect(h.order(1, BUY, 5, 101, stp=S.DecrementBoth), "OrderAccepted",
           ("OrderCanceled", {"orderId": 3, "canceledQty": 5}), ("BookReduce", {"orderId": 3, "qty": 2}),
           ("BookAdd", {"orderId": 3, "qty": 3}), ("OrderCanceled", {"orderId": 5, "canceledQty": 5}))
    # the decremented order's total is now filled + leaves = 3: a replace to qty 3 keeps priority
    expect(h.replace(1, 3, 3, 101), ("OrderReplaced", {"qty": 3, "leavesQty": 3}))
    expect(h.replace(1, 3, 4, 101), ("OrderReplaced", {"qty": 4, "leavesQty": 4}),
           ("BookReplace", {"qty": 4}))


# -- stops ----------------------------------------------------------------------------------


def test_stops_trigger_in_order_id_and_cascade():
    h = H()
    h.order(2, SELL, 1, 100)  # 1
    h.order(2, SELL, 1, 101)  # 2
    h.order(2, SELL, 5, 103)  # 3
    expect(h.order(1, BUY, 2, 0, ord_type=STOP, stop=101), ("OrderAccepted", {"orderId": 4}))
    expect(h.order(1, BUY, 1, 101, ord_type=STOP_LIMIT, stop=100, tif=GTC), ("OrderAccepted", {"orderId": 5}))
    expect(h.order(3, BUY, 1, 0, ord_type=STOP, stop=103), ("OrderAccepted", {"orderId": 6}))
    expect(h.order(3, BUY, 1, 100), ("OrderAccepted", {"orderId": 7}),
           ("Trade", {"price": 100, "makerOrderId": 1}), "BookExecute",
           ("StopTriggered", {"orderId": 5, "stopPrice": 100, "triggerPrice": 100, "account": 1}),
           ("Trade", {"price": 101, "makerOrderId": 2, "takerOrderId": 5}), "BookExecute",
           ("StopTriggered", {"orderId": 4, "stopPrice": 101, "triggerPrice": 101}),
           ("Trade", {"price": 103, "qty": 2, "takerOrderId": 4}), "BookExecute",
           ("StopTriggered", {"orderId": 6, "triggerPrice": 103}),
           ("Trade", {"price": 103, "qty": 1, "takerOrderId": 6, "makerLeavesQty": 2}), "BookExecute")
    assert h.model.stop_slots == 0


def test_stop_limit_rests_and_stop_price_rules():
    h = H()
    h.order(2, SELL, 1, 100)
    h.order(1, BUY, 1, 100)  # last = 100
    expect(h.order(1, BUY, 1, 0, ord_type=STOP, stop=100), reject(R.InvalidStopPrice))
    expect(h.order(1, SELL, 1, 0, ord_type=STOP, stop=100), reject(R.InvalidStopPrice))
    expect(h.order(1, SELL, 1, 0, ord_type=STOP, stop=101), reject(R.InvalidStopPrice))
    expect(h.order(1, SELL, 3, 98, ord_type=STOP_LIMIT, stop=99, tif=DAY, display=1), "OrderAccepted")  # 3
    h.order(3, BUY, 1, 99)  # 4
    expect(h.order(2, SELL, 1, 99), "OrderAccepted", "Trade", "BookExecute",
           ("StopTriggered", {"orderId": 3, "triggerPrice": 99}),
           ("BookAdd", {"orderId": 3, "price": 98, "qty": 1, "side": SELL}))
    # a triggered stop that rested is a resting order: replace works
    expect(h.replace(1, 3, 3, 97), ("OrderReplaced", {"leavesQty": 3}), ("BookReplace", {"price": 97, "qty": 3}))


def test_stop_iok_and_empty_book_remainders():
    h = H()
    h.order(2, SELL, 1, 100)
    h.order(1, BUY, 2, 0, ord_type=STOP, stop=100)  # 2
    h.order(1, BUY, 2, 100, ord_type=STOP_LIMIT, stop=100, tif=IOC)  # 3
    expect(h.order(3, BUY, 1, 100), "OrderAccepted", "Trade", "BookExecute",
           ("StopTriggered", {"orderId": 2}), ("OrderCanceled", {"orderId": 2, "reason": C.MarketRemainder,
                                                                 "canceledQty": 2}),
           ("StopTriggered", {"orderId": 3}), ("OrderCanceled", {"orderId": 3, "reason": C.IocRemainder}))


# -- cancel ---------------------------------------------------------------------------------


def test_cancel():
    h = H()
    h.send(h.m.instrument(2))
    h.order(1, BUY, 5, 99, cl=51, session=61)  # 1
    h.order(1, BUY, 5, 0, ord_type=STOP, stop=110)  # 2
    expect(h.cancel(1, 0), ("CancelRejected", {"reason": R.UnknownOrder, "refTemplateId": 2, "orderId": 0}))
    expect(h.cancel(1, 9), ("CancelRejected", {"reason": R.UnknownOrder}))
    expect(h.cancel(1, 1, instrument=2), ("CancelRejected", {"reason": R.UnknownOrder}))
    expect(h.cancel(2, 1, cl=71, orig=51, session=62),
           ("CancelRejected", {"reason": R.NotYourOrder, "orderId": 1, "clOrdId": 71, "origClOrdId": 51,
                               "sessionId": 62, "account": 2, "instrument": 1, "refTemplateId": 2}))
    expect(h.cancel(7, 1), ("CancelRejected", {"reason": R.NotYourOrder}))  # no such account
    expect(h.cancel(1, 1, cl=72, session=63),
           ("OrderCanceled", {"orderId": 1, "clOrdId": 51, "sessionId": 61, "canceledQty": 5, "reason": C.User}),
           ("BookDelete", {"orderId": 1, "instrument": 1}))
    expect(h.cancel(1, 1), ("CancelRejected", {"reason": R.UnknownOrder}))
    expect(h.cancel(1, 2), ("OrderCanceled", {"orderId": 2, "reason": C.User}))
    assert h.model.stop_slots == 0


# -- replace --------------------------------------------------------------------------------


def test_replace_keeps_or_loses_priority():
    h = H()
    h.order(1, SELL, 10, 101, cl=51)  # 1
    h.order(2, SELL, 5, 101)  # 2
    expect(h.replace(1, 1, 8, 101, cl=52, orig=51, session=66),
           ("OrderReplaced", {"orderId": 1, "clOrdId": 52, "origClOrdId": 51, "price": 101, "qty": 8,
                              "leavesQty": 8, "displayQty": 0, "sessionId": 66, "account": 1, "instrument": 1}),
           ("BookReduce", {"orderId": 1, "qty": 2}))
    assert h.model.book(1)[SELL] == [(101, 1, 8), (101, 2, 5)]
    expect(h.replace(1, 1, 8, 101, cl=53), ("OrderReplaced", {"qty": 8}))  # nothing shrank
    h.order(3, BUY, 3, 101)  # fills 3 of order 1
    expect(h.cancel(1, 1), ("OrderCanceled", {"clOrdId": 53, "sessionId": 101, "canceledQty": 5}), "BookDelete")
    h.order(1, SELL, 10, 101)  # 4
    h.order(3, BUY, 4, 101)  # fills 4 of order 2... then 0 of 4
    expect(h.replace(1, 4, 4, 101), ("OrderReplaced", {"leavesQty": 4}), ("BookReduce", {"qty": 6}))
    expect(h.replace(1, 4, 12, 101), ("OrderReplaced", {"qty": 12, "leavesQty": 12}),
           ("BookReplace", {"orderId": 4, "price": 101, "qty": 12, "side": SELL}))
    assert h.model.book(1)[SELL] == [(101, 2, 1), (101, 4, 12)]
    expect(h.replace(1, 4, 12, 102, display=5), ("OrderReplaced", {"displayQty": 5}),
           ("BookReplace", {"price": 102, "qty": 5}))


def test_replace_after_fills_and_iceberg_display():
    h = H()
    h.order(1, SELL, 10, 101, display=4)  # 1
    h.order(2, BUY, 3, 101)  # filled 3, shows 1, leaves 7
    assert h.model.book(1)[SELL] == [(101, 1, 1)]
    expect(h.replace(1, 1, 3, 101), ("CancelRejected", {"reason": R.QtyOutOfRange, "refTemplateId": 3}))
    # keeps priority: displayed stays min(1, new shown) — never grows
    expect(h.replace(1, 1, 9, 101, display=4), ("OrderReplaced", {"leavesQty": 6}))
    expect(h.replace(1, 1, 9, 101), ("OrderReplaced", {"leavesQty": 6, "displayQty": 0}))
    assert h.model.book(1)[SELL] == [(101, 1, 1)]
    # displayQty 0 now: the refill shows the whole reserve
    expect(h.order(2, BUY, 1, 101), "OrderAccepted", ("Trade", {"makerLeavesQty": 5}), "BookExecute",
           ("BookAdd", {"orderId": 1, "qty": 5}))
    # loses priority: the new displayed quantity
    expect(h.replace(1, 1, 9, 102, display=2), ("OrderReplaced", {"leavesQty": 5}), ("BookReplace", {"qty": 2}))


def test_replace_that_crosses():
    h = H()
    h.order(2, BUY, 2, 99)  # 1
    h.order(3, BUY, 2, 98)  # 2
    h.order(1, SELL, 10, 101, cl=51)  # 3
    h.order(1, BUY, 1, 97, ord_type=STOP_LIMIT, stop=99, tif=GTC)  # 4: own stop (CancelResting n/a)
    h.order(2, SELL, 1, 0, ord_type=STOP, stop=99)  # 5
    expect(h.replace(1, 3, 10, 98, cl=52), ("OrderReplaced", {"price": 98, "leavesQty": 10, "clOrdId": 52}),
           ("BookDelete", {"orderId": 3}),
           ("Trade", {"price": 99, "qty": 2, "makerOrderId": 1, "takerOrderId": 3, "takerClOrdId": 52,
                      "takerLeavesQty": 8, "aggressorSide": SELL}), "BookExecute",
           ("Trade", {"price": 98, "qty": 2, "makerOrderId": 2, "takerLeavesQty": 6}), "BookExecute",
           ("BookAdd", {"orderId": 3, "price": 98, "qty": 6, "side": SELL}),
           ("StopTriggered", {"orderId": 5, "triggerPrice": 98}),
           ("OrderCanceled", {"orderId": 5, "reason": C.MarketRemainder}))
    # a post-only order that would cross is rejected
    h.order(2, BUY, 1, 90, post_only=1)  # 6
    expect(h.replace(2, 6, 1, 98), ("CancelRejected", {"reason": R.PostOnlyWouldTrade}))
    expect(h.replace(2, 6, 1, 97), "OrderReplaced", ("BookReplace", {"price": 97}))


def test_replace_rejects_in_order():
    h = H()
    h.send(h.m.instrument(2, lot=5, min_qty=5, max_qty=50, tick=2))
    h.order(1, BUY, 10, 100, instrument=2)  # 1
    h.order(1, BUY, 10, 0, instrument=2, ord_type=STOP, stop=110)  # 2
    r = lambda *a, **k: h.replace(*a, instrument=2, **k)  # noqa: E731
    expect(r(1, 9, 10, 100), ("CancelRejected", {"reason": R.UnknownOrder, "refTemplateId": 3, "orderId": 9}))
    expect(h.replace(1, 1, 10, 100), ("CancelRejected", {"reason": R.UnknownOrder}))  # other instrument
    expect(r(2, 1, 10, 100), ("CancelRejected", {"reason": R.NotYourOrder}))
    expect(r(1, 2, 11, 1), ("CancelRejected", {"reason": R.StopNotAllowed}))
    expect(r(1, 1, 11, 1), ("CancelRejected", {"reason": R.BadLot}))
    expect(r(1, 1, 0, 1), ("CancelRejected", {"reason": R.QtyOutOfRange}))
    expect(r(1, 1, -3, 1), ("CancelRejected", {"reason": R.QtyOutOfRange}))  # <= 0 before BadLot
    expect(r(1, 1, 55, 1), ("CancelRejected", {"reason": R.QtyOutOfRange}))
    expect(r(1, 1, 10, 0, display=3), ("CancelRejected", {"reason": R.PriceOutOfRange}))
    expect(r(1, 1, 10, 101, display=3), ("CancelRejected", {"reason": R.BadTick}))
    expect(r(1, 1, 10, 202, display=3), ("CancelRejected", {"reason": R.PriceOutOfRange}))
    expect(r(1, 1, 10, 100, display=3), ("CancelRejected", {"reason": R.InvalidDisplayQty}))
    expect(r(1, 1, 10, 100, display=15), ("CancelRejected", {"reason": R.InvalidDisplayQty}))
    expect(r(1, 1, 10, 100, display=-5), ("CancelRejected", {"reason": R.InvalidDisplayQty}))
    expect(h.status(2, HALTED), "AdminResult", "InstrumentStatus")
    expect(r(1, 2, 11, 1), ("CancelRejected", {"reason": R.InstrumentHalted}))  # status before the rest
    expect(r(2, 1, 10, 100), ("CancelRejected", {"reason": R.NotYourOrder}))
    h.status(2, CLOSED)
    expect(r(1, 2, 11, 1), ("CancelRejected", {"reason": R.UnknownOrder}))  # Day: expired
    h2 = H()
    h2.send(h2.m.instrument(2, status=CLOSED))
    expect(h2.replace(1, 1, 10, 100, instrument=2), ("CancelRejected", {"reason": R.UnknownOrder}))


def test_replace_closed_gtc():
    h = H()
    h.order(1, BUY, 10, 100, tif=GTC)
    h.status(1, CLOSED)
    expect(h.replace(1, 1, 5, 100), ("CancelRejected", {"reason": R.InstrumentClosed}))
    expect(h.cancel(1, 1), ("OrderCanceled", {"reason": C.User}), "BookDelete")


# -- mass cancel ----------------------------------------------------------------------------


def test_mass_cancel():
    h = H()
    h.send(h.m.instrument(2))
    h.order(1, BUY, 1, 99)  # 1
    h.order(2, BUY, 1, 98)  # 2
    h.order(1, SELL, 1, 110, instrument=2)  # 3
    h.order(1, BUY, 1, 0, ord_type=STOP, stop=120)  # 4
    h.order(2, SELL, 1, 111, instrument=2)  # 5
    h.order(1, SELL, 1, 105)  # 6
    expect(h.mass_cancel(0, 1, 1), ("CancelRejected", {"reason": R.InvalidScope, "refTemplateId": 4, "orderId": 0}))
    expect(h.mass_cancel(5, 1, 1), ("CancelRejected", {"reason": R.InvalidScope}))
    expect(h.mass_cancel(1, 6, 1), ("CancelRejected", {"reason": R.UnknownAccount}))
    expect(h.mass_cancel(3, 6, 9), ("CancelRejected", {"reason": R.UnknownAccount}))
    expect(h.mass_cancel(3, 1, 3), ("CancelRejected", {"reason": R.UnknownInstrument}))
    expect(h.mass_cancel(2, 6, 3), ("CancelRejected", {"reason": R.UnknownInstrument}))
    expect(h.mass_cancel(3, 1, 1, cl=5, session=8),
           ("OrderCanceled", {"orderId": 1, "reason": C.MassCancel}), "BookDelete",
           ("OrderCanceled", {"orderId": 4, "reason": C.MassCancel}),
           ("OrderCanceled", {"orderId": 6, "reason": C.MassCancel}), "BookDelete",
           ("MassCancelDone", {"canceledCount": 3, "clOrdId": 5, "sessionId": 8, "account": 1, "instrument": 1,
                               "scope": 3}))
    expect(h.mass_cancel(2, 6, 2),  # unknown account does not matter for Instrument scope
           ("OrderCanceled", {"orderId": 3, "account": 1}), "BookDelete",
           ("OrderCanceled", {"orderId": 5, "account": 2}), "BookDelete",
           ("MassCancelDone", {"canceledCount": 2, "account": 6, "instrument": 2, "scope": 2}))
    expect(h.mass_cancel(1, 1, 9), ("MassCancelDone", {"canceledCount": 0, "instrument": 9}))
    expect(h.mass_cancel(1, 2), ("OrderCanceled", {"orderId": 2}), "BookDelete",
           ("MassCancelDone", {"canceledCount": 1}))


def test_mass_cancel_of_a_session():
    """Scope Session (issue 14: cancel-on-disconnect): every working order the message's
    sessionId entered, in any account and instrument, resting or pending, in ascending order
    id; account and instrument are not used, so unknown ones are no error."""
    h = H()
    h.send(h.m.instrument(2))
    h.order(1, BUY, 1, 99, session=50)  # 1
    h.order(2, BUY, 1, 98, session=51)  # 2
    h.order(1, SELL, 1, 110, instrument=2, session=51)  # 3
    h.order(2, BUY, 1, 0, ord_type=STOP, stop=120, session=50)  # 4: pending, never in the book
    h.order(2, SELL, 1, 111, instrument=2, session=50)  # 5
    expect(h.mass_cancel(4, 6, 9, cl=9, session=50),
           ("OrderCanceled", {"orderId": 1, "reason": C.MassCancel, "sessionId": 50, "account": 1}), "BookDelete",
           ("OrderCanceled", {"orderId": 4, "reason": C.MassCancel, "account": 2}),
           ("OrderCanceled", {"orderId": 5, "reason": C.MassCancel, "instrument": 2}), "BookDelete",
           ("MassCancelDone", {"canceledCount": 3, "clOrdId": 9, "sessionId": 50, "account": 6, "instrument": 9,
                               "scope": 4}))
    expect(h.mass_cancel(4, session=50), ("MassCancelDone", {"canceledCount": 0, "scope": 4}))
    expect(h.mass_cancel(4, session=51),
           ("OrderCanceled", {"orderId": 2, "sessionId": 51}), "BookDelete",
           ("OrderCanceled", {"orderId": 3, "sessionId": 51}), "BookDelete",
           ("MassCancelDone", {"canceledCount": 2}))


# -- halts ----------------------------------------------------------------------------------


def test_halt_with_reject_policy():
    h = H()
    h.order(1, BUY, 1, 99)
    expect(h.status(1, HALTED), ("AdminResult", {"reason": R["None"], "instrument": 1, "refTemplateId": 14}),
           ("InstrumentStatus", {"instrument": 1, "status": HALTED}))
    expect(h.order(2, SELL, 1, 99), reject(R.InstrumentHalted))
    expect(h.order(2, SELL, 0, 99), reject(R.InstrumentHalted))  # 3 before 4
    expect(h.replace(1, 1, 1, 98), ("CancelRejected", {"reason": R.InstrumentHalted}))
    expect(h.status(1, TRADING), "AdminResult", ("InstrumentStatus", {"status": TRADING}))
    expect(h.order(2, SELL, 1, 99), "OrderAccepted", "Trade", "BookExecute")


def test_halt_with_queue_policy_and_resume():
    h = H(instruments=False)
    h.send(h.m.instrument(1, policy=QUEUE))
    for a in (1, 2, 3):
        h.account(a)
    h.order(1, SELL, 2, 100)  # 1
    h.order(1, SELL, 2, 102)  # 2
    h.status(1, HALTED)
    expect(h.order(2, BUY, 1, 0, ord_type=STOP, stop=101), ("OrderAccepted", {"orderId": 3}))
    expect(h.order(2, BUY, 3, 101), ("OrderAccepted", {"orderId": 4}))  # queued: no trade
    expect(h.order(3, BUY, 1, 100, post_only=1), reject(R.PostOnlyWouldTrade))  # checked on the frozen book
    expect(h.order(3, BUY, 5, 100, tif=FOK), reject(R.FokUnfillable))
    expect(h.order(3, SELL, 1, 0, ord_type=MARKET), ("OrderAccepted", {"orderId": 5}))  # queued
    expect(h.order(3, BUY, 1, 0, ord_type=MARKET, tif=IOC), ("OrderAccepted", {"orderId": 6}))
    expect(h.cancel(3, 5), ("OrderCanceled", {"orderId": 5, "reason": C.User, "canceledQty": 1}))
    expect(h.order(3, BUY, 2, 99, post_only=1, tif=GTC), ("OrderAccepted", {"orderId": 7}))
    s = h.status(1, TRADING)
    expect(s, "AdminResult", ("InstrumentStatus", {"status": TRADING}),
           # 3: becomes a pending stop; 4 trades 2 @100 and rests 1 @101
           ("Trade", {"takerOrderId": 4, "price": 100, "qty": 2}), "BookExecute",
           ("BookAdd", {"orderId": 4, "price": 101, "qty": 1}),
           # 6: market buy: best ask 102 + 5 ticks
           ("Trade", {"takerOrderId": 6, "price": 102, "qty": 1}), "BookExecute",
           ("StopTriggered", {"orderId": 3, "triggerPrice": 102}),
           ("Trade", {"takerOrderId": 3, "price": 102, "qty": 1}), "BookExecute",
           ("BookAdd", {"orderId": 7, "price": 99, "qty": 2, "side": BUY}))
    for e in s:
        assert e[1]["seq"] == h.m.seq


def test_queued_post_only_trades_at_resume_and_fok_remainder():
    h = H(instruments=False)
    h.send(h.m.instrument(1, policy=QUEUE))
    for a in (1, 2, 3):
        h.account(a)
    h.order(1, SELL, 2, 100)  # 1
    h.status(1, HALTED)
    h.order(2, BUY, 2, 100, tif=FOK)  # 2: fillable now
    h.order(3, BUY, 1, 99, post_only=1)  # 3
    h.cancel(1, 1)
    h.order(1, SELL, 1, 99)  # 4 queued
    expect(h.status(1, TRADING), "AdminResult", "InstrumentStatus",
           ("OrderCanceled", {"orderId": 2, "canceledQty": 2, "reason": C.IocRemainder}),
           ("BookAdd", {"orderId": 3}),
           ("Trade", {"makerOrderId": 3, "takerOrderId": 4, "price": 99}), "BookExecute")


def test_queued_stop_that_is_already_triggered_waits():
    h = H(instruments=False)
    h.send(h.m.instrument(1, policy=QUEUE))
    for a in (1, 2, 3):
        h.account(a)
    h.order(1, SELL, 5, 100)  # 1
    h.status(1, HALTED)
    h.order(2, BUY, 1, 100)  # 2: queued, will trade @100
    h.order(3, BUY, 1, 0, ord_type=STOP, stop=100)  # 3: queued (no last price yet)
    expect(h.status(1, TRADING), "AdminResult", "InstrumentStatus", ("Trade", {"takerOrderId": 2}), "BookExecute")
    assert h.model.orders[3].state == "stop"
    expect(h.order(2, SELL, 1, 0, ord_type=STOP, stop=90), "OrderAccepted")  # not an execution: still waits
    expect(h.cancel(1, 1, instrument=1), "OrderCanceled", "BookDelete")
    # an execution, even one that trades nothing: evaluated
    expect(h.order(1, SELL, 1, 101), "OrderAccepted", "BookAdd",
           ("StopTriggered", {"orderId": 3, "triggerPrice": 100}),
           ("Trade", {"price": 101, "takerOrderId": 3, "makerOrderId": 5}), "BookExecute")


def test_close_expires_day_orders():
    h = H(instruments=False)
    h.send(h.m.instrument(1, policy=QUEUE))
    h.send(h.m.instrument(2))
    for a in (1, 2):
        h.account(a)
    h.order(1, BUY, 1, 99)  # 1 Day resting
    h.order(1, BUY, 1, 98, tif=GTC)  # 2
    h.order(1, BUY, 1, 0, ord_type=STOP, stop=110)  # 3 Day stop
    h.order(1, BUY, 1, 97, instrument=2)  # 4 other instrument
    h.order(1, BUY, 1, 0, ord_type=STOP, stop=110, tif=GTC)  # 5
    h.status(1, HALTED)
    h.order(2, SELL, 1, 100)  # 6 queued Day
    h.order(2, SELL, 1, 90, ord_type=STOP_LIMIT, stop=90, tif=GTC)  # 7 queued GTC stop
    h.order(2, SELL, 1, 98, tif=IOC)  # 8 queued IOC: not Day, stays
    expect(h.status(1, CLOSED), "AdminResult", ("InstrumentStatus", {"status": CLOSED}),
           ("OrderCanceled", {"orderId": 1, "reason": C.Expired, "canceledQty": 1}), ("BookDelete", {"orderId": 1}),
           ("OrderCanceled", {"orderId": 3, "reason": C.Expired}),
           ("OrderCanceled", {"orderId": 6, "reason": C.Expired}))
    assert h.model.stop_slots == 2
    expect(h.order(2, SELL, 1, 100), reject(R.InstrumentClosed))
    expect(h.status(1, CLOSED), "AdminResult", "InstrumentStatus")
    expect(h.status(1, TRADING), "AdminResult", "InstrumentStatus",
           ("Trade", {"takerOrderId": 8, "makerOrderId": 2, "price": 98}), "BookExecute")
    assert [o.oid for o in h.model.live()] == [4, 5, 7]


def test_closed_at_definition():
    h = H(instruments=False)
    h.send(h.m.instrument(1, status=CLOSED))
    h.account(1)
    expect(h.order(1, BUY, 1, 99), reject(R.InstrumentClosed))
    expect(h.order(1, BUY, 0, 99), reject(R.InstrumentClosed))
    expect(h.order(1, 9, 0, 99), reject(R.InvalidSide))


def test_bytes_round_trip_of_model_events():
    h = H()
    h.order(1, SELL, 3, 100)
    ev = h.order(2, BUY, 5, 101, ord_type=LIMIT)
    for e in ev:
        d = SCHEMA.decode(encode_event(e))
        assert (d.name, d.fields) == e
    assert raw_decode(raw_encode("NewOrder", side=7, ordType=9))[1]["side"] == 7


# -- risk: circuit breaker ----------------------------------------------------------------------
# Msgs stamps: timestampNs = T0 + 1000 * seq (+ what ``advance`` added); T0 is a multiple of the
# 20 µs windows below, so the window of seq n starts at T0 + 20_000 * (n * 1000 // 20_000).


def breaker(policy: int = REJECT) -> H:
    h = H(instruments=False)
    h.send(h.m.instrument(1, policy=policy))  # seq 1
    expect(h.limits(1, cb_move_ppm=50_000, cb_window_ns=20_000, cb_halt_ns=5_000),  # seq 2
           ("AdminResult", {"refTemplateId": 16, "instrument": 1, "reason": R["None"]}))
    for a in (1, 2):
        h.send(h.m.account(a))  # seq 3, 4
    h.order(2, SELL, 1, 100)  # seq 5: 1
    expect(h.order(1, BUY, 1, 100), "OrderAccepted", ("Trade", {"price": 100}), "BookExecute")  # 2: reference 100
    h.order(2, SELL, 1, 104)  # 3
    h.order(2, SELL, 1, 106)  # 4
    return h


def test_circuit_breaker_trips_halts_and_reopens():
    h = breaker()
    # seq 9: 104 is within 5% of 100; 106 is not: that fill does not happen
    expect(h.order(1, BUY, 3, 106),
           ("OrderAccepted", {"orderId": 5}), ("Trade", {"price": 104, "qty": 1}), "BookExecute",
           ("OrderCanceled", {"orderId": 5, "reason": C.Halted, "canceledQty": 2}),
           ("InstrumentStatus", {"status": HALTED}))  # until T0 + 9000 + 5000
    expect(h.order(1, BUY, 1, 100), reject(R.InstrumentHalted))  # seq 10
    expect(h.replace(2, 4, 2, 106), ("CancelRejected", {"reason": R.InstrumentHalted}))  # seq 11
    h.m.advance(2_000)  # seq 12 at T0 + 14_000: the halt is over; the reopen clears the reference
    expect(h.order(1, BUY, 1, 106),
           ("InstrumentStatus", {"status": TRADING, "seq": 12}),
           ("OrderAccepted", {"orderId": 6}), ("Trade", {"price": 106}), "BookExecute")


def test_circuit_breaker_queue_policy_and_stops():
    h = breaker(QUEUE)
    h.order(1, BUY, 1, ord_type=STOP, stop=105)  # 5: a buy stop
    expect(h.order(1, BUY, 2, 106),  # seq 10: breaks at 106; the stop (last 104 < 105) stays
           ("OrderAccepted", {"orderId": 6}), ("Trade", {"price": 104}), "BookExecute",
           ("OrderCanceled", {"orderId": 6, "reason": C.Halted, "canceledQty": 1}),
           ("InstrumentStatus", {"status": HALTED}))  # until T0 + 15_000
    expect(h.order(1, BUY, 1, 106), ("OrderAccepted", {"orderId": 7}))  # seq 11: queued
    h.m.advance(4_000)  # seq 12 at T0 + 16_000: reopen, the queued order goes (reference 106)
    expect(h.send(h.m.account(3)),
           ("InstrumentStatus", {"status": TRADING}), ("Trade", {"price": 106, "takerOrderId": 7}), "BookExecute",
           ("StopTriggered", {"orderId": 5}),
           ("OrderCanceled", {"orderId": 5, "reason": C.MarketRemainder}),
           ("AdminResult", {"refTemplateId": 11}))


def test_operator_status_cancels_the_breaker_reopen():
    h = breaker()
    expect(h.order(1, BUY, 3, 106), "OrderAccepted", "Trade", "BookExecute", "OrderCanceled", "InstrumentStatus")
    expect(h.status(1, HALTED), "AdminResult", ("InstrumentStatus", {"status": HALTED}))
    h.m.advance(50_000)
    expect(h.order(1, BUY, 1, 100), reject(R.InstrumentHalted))  # no automatic reopen any more
    expect(h.status(1, TRADING), "AdminResult", ("InstrumentStatus", {"status": TRADING}))
    expect(h.order(1, BUY, 1, 106), "OrderAccepted", ("Trade", {"price": 106}), "BookExecute")


# -- risk: InstrumentLimits ---------------------------------------------------------------------


def limits_ok(instrument: int = 1) -> tuple:
    return ("AdminResult", {"refTemplateId": 16, "instrument": instrument, "account": 0, "value": 0,
                            "reason": R["None"]})


def test_definition_is_validated_and_starts_with_limits_off():
    h = H(instruments=False)  # price_levels 100: ref 100 -> base 50, top of the window 149
    top = 149
    # the overflow rule stays with the definition
    expect(h.send(h.m.instrument(1, max_qty=(2**62 - 1) // top + 1)),
           ("AdminResult", {"refTemplateId": 10, "reason": R.InvalidInstrumentDefinition}))
    expect(h.send(h.m.instrument(1, max_qty=(2**62 - 1) // top)),
           ("AdminResult", {"refTemplateId": 10, "reason": R["None"]}), "InstrumentStatus")
    inst = h.model.instruments[1]
    assert (inst.max_notional, inst.notional_divisor, inst.band_ppm, inst.cb_on) == (0, 1, 0, False)
    h.send(h.m.account(1))
    h.send(h.m.account(2))
    h.send(h.m.funds(1, 1, 2**59))  # a sell holds its quantity of the base asset
    # no band, no notional limit: anywhere in the book window, any size
    expect(h.order(1, SELL, (2**62 - 1) // top, 149), "OrderAccepted", "BookAdd")
    expect(h.order(2, BUY, 1, 50), "OrderAccepted", "BookAdd")


def test_limits_fields_are_validated():
    h = H(instruments=False)
    # for an instrument that is not defined (any id, valid fields or not)
    for i in (0, 1, 3, 4, 2**32 - 1):
        expect(h.limits(i, band_ppm=10_000), ("AdminResult", {"refTemplateId": 16, "instrument": i,
                                                              "reason": R.UnknownInstrument}))
    expect(h.limits(1, divisor=0), ("AdminResult", {"reason": R.UnknownInstrument}))
    h.send(h.m.instrument(1, tick=7, ref=98))
    bad = [dict(divisor=0), dict(divisor=-3), dict(divisor=-(2**63)), dict(max_notional=-1), dict(band_ppm=-1),
           dict(band_ppm=1_000_001), dict(band_ppm=-(2**31)), dict(cb_move_ppm=-1), dict(cb_move_ppm=2**31 - 1),
           dict(cb_window_ns=2**63), dict(cb_halt_ns=2**64 - 1)]
    for fields in bad:
        expect(h.limits(1, **fields), ("AdminResult", {"refTemplateId": 16, "instrument": 1,
                                                       "reason": R.InvalidInstrumentDefinition}))
    # a divisor must divide tickSize * lotSize (7): a trade's notional is exact
    for d in (2, 14, 2**62):
        expect(h.limits(1, divisor=d), ("AdminResult", {"refTemplateId": 16, "instrument": 1,
                                                       "reason": R.InexactNotional}))
    inst = h.model.instruments[1]  # a rejected InstrumentLimits changes nothing
    assert (inst.max_notional, inst.notional_divisor, inst.band_ppm, inst.cb_move_ppm) == (0, 1, 0, 0)
    expect(h.limits(1, band_ppm=1_000_000, cb_move_ppm=1_000_000, cb_window_ns=2**63 - 1, cb_halt_ns=2**63 - 1,
                    max_notional=2**63 - 1, divisor=7), limits_ok())
    assert (inst.max_notional, inst.notional_divisor, inst.band_ppm, inst.cb_on) == (2**63 - 1, 7, 1_000_000, True)
    expect(h.limits(1), limits_ok())  # all off again
    assert (inst.max_notional, inst.notional_divisor, inst.band_ppm, inst.cb_on) == (0, 1, 0, False)


def test_a_divisor_change_waits_until_the_instrument_is_empty():
    """Issue 13, defect 4: a new notionalDivisor would re-price what rests and what is held,
    so it is refused while the instrument has a working order, and taken once it has none; a
    limits message that keeps the divisor is no change."""
    h = H(instruments=False)
    h.send(h.m.instrument(1, lot=10, min_qty=10))  # tickSize * lotSize = 10: divisors 1, 2, 5 and 10 are exact
    h.send(h.m.account(1))
    h.send(h.m.funds(1, 0, 10**9))  # a buy holds its notional of the quote asset
    expect(h.order(1, BUY, 10, 95), "OrderAccepted", "BookAdd")  # order 1
    expect(h.limits(1, divisor=10), ("AdminResult", {"refTemplateId": 16, "instrument": 1,
                                                   "reason": R.InstrumentInUse}))
    assert h.model.instruments[1].notional_divisor == 1
    expect(h.limits(1, band_ppm=500_000), limits_ok())  # divisor 1 kept: no change to refuse
    expect(h.cancel(1, 1), ("OrderCanceled", {"orderId": 1, "reason": C.User}), "BookDelete")
    expect(h.limits(1, divisor=10), limits_ok())
    assert h.model.instruments[1].notional_divisor == 10


def test_limits_change_intraday():
    """An operator narrows the price band, then lifts the notional limit, while orders rest."""
    h = H()
    expect(h.limits(1, band_ppm=100_000, max_notional=1000), limits_ok())  # band 90..110
    expect(h.order(1, BUY, 5, 95), "OrderAccepted", "BookAdd")  # 1
    expect(h.order(1, BUY, 11, 95), reject(R.MaxNotional))
    expect(h.limits(1, band_ppm=20_000, max_notional=1000), limits_ok())  # band 98..102
    expect(h.order(1, BUY, 1, 97), reject(R.PriceBand))
    expect(h.order(1, BUY, 1, 98), "OrderAccepted", "BookAdd")  # 2
    # the resting order outside the new band stays; a replace at its own price is not a new price
    expect(h.replace(1, 1, 4, 95), ("OrderReplaced", {"orderId": 1}), "BookReduce")
    expect(h.replace(1, 1, 4, 96), ("CancelRejected", {"reason": R.PriceBand, "refTemplateId": 3}))
    expect(h.limits(1, band_ppm=20_000), limits_ok())  # no notional limit
    expect(h.order(1, BUY, 100, 99), "OrderAccepted", "BookAdd")  # 3
    expect(h.limits(1), limits_ok())  # everything off
    expect(h.order(1, BUY, 1, 60), "OrderAccepted", "BookAdd")  # 4


def test_limits_change_resets_the_breaker_window():
    h = breaker()  # window from T0 (seq 1..19), reference 100
    # a new band alone keeps the breaker's window and reference: 106 still breaches
    expect(h.limits(1, band_ppm=500_000, cb_move_ppm=50_000, cb_window_ns=20_000, cb_halt_ns=5_000),
           limits_ok())  # seq 9
    h.order(1, BUY, 1, 104)  # seq 10: trades with 3, within 5% of 100
    expect(h.order(1, BUY, 1, 106), ("OrderAccepted", {"orderId": 6}),  # seq 11: 6% from 100
           ("OrderCanceled", {"orderId": 6, "reason": C.Halted}), ("InstrumentStatus", {"status": HALTED}))
    h.status(1, TRADING)  # seq 12
    h.order(1, BUY, 1, 100)  # seq 13: 7 rests (no ask at 100)
    h.order(2, SELL, 1, 100)  # seq 14: trades with 7: the window's reference is 100 again
    # new breaker settings (a wider move): the window starts again, the next fill is its reference
    expect(h.limits(1, cb_move_ppm=100_000, cb_window_ns=20_000, cb_halt_ns=5_000), limits_ok())  # seq 15
    h.order(2, SELL, 1, 110)  # seq 16: 9
    expect(h.order(1, BUY, 1, 106), ("OrderAccepted", {"orderId": 10}),  # seq 17: the reference is 106
           ("Trade", {"price": 106}), "BookExecute")
    expect(h.order(1, BUY, 1, 110), ("OrderAccepted", {"orderId": 11}),  # seq 18: 110 is within 10% of 106
           ("Trade", {"price": 110}), "BookExecute")


def test_limits_during_a_breaker_halt_keep_the_reopen():
    h = breaker()
    expect(h.order(1, BUY, 3, 106), "OrderAccepted", "Trade", "BookExecute", "OrderCanceled",
           ("InstrumentStatus", {"status": HALTED}))  # seq 9: halted until T0 + 14_000
    # the breaker switched off while halted: the halt still ends as scheduled
    expect(h.limits(1), limits_ok())  # seq 10
    expect(h.order(1, BUY, 1, 100), reject(R.InstrumentHalted))  # seq 11
    h.m.advance(2_000)  # seq 12 at T0 + 14_000
    expect(h.order(1, BUY, 1, 106), ("InstrumentStatus", {"status": TRADING, "seq": 12}),
           ("OrderAccepted", {"orderId": 6}), ("Trade", {"price": 106}), "BookExecute")
    h.order(2, SELL, 1, 140)  # seq 13: 7
    expect(h.order(1, BUY, 1, 140), ("OrderAccepted", {"orderId": 8}),  # seq 14: no breaker any more
           ("Trade", {"price": 140}), "BookExecute")


def test_limits_while_halted_with_new_breaker_settings():
    h = breaker(QUEUE)
    expect(h.order(1, BUY, 3, 106), "OrderAccepted", "Trade", "BookExecute", "OrderCanceled",
           ("InstrumentStatus", {"status": HALTED}))  # seq 9: halted until T0 + 14_000
    # a longer halt and a tighter move: the pending reopen stays at T0 + 14_000
    expect(h.limits(1, cb_move_ppm=10_000, cb_window_ns=20_000, cb_halt_ns=50_000), limits_ok())  # seq 10
    expect(h.order(1, BUY, 1, 106), ("OrderAccepted", {"orderId": 6}))  # seq 11: queued
    h.m.advance(3_000)  # seq 12 at T0 + 15_000: reopens; the queued order sets the reference 106
    expect(h.send(h.m.account(3)),
           ("InstrumentStatus", {"status": TRADING}), ("Trade", {"price": 106, "takerOrderId": 6}), "BookExecute",
           ("AdminResult", {"refTemplateId": 11}))
    h.order(2, SELL, 1, 108)  # seq 13: 7
    # seq 14: 108 is 1.9% from 106: trips with the new settings, halted until T0 + 17_000 + 50_000
    expect(h.order(1, BUY, 1, 108), ("OrderAccepted", {"orderId": 8}),
           ("OrderCanceled", {"orderId": 8, "reason": C.Halted}), ("InstrumentStatus", {"status": HALTED}))
