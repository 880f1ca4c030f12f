"""The compiled engine: self-trade prevention, trading status, admin messages, malformed
input, capacity limits and the coverage of every reject reason (docs/engine.md)."""

from __future__ import annotations

import numpy as np

from engine_kit import Exchange, patch
from ringex.engine.wire.messages import SCHEMA, SLOT_SIZE, RejectReason


# -- self-trade prevention -------------------------------------------------------------------


def test_stp_cancel_resting():
    ex = Exchange()
    ex.sell(1, 2, 101)
    ex.sell(2, 2, 101)
    assert ex.buy(1, 3, 101, stpMode="CancelResting") == [
        "Accepted 3", "Canceled 1 SelfTrade 2", "BookDelete 1",
        "Trade 1 2@101 m=2 t=3 ml=0 tl=1", "BookExecute 2 2@101", "BookAdd 3 Buy 1@101"]


def test_stp_cancel_aggressor():
    ex = Exchange()
    ex.sell(2, 2, 101)
    ex.sell(1, 2, 101)
    assert ex.buy(1, 3, 101, stpMode="CancelAggressor") == [
        "Accepted 3", "Trade 1 2@101 m=1 t=3 ml=0 tl=1", "BookExecute 1 2@101",
        "Canceled 3 SelfTrade 1"]
    assert ex.asks() == [[(2, 2, 2)]]


def test_stp_cancel_both():
    ex = Exchange()
    ex.sell(1, 2, 101)
    assert ex.buy(1, 3, 101, stpMode="CancelBoth") == [
        "Accepted 2", "Canceled 1 SelfTrade 2", "BookDelete 1", "Canceled 2 SelfTrade 3"]
    assert ex.engine.live_orders == 0


def test_stp_decrement_both_reduces_displayed_first_and_lowers_the_totals():
    ex = Exchange()
    ex.sell(1, 6, 101, displayQty=2)
    assert ex.buy(1, 3, 101, stpMode="DecrementBoth") == [
        "Accepted 2", "Canceled 1 SelfTrade 3", "BookReduce 1 2", "BookAdd 1 Sell 2@101",
        "Canceled 2 SelfTrade 3"]
    assert ex.asks() == [[(1, 2, 3)]]
    assert ex.engine.order(1)["qty"] == 3  # qty = filled + leaves
    ex.sell(2, 1, 101)
    assert ex.buy(1, 5, 101, stpMode="DecrementBoth") == [
        "Accepted 4", "Canceled 1 SelfTrade 3", "BookDelete 1", "Canceled 4 SelfTrade 3",
        "Trade 1 1@101 m=3 t=4 ml=0 tl=1", "BookExecute 3 1@101", "BookAdd 4 Buy 1@101"]


def test_stp_account_default_and_off():
    ex = Exchange()
    assert ex.account(4, stp="CancelResting") == ["Admin None"]
    ex.sell(4, 2, 101)
    assert ex.buy(4, 1, 101) == ["Accepted 2", "Canceled 1 SelfTrade 2", "BookDelete 1", "BookAdd 2 Buy 1@101"]
    ex.sell(4, 1, 101, stpMode="Off")
    assert ex.engine.live_orders == 0  # Off: it traded with its own bid
    assert ex.last[1].name == "Trade"


# -- trading status ---------------------------------------------------------------------------


def test_halt_with_reject_policy():
    ex = Exchange()
    ex.sell(1, 2, 101)
    assert ex.status("Halted") == ["Admin None", "Status Halted"]
    assert ex.buy(2, 1, 101) == ["Rejected InstrumentHalted"]
    assert ex.replace(1, 1, 1, 101) == ["CancelRejected InstrumentHalted"]
    assert ex.cancel(1, 1) == ["Canceled 1 User 2", "BookDelete 1"]


def test_halt_with_queue_policy_releases_in_order_id_order():
    ex = Exchange()
    ex.define(2, haltPolicy="Queue", status="Halted")
    ex.sell(1, 2, 101, instrument=2)
    assert ex.last[0].name == "OrderAccepted"
    ex.buy(2, 3, 101, instrument=2, tif="IOC")
    ex.buy(2, 1, instrument=2, ordType="Stop", stopPrice=105)
    ex.buy(3, 1, 100, instrument=2, postOnly=1)
    assert ex.engine.order(1)["state"] == 3
    assert ex.replace(1, 1, 2, 102, instrument=2) == ["CancelRejected InstrumentHalted"]
    assert ex.cancel(3, 4, instrument=2) == ["Canceled 4 User 1"]
    assert ex.status("Trading", 2) == [
        "Admin None", "Status Trading",
        "BookAdd 1 Sell 2@101",
        "Trade 1 2@101 m=1 t=2 ml=0 tl=1", "BookExecute 1 2@101", "Canceled 2 IocRemainder 1"]
    assert ex.engine.order(3)["state"] == 2  # the queued stop is a pending stop now


def test_close_expires_day_orders_only():
    ex = Exchange()
    ex.sell(1, 2, 101, tif="Day")
    ex.sell(1, 2, 102, tif="GTC")
    ex.buy(2, 1, ordType="Stop", stopPrice=110, tif="Day")
    assert ex.status("Closed") == ["Admin None", "Status Closed", "Canceled 1 Expired 2", "BookDelete 1",
                                   "Canceled 3 Expired 1"]
    assert ex.buy(2, 1, 101) == ["Rejected InstrumentClosed"]
    assert ex.replace(1, 2, 1, 102) == ["CancelRejected InstrumentClosed"]
    assert ex.status("Trading") == ["Admin None", "Status Trading"]
    assert ex.asks() == [[(2, 2, 2)]]


def test_trading_status_rejections():
    ex = Exchange()
    assert ex.status("Halted", instrument=3) == ["Admin UnknownInstrument"]
    assert ex.send_raw("TradingStatusUpdate", dict(status=7), instrument=1) == ["Admin InvalidInstrumentDefinition"]


# -- admin ------------------------------------------------------------------------------------


def test_admin_messages():
    ex = Exchange()
    assert ex.define(1) == ["Admin DuplicateInstrument"]
    assert ex.define(4) == ["Admin InstrumentCapacity"]
    assert ex.define(0) == ["Admin InstrumentCapacity"]
    assert ex.define(2, tickSize=0) == ["Admin InvalidInstrumentDefinition"]
    assert ex.define(2, lotSize=2, minQty=3) == ["Admin InvalidInstrumentDefinition"]
    assert ex.define(2, referencePrice=101, tickSize=2) == ["Admin InvalidInstrumentDefinition"]
    assert ex.define(2, minQty=5, maxQty=4) == ["Admin InvalidInstrumentDefinition"]
    assert ex.account(1) == ["Admin DuplicateAccount"]
    assert ex.account(8) == ["Admin AccountCapacity"]
    assert ex.account(4, stp="AccountDefault") == ["Admin InvalidStpMode"]
    assert ex.limits(3, priceBandPpm=10) == ["Admin UnknownInstrument"]
    assert ex.limits(1, priceBandPpm=1_000_001) == ["Admin InvalidInstrumentDefinition"]
    assert ex.limits(1, priceBandPpm=10) == ["Admin None"]
    assert ex.last[0].fields["refTemplateId"] == SCHEMA.message("InstrumentLimits").template_id == 16
    # money and perpetuals (docs/risk.md): each answered by one AdminResult echoing the message
    assert ex.define(2, kind="Perpetual", baseAsset=1) == ["Admin InvalidInstrumentDefinition"]
    assert ex.define(2, baseAsset=0) == ["Admin InvalidInstrumentDefinition"]
    assert ex.define(2, baseAsset=8) == ["Admin InvalidInstrumentDefinition"]  # max_assets 8
    assert ex.define(2, takerFeePpm=10, makerFeePpm=11) == ["Admin InvalidInstrumentDefinition"]
    assert ex.define(2, kind="Perpetual") == ["Admin None", "Status Trading"]
    for name, fields, want in (
            ("Funds", dict(account=1, asset=0, amount=5, action="Deposit"), ["Admin None"]),
            ("Funds", dict(account=1, asset=8, amount=5, action="Deposit"), ["Admin UnknownAsset"]),
            ("Funds", dict(account=9, asset=0, amount=5, action="Withdraw"), ["Admin UnknownAccount"]),
            ("IndexPrice", dict(instrument=2, price=100), ["Admin None", "MarkPrice"]),
            ("IndexPrice", dict(instrument=1, price=100), ["Admin NotPerpetual"]),
            ("PerpetualParams", dict(instrument=2, imPpm=100_000, mmPpm=500_000), ["Admin None"]),
            ("PerpetualParams", dict(instrument=2), ["Admin InvalidInstrumentDefinition"]),  # imPpm 0
            ("PerpetualParams", dict(instrument=1, imPpm=100_000, mmPpm=500_000), ["Admin NotPerpetual"])):
        assert ex.send(name, **fields) == want, (name, fields)
        f = ex.last[0].fields
        assert f["refTemplateId"] == SCHEMA.message(name).template_id
        assert f["account"] == fields.get("account", 0) and f["instrument"] == fields.get("instrument", 0)
        if name == "Funds" and want == ["Admin None"]:
            assert f["value"] == 10**15 + 5  # the balance after (the kit funded the account with 10**15)


def test_book_window_is_centred_on_the_reference_price():
    ex = Exchange(price_levels=64)  # base = 100 - 32 = 68: prices 68..131
    assert ex.buy(1, 1, 68)[0] == "Accepted 1"
    assert ex.sell(1, 1, 131)[0] == "Accepted 2"
    assert ex.buy(1, 1, 67) == ["Rejected PriceOutOfRange"]
    assert ex.sell(1, 1, 132) == ["Rejected PriceOutOfRange"]
    ex.define(2, referencePrice=10)  # base clamps at 1
    assert ex.buy(1, 1, 1, instrument=2)[0] == "Accepted 3"
    assert ex.buy(1, 1, 64, instrument=2)[0] == "Accepted 4"
    assert ex.buy(1, 1, 65, instrument=2) == ["Rejected PriceOutOfRange"]


# -- malformed input ----------------------------------------------------------------------------


def test_messages_the_engine_does_not_take():
    ex = Exchange()
    good = ex.encode("NewOrder", account=1, instrument=1, side="Buy", ordType="Limit", qty=1, price=100,
                     seq=4242)
    wrong_schema = bytearray(good)
    wrong_schema[4:6] = (9999).to_bytes(2, "little")
    wrong_version = bytearray(good)
    wrong_version[6:8] = (77).to_bytes(2, "little")
    unknown = bytearray(good)
    unknown[2:4] = (999).to_bytes(2, "little")
    output = ex.encode("Trade", seq=5)
    zeros = bytes(SLOT_SIZE)
    got = ex.run([bytes(wrong_schema), bytes(wrong_version), bytes(unknown), output, zeros])
    assert got == ["Rejected UnsupportedMessage"] * 5
    refs = [e.fields["refTemplateId"] for e in ex.last]
    assert refs == [1, 1, 999, SCHEMA.message("Trade").template_id, 0]
    assert ex.last[0].fields["seq"] == 4242
    assert all(e.fields["clOrdId"] == 0 and e.fields["account"] == 0 for e in ex.last)
    assert ex.engine.live_orders == 0 and ex.engine.next_order_id == 1


def test_random_garbage_never_crashes_the_engine():
    ex = Exchange()
    rng = np.random.default_rng(7)
    slots = rng.integers(0, 256, size=(2000, SLOT_SIZE), dtype=np.uint8)
    # make half of them look like ours so that they reach the handlers with wild fields
    hdr = np.frombuffer(SCHEMA.message("NewOrder").header_bytes, dtype=np.uint8)
    slots[::2, 4:8] = hdr[4:8]
    slots[::2, 2] = rng.choice([1, 2, 3, 4, 10, 11, 12, 13, 14, 15], size=1000)
    slots[::2, 3] = 0
    events = ex.engine.process(slots)
    assert len(events) >= len(slots)
    for row in events:
        SCHEMA.decode(row)  # every event is well formed


# -- capacity ---------------------------------------------------------------------------------


def test_capacity_limits_reject_instead_of_overwriting():
    ex = Exchange(max_orders=3, max_stops=1)
    assert ex.buy(1, 1, ordType="Stop", stopPrice=110)[0] == "Accepted 1"
    assert ex.buy(1, 1, ordType="Stop", stopPrice=111) == ["Rejected StopCapacity"]
    ex.buy(1, 1, 90)
    ex.buy(1, 1, 91)
    assert ex.buy(1, 1, 92) == ["Rejected BookFull"]
    assert ex.buy(1, 1, 92, tif="IOC") == ["Rejected BookFull"]  # every order needs a slot
    ex.cancel(1, 2)
    assert ex.buy(1, 1, 92)[0] == "Accepted 4"


def test_order_ids_beyond_the_pool_size_are_found():
    ex = Exchange(max_orders=4)
    assert ex.sell(1, 1, 120)[0] == "Accepted 1"  # lives through everything below
    for i in range(3000):  # ids go far past the pool and the id table
        oid = ex.engine.next_order_id
        assert ex.buy(2, 1, 80 + i % 10) == [f"Accepted {oid}", f"BookAdd {oid} Buy 1@{80 + i % 10}"]
        assert ex.cancel(2, oid) == [f"Canceled {oid} User 1", f"BookDelete {oid}"]
    assert ex.cancel(2, 1) == ["CancelRejected NotYourOrder"]
    assert ex.engine.order(1)["leaves"] == 1
    assert ex.cancel(1, 1) == ["Canceled 1 User 1", "BookDelete 1"]


# -- every reject reason ----------------------------------------------------------------------

# the sequencer's (tests/test_pipeline.py, test_sequencer_exactly_once.py) and the binary
# gateway's (tests/test_sbe_gateway.py): refusals before sequencing
SEQUENCER_ONLY = {"ExchangeNotAccepting", "AdminNotPermitted", "AccountNotPermitted", "Throttled"}
# reached only after a liquidation leaves a debt (tests/test_risk_liquidation.py,
# test_a_bankrupt_account_that_holds_other_assets_keeps_its_debt)
LIQUIDATION_ONLY = {"AccountInDebt"}


def test_every_reject_reason_is_reachable():
    seen: set[str] = set()
    ex = Exchange(max_orders=4, max_stops=1)

    def run(events: list[str]) -> None:
        for e in ex.last:
            if e.name in ("OrderRejected", "CancelRejected", "AdminResult"):
                seen.add(e.fields["reason"].name)

    order = ex.order
    run(order(1, "Buy", 1, 100, instrument=3))                       # UnknownInstrument
    run(order(6, "Buy", 1, 100))                                     # UnknownAccount
    run(ex.send_raw("NewOrder", dict(side=3), account=1, instrument=1, qty=1, price=100))       # InvalidSide
    run(ex.send_raw("NewOrder", dict(ordType=9), account=1, instrument=1, qty=1, price=100))    # InvalidOrdType
    run(ex.send_raw("NewOrder", dict(timeInForce=2), account=1, instrument=1, qty=1, price=100))  # InvalidTimeInForce
    run(ex.send_raw("NewOrder", dict(postOnly=2), account=1, instrument=1, qty=1, price=100))   # InvalidFlags
    run(ex.send_raw("NewOrder", dict(stpMode=6), account=1, instrument=1, qty=1, price=100))    # InvalidStpMode
    run(order(1, "Buy", 0, 100))                                     # QtyOutOfRange
    ex.define(2, lotSize=2, minQty=2, maxQty=10, tickSize=2)
    run(order(1, "Buy", 3, 100, instrument=2))                       # BadLot
    run(order(1, "Buy", 2, 101, instrument=2))                       # BadTick
    run(order(1, "Buy", 1, 0))                                       # PriceOutOfRange
    run(order(1, "Buy", 1, 100, displayQty=2))                       # InvalidDisplayQty
    run(order(1, "Buy", 1, ordType="Stop"))                          # InvalidStopPrice
    order(1, "Sell", 1, 101)
    run(order(2, "Buy", 1, 101, postOnly=1))                         # PostOnlyWouldTrade
    run(order(2, "Buy", 2, 101, tif="FOK"))                          # FokUnfillable
    order(1, "Buy", 1, ordType="Stop", stopPrice=110)
    run(order(1, "Buy", 1, ordType="Stop", stopPrice=111))           # StopCapacity
    run(ex.replace(1, 2, 1, 100))                                    # StopNotAllowed
    order(1, "Buy", 1, 90)
    order(1, "Buy", 1, 91)
    run(order(1, "Buy", 1, 92))                                      # BookFull
    run(ex.cancel(1, 77))                                            # UnknownOrder
    run(ex.cancel(2, 1))                                             # NotYourOrder
    run(ex.mass_cancel("AccountInstrument", account=1, instrument=1))
    run(ex.send_raw("MassCancel", dict(scope=0), account=1))        # InvalidScope
    run(ex.define(1))                                                # DuplicateInstrument
    run(ex.define(9))                                                # InstrumentCapacity
    run(ex.define(3, tickSize=0))                                    # InvalidInstrumentDefinition
    run(ex.account(1))                                               # DuplicateAccount
    run(ex.account(8))                                               # AccountCapacity
    ex.define(3, haltPolicy="Reject")
    ex.status("Halted", 3)
    run(order(1, "Buy", 1, 100, instrument=3))                       # InstrumentHalted
    ex.status("Closed", 3)
    run(order(1, "Buy", 1, 100, instrument=3))                       # InstrumentClosed
    unknown = bytearray(ex.encode("NewOrder", account=1, instrument=1, side="Buy", qty=1, price=100))
    unknown[2:4] = (999).to_bytes(2, "little")
    run(ex.run([bytes(unknown)]))                                    # UnsupportedMessage
    # risk (docs/risk.md), on a fresh exchange
    ex = Exchange()
    order = ex.order
    ex.define(2)
    run(ex.limits(4, priceBandPpm=100_000))                         # UnknownInstrument (InstrumentLimits)
    run(ex.limits(2, notionalDivisor=0))                             # InvalidInstrumentDefinition (limits)
    assert ex.limits(2, priceBandPpm=100_000, maxOrderNotional=1000) == ["Admin None"]
    ex.account(5, maxOpenOrders=1)
    run(order(5, "Buy", 1, 120, instrument=2))                       # PriceBand
    run(order(5, "Buy", 20, 100, instrument=2))                      # MaxNotional
    order(5, "Buy", 1, 100, instrument=2)
    run(order(5, "Buy", 1, 100, instrument=2))                       # MaxOpenOrders
    run(ex.limits(2, notionalDivisor=10, priceBandPpm=100_000, maxOrderNotional=1000))  # InexactNotional
    ex.define(3, tickSize=10)
    order(1, "Buy", 1, 100, instrument=3)
    run(ex.limits(3, notionalDivisor=10))                            # InstrumentInUse
    kill = lambda scope, **f: ex.send("KillSwitch", scope=scope, action="Engage", **f)  # noqa: E731
    kill("Account", account=5)
    run(order(5, "Buy", 1, 100, instrument=2))                       # KillSwitchAccount
    kill("Session", sessionId=77)
    run(ex.send("NewOrder", account=2, side="Buy", qty=1, price=100, ordType="Limit", timeInForce="GTC",
                instrument=2, sessionId=77))                         # KillSwitchSession
    kill("Instrument", instrument=2)
    run(order(2, "Buy", 1, 100, instrument=2))                       # KillSwitchInstrument
    kill("Exchange")
    run(order(2, "Buy", 1, 100, instrument=1))                       # KillSwitchExchange
    for s in range(40):
        run(kill("Session", sessionId=1000 + s))                     # KillSwitchCapacity
    # money and perpetuals (docs/risk.md), on a fresh exchange
    ex = Exchange()
    order = ex.order
    ex.define(2, kind="Perpetual")
    ex.limits(1, maxOrderQty=10)
    ex.limits(2, maxPosition=5)
    run(order(1, "Buy", 11, 100))                                    # MaxOrderQty
    run(ex.funds(1, 1, asset=8))                                     # UnknownAsset
    run(ex.send("IndexPrice", instrument=1, price=100))              # NotPerpetual
    run(order(1, "Buy", 6, 100, instrument=2))                       # PositionLimit
    run(order(1, "Sell", 1, 100, instrument=2, reduceOnly=1))        # ReduceOnlyWouldIncrease
    ex.account(4, fund=False)
    ex.funds(4, 100)
    run(order(4, "Buy", 2, 100))                                     # InsufficientFunds (spot: 200 + fee)
    run(order(4, "Buy", 2, 100, instrument=2))                       # InsufficientMargin (100% of 200)
    wanted = {r.name for r in RejectReason} - SEQUENCER_ONLY - LIQUIDATION_ONLY - {"None"}
    assert wanted - seen == set()


def test_patch_helper_writes_raw_values():
    buf = patch(SCHEMA.encode("NewOrder", side="Buy"), "NewOrder", side=9)
    assert buf[SCHEMA.message("NewOrder").offset("side")] == 9
