"""Property tests of the risk engine (docs/risk.md) over random multi-account flows.

Each example defines a spot instrument (base asset 1) and two perpetuals (one with tick 2,
lot 5), funds four accounts and the insurance fund, and then sends a random stream of
orders of every kind (limit, market, stop, IOC/FOK/Day, reduce-only), cancels, replaces,
mass cancels, deposits and withdrawals (good and bad), index prices (small moves, jumps of
15-45%, the window's ends, a tick outside either end), sequencer time jumps that cross
funding times, limit and parameter changes. Leverage is high and books are thin, so
liquidations, takeovers and auto-deleveraging happen.

After every message:
* money is conserved per asset: every account's balance (the insurance fund's included),
  plus the fee account for asset 0, equals accepted deposits minus accepted withdrawals;
* the positions of each perpetual sum to zero;
* nothing held is negative; spot base assets have 0 <= held <= balance; so does asset 0 of
  an account that never traded a perpetual;
* a message answered only by a rejection changes no balance, hold, position, fee or order;
* no trading account's equity falls below zero unless that message's events include an
  InsuranceCover, FeeCover, AutoDeleverage or InsuranceTakeover naming it (as the account
  or the deleveraged counterparty) (a reduce-only order's loss is checked when it arrives
  and again at every fill, so its own reduce-only orders are no excuse);
  and no trading account holding a position is left liquidatable (equity < maintenance);
* a reduce-only perpetual order is rejected InsufficientMargin exactly when its loss at
  its risk price (limit; stop +- protection, in the window; best opposite price +-
  protection, in the window) exceeds equity - held(asset 0) - maintenance (docs/risk.md
  "Perpetual margin"), as computed from the accessors before the message;
* an IndexPrice outside its instrument's book window is rejected PriceOutOfRange, one
  inside it is accepted; the mark is index + clamp(ema, -cap, cap) clamped into the
  window, the event's basis mark - index, and the smoothed basis (read before and after
  the message) moves by trunc((sample - ema) * basisEmaPpm / 1e6);
* when the last thing in a message that moves the insurance fund's money or positions
  is an InsuranceTakeover (not the fallback after deleveraging), the fund's equity is
  at least its maintenance margin after it;
* every liquidation's stages come in the documented order, and a liquidated account ends
  flat with a balance >= 0;
* ``account_risk``'s equity and maintenance margin are those of docs/risk.md's formulas.
At the end of the stream: the same bytes replayed into a fresh engine, in random batches,
give byte-identical output, and a snapshot taken midway, restored into a fresh engine and
fed the rest, gives the same output and the same final state.

``RINGEX_MODEL_EXAMPLES=500`` runs more examples (the default keeps the file to seconds).
"""

from __future__ import annotations

import math
import os
import random
import re
from collections import Counter
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringex.engine.config import EngineConfig
from ringex.engine.engine import MatchingEngine, pack_slots
from ringex.engine.wire.messages import SCHEMA
from ringex.engine.kernel.state import G_EVENTS, I_EMA
from risk_kit import PPM, T0, ceil_div

EXAMPLES = int(os.environ.get("RINGEX_MODEL_EXAMPLES", "0")) or None
CFG = dict(max_instruments=4, max_accounts=6, max_assets=3, max_orders=48, price_levels=64, max_stops=4,
           market_protection_ticks=2, event_buffer=16)
ACCOUNTS = range(6)  # 0: the insurance fund; 1-4 trade; 5 is never created
TRADERS = (1, 2, 3, 4)
ASSETS = (0, 1, 2)
SPOT, PERPS = 1, (2, 3)
TICK = {1: 1, 2: 1, 3: 2}
LOT = {1: 10, 2: 1, 3: 5}  # a divisor of 10 divides tick * lot of 1 and 3 (docs/risk.md: exact notionals)
REF = 100


def window(inst: int) -> tuple[int, int]:
    tick = TICK[inst]
    base = max(1, REF // tick - CFG["price_levels"] // 2)
    return base * tick, (base + CFG["price_levels"] - 1) * tick


COVERS = ("InsuranceCover", "FeeCover", "AutoDeleverage", "InsuranceTakeover")
STAGES = re.compile(r"S(L?B(T|A+)?)+C?F?D")
STAGE_LETTER = dict(Start="S", LiquidationFee="L", BookOrder="B", InsuranceTakeover="T", AutoDeleverage="A",
                    InsuranceCover="C", FeeCover="F", Done="D")
PROTECTION = CFG["market_protection_ticks"]
EARLY_REJECTS = ("PostOnlyWouldTrade", "FokUnfillable")  # the order checks after the margin check


def trunc_ppm(x: int, ppm: int) -> int:
    """trunc(x * ppm / 1e6), toward zero."""
    v = abs(x) * ppm // PPM
    return -v if x < 0 else v


def _n(v: Any) -> Any:
    return v.name if hasattr(v, "name") else v


class Flow:
    """Sends messages to an engine, checks the invariants after each one and records the
    stream (input bytes, output bytes per message) for the replay checks."""

    def __init__(self, snapshot_at: int) -> None:
        self.engine = MatchingEngine(EngineConfig(**CFG))
        self.seq = 0
        self.clock = T0
        self.gap = 1
        self.msgs: list[bytes] = []
        self.outs: list[bytes] = []
        self.ledger: Counter[int] = Counter()
        self.live: dict[int, tuple[int, int]] = {}  # order id -> (account, instrument)
        self.div = {1: 1, 2: 1, 3: 1}
        self.taker = {1: 0, 2: 0, 3: 0}
        self.params = {i: dict(imPpm=PPM, mmPpm=500_000, tierNotional=0, tierStepPpm=0, basisCapPpm=0,
                               basisEmaPpm=0, impactNotional=0) for i in PERPS}
        self.perp_traders: set[int] = set()
        self.seen: Counter = Counter()
        self.snapshot_at = snapshot_at
        self.snap: np.ndarray | None = None

    # -- sending -----------------------------------------------------------------------------

    def send(self, name: str, **fields: Any) -> list:
        self.seq += 1
        self.clock += self.gap
        self.gap = 1 + self.seq % 7
        msg = SCHEMA.encode(name, seq=self.seq, timestampNs=self.clock, ingressNs=self.clock, **fields)
        before = self.state()
        risk_before = {a: self.engine.account_risk(a)["equity"] for a in TRADERS}
        model = self.before_message(name, fields)
        out = self.engine.process(pack_slots([msg]))
        raw = out.tobytes()
        events = [SCHEMA.decode(row) for row in out]
        self.msgs.append(msg)
        self.outs.append(raw)
        self.learn(name, fields, events)
        self.check(name, fields, events, before, risk_before)
        self.check_model(name, fields, events, model)
        if len(self.msgs) == self.snapshot_at:
            self.snap = self.engine.snapshot()
        return events

    def learn(self, name: str, f: dict, events: list) -> None:
        """What the stream needs to know: the ledger, live orders, divisors, parameters."""
        e = self.engine
        for ev in events:
            g = ev.fields
            if ev.name == "AdminResult":
                ok = _n(g["reason"]) == "None"
                self.seen[(SCHEMA.message(g["refTemplateId"]).name, _n(g["reason"]))] += 1
                if ok and name == "Funds":
                    self.ledger[f["asset"]] += f["amount"] if f["action"] == "Deposit" else -f["amount"]
                elif ok and name == "InstrumentLimits":
                    self.div[f["instrument"]] = f["notionalDivisor"]
                elif ok and name == "PerpetualParams":
                    self.params[f["instrument"]] = {k: f.get(k, 0) for k in (  # a field not sent is 0
                        "imPpm", "mmPpm", "tierNotional", "tierStepPpm", "basisCapPpm", "basisEmaPpm", "impactNotional")}
            elif ev.name == "OrderAccepted":
                self.live[g["orderId"]] = (g["account"], g["instrument"])
                if g["instrument"] in PERPS:
                    self.perp_traders.add(g["account"])
                self.seen[ev.name] += 1
            elif ev.name in ("OrderRejected", "CancelRejected"):
                self.seen[(ev.name, _n(g["reason"]))] += 1
            elif ev.name == "OrderCanceled":
                self.seen[(ev.name, _n(g["reason"]))] += 1
            elif ev.name == "Liquidation":
                self.seen[("Liquidation", _n(g["stage"]))] += 1
            else:
                self.seen[ev.name] += 1
        self.live = {oid: v for oid, v in self.live.items() if e.order(oid) is not None}
        for a in ACCOUNTS:
            if any(e.position(a, i)["qty"] for i in PERPS):
                self.perp_traders.add(a)

    # -- the rules modelled from the accessors -----------------------------------------------

    def impact_price(self, inst: int, side: int, target: int) -> float | None:
        """docs/risk.md "Mark price": the average price at which ``target`` of notional fills
        against one side's displayed quantity, best level first (the engine's float steps)."""
        e, div = self.engine, self.div[inst]
        qty, left = 0.0, target
        for level in e.book(inst, side):
            p = e.order(level[0][0])["price"]
            q = sum(displayed for _, displayed, _ in level)
            n = p * q // div
            if n >= left:
                return target / (qty + left / float(p))
            qty += q / float(div)
            left -= n
        return None

    def before_message(self, name: str, f: dict) -> dict | None:
        """What the new rules will be checked against, read before the message."""
        e = self.engine
        if name == "IndexPrice" and f["instrument"] in PERPS:
            inst = f["instrument"]
            bid, ask = e.best_bid(inst), e.best_ask(inst)
            target = self.params[inst]["impactNotional"]
            impact = (self.impact_price(inst, 1, target), self.impact_price(inst, 2, target)) if target else None
            return dict(ema=int(e.state.ins[I_EMA, inst]), impact=impact,
                        mid=None if bid is None or ask is None else (bid + ask) // 2)
        if name == "NewOrder" and f["reduceOnly"] and f["instrument"] in PERPS and f["account"] in TRADERS:
            inst, acct, side, qty = f["instrument"], f["account"], f["side"], f["qty"]
            lo, hi = window(inst)
            tick = TICK[inst]
            if f["ordType"] in ("Limit", "StopLimit"):
                rp = f["price"]
            elif f["ordType"] == "Stop":
                rp = min(max(f["stopPrice"] + (PROTECTION if side == "Buy" else -PROTECTION) * tick, lo), hi)
            else:
                best = e.best_ask(inst) if side == "Buy" else e.best_bid(inst)
                rp = 0 if best is None else min(max(best + (PROTECTION if side == "Buy" else -PROTECTION) * tick, lo), hi)
            div = self.div[inst]
            at_mark = e.mark_price(inst) * qty // div
            at_price = rp * qty // div
            loss = (at_price - at_mark if side == "Buy" else at_mark - at_price) if rp > 0 else 0
            if rp > 0:  # and the taker fee, rounded up (docs/risk.md "Perpetual margin")
                loss += ceil_div(at_price * self.taker[inst], PPM)
            r = e.account_risk(acct)
            excess = r["equity"] - e.held(acct, 0) - r["maintenance"]
            return dict(loss=loss, excess=excess, reject=loss > 0 and excess < loss)
        return None

    def check_model(self, name: str, f: dict, events: list, model: dict | None) -> None:
        e = self.engine
        where = f"message {len(self.msgs)} {name} {f}: events {[(ev.name, ev.fields) for ev in events]}"
        if name == "IndexPrice":
            inst, price = f["instrument"], f["price"]
            answer = [ev for ev in events if ev.name == "AdminResult"]
            assert len(answer) == 1 and answer[0]["refTemplateId"] == 13, where
            reason = _n(answer[0]["reason"])
            if inst not in PERPS:
                assert reason == "NotPerpetual", where
                return
            lo, hi = window(inst)
            assert reason == ("None" if lo <= price <= hi else "PriceOutOfRange"), where
            if reason != "None":
                return
            k = events.index(answer[0])
            mark_ev = events[k + 1]
            assert mark_ev.name == "MarkPrice", where
            ema = int(e.state.ins[I_EMA, inst])
            if k == 0 and model["impact"] is not None:  # docs/risk.md "Mark price", impactNotional set
                ib, ia = model["impact"]
                sample = 0 if ib is None or ia is None else (
                    max(0, math.floor(ib) - price) - max(0, price - math.ceil(ia)))
                assert ema == model["ema"] + trunc_ppm(sample - model["ema"], self.params[inst]["basisEmaPpm"]), where
                self.seen["ImpactSample"] += 1
            elif k == 0:  # no funding (and liquidation) before it moved the book
                sample = 0 if model["mid"] is None else model["mid"] - price
                assert ema == model["ema"] + trunc_ppm(sample - model["ema"], self.params[inst]["basisEmaPpm"]), where
            cap = price * self.params[inst]["basisCapPpm"] // PPM
            raw = price + min(max(ema, -cap), cap)
            mark = min(max(raw, lo), hi)
            assert (mark_ev["markPrice"], mark_ev["indexPrice"], mark_ev["basis"]) == (mark, price, mark - price), (
                f"mark {mark} expected, after {where}")
            assert (e.mark_price(inst), e.index_price(inst)) == (mark, price), where
            if raw != mark:
                self.seen["MarkClamped"] += 1
        elif model is not None:  # a reduce-only perpetual order
            answer = events[0] if events else None
            if answer is None or answer.name not in ("OrderAccepted", "OrderRejected"):
                return  # funding (and liquidations) came first: the account may have changed
            if answer.name == "OrderAccepted":
                assert not model["reject"], f"accepted with loss {model['loss']} > {model['excess']}: {where}"
                if model["loss"] > 0:
                    self.seen["ReduceOnlyLossAccepted"] += 1
            else:
                reason = _n(answer["reason"])
                if reason == "InsufficientMargin":
                    assert model["reject"], f"rejected with loss {model['loss']} <= {model['excess']}: {where}"
                    self.seen["ReduceOnlyLossRejected"] += 1
                elif model["reject"]:
                    assert reason not in EARLY_REJECTS, f"{reason} before InsufficientMargin: {where}"

    # -- the invariants ------------------------------------------------------------------------

    def state(self) -> tuple:
        e = self.engine
        return (tuple((e.balance(a, s), e.held(a, s)) for a in ACCOUNTS for s in ASSETS), e.fee_balance(),
                tuple(tuple(e.position(a, i)[k] for k in ("qty", "cost", "realized")) for a in ACCOUNTS for i in PERPS),
                e.live_orders, e.next_order_id, e.next_trade_id)

    def equity_and_mm(self, a: int) -> tuple[int, int]:
        """docs/risk.md "Equity and margin", from the accessors."""
        e = self.engine
        eq, mm = e.balance(a, 0), 0
        for i in PERPS:
            q = e.position(a, i)["qty"]
            n = e.mark_price(i) * abs(q) // self.div[i]
            eq += n if q >= 0 else -ceil_div(e.mark_price(i) * abs(q), self.div[i])  # against the holder
            if q:
                p = self.params[i]
                # each tier's rate on the notional within it (continuous), summed in millionths
                total, k, left = 0, 0, n
                while left > 0:
                    width = left if p["tierNotional"] == 0 or p["tierStepPpm"] == 0 else min(left, p["tierNotional"])
                    total += width * min(PPM, p["imPpm"] + k * p["tierStepPpm"])
                    left -= width
                    k += 1
                mm += ceil_div(ceil_div(total, PPM) * p["mmPpm"], PPM)
        return eq, mm

    def check(self, name: str, f: dict, events: list, before: tuple, risk_before: dict) -> None:
        e = self.engine
        where = f"message {len(self.msgs)} {name} {f}: events {[(ev.name, ev.fields) for ev in events]}"
        # money, per asset
        for s in ASSETS:
            total = sum(e.balance(a, s) for a in ACCOUNTS) + (e.fee_balance() if s == 0 else 0)
            assert total == self.ledger[s], f"asset {s}: {total} != ledger {self.ledger[s]} after {where}"
        # positions
        for i in PERPS:
            assert sum(e.position(a, i)["qty"] for a in ACCOUNTS) == 0, f"positions of {i} after {where}"
        # balances and holds
        for a in ACCOUNTS:
            for s in ASSETS:
                bal, held = e.balance(a, s), e.held(a, s)
                assert held >= 0, f"held({a}, {s}) = {held} after {where}"
                if s != 0 or a not in self.perp_traders:
                    assert 0 <= held <= bal, f"account {a} asset {s}: held {held}, balance {bal} after {where}"
        # a rejection changes nothing
        rejected = events and all(ev.name in ("OrderRejected", "CancelRejected")
                                  or (ev.name == "AdminResult" and _n(ev["reason"]) != "None") for ev in events)
        if rejected:
            assert self.state() == before, f"a rejection changed the state: {where}"
        # liquidations
        stages: dict[int, str] = {}
        covered: set[int] = set()
        for ev in events:
            if ev.name != "Liquidation":
                continue
            stage, acc = _n(ev["stage"]), ev["account"]
            stages[acc] = stages.get(acc, "") + STAGE_LETTER[stage]
            if stage in COVERS:
                covered.add(acc)
                if stage == "AutoDeleverage":
                    covered.add(ev["counterparty"])
                    assert ev["counterparty"] != acc, where
                if stage == "InsuranceTakeover":
                    assert ev["counterparty"] == 0, where
        # the insurance fund after the last thing that moved it, if that was a takeover
        last_fund, prev_stage = None, {}
        for ev in events:
            if ev.name == "FundingApplied":
                last_fund = "Funding"
            elif ev.name == "Liquidation":
                stage, acc = _n(ev["stage"]), ev["account"]
                if stage == "InsuranceTakeover":
                    last_fund = "Fallback" if prev_stage.get(acc) == "AutoDeleverage" else "Takeover"
                elif (stage == "AutoDeleverage" and ev["counterparty"] == 0) or (
                        stage == "InsuranceCover" and ev["amount"]):
                    last_fund = stage
                prev_stage[acc] = stage
        if last_fund == "Takeover":
            r0 = e.account_risk(0)
            assert r0["equity"] >= r0["maintenance"], f"the fund below its maintenance: {r0} after {where}"
            self.seen["FundAfterTakeover"] += 1
        elif last_fund == "InsuranceCover":  # a cover never takes the fund's equity below 0 (defect 5)
            assert e.account_risk(0)["equity"] >= 0, f"a cover took the fund under: after {where}"
        for acc, seq in stages.items():
            assert acc != 0, f"the insurance fund was liquidated: {where}"
            assert all(STAGES.fullmatch(part + "D") for part in seq.split("D")[:-1]) and seq.endswith("D"), (
                f"account {acc}: stages {seq} after {where}")
            assert all(e.position(acc, i)["qty"] == 0 for i in PERPS), f"account {acc} not flat after {where}"
            # a negative balance only as a debt, on an account that holds other assets (defect 7)
            assert e.balance(acc, 0) >= 0 or any(e.balance(acc, s) > 0 for s in ASSETS if s), (
                f"account {acc} left with a negative balance after {where}")
        # equity
        for a in TRADERS:
            r = e.account_risk(a)
            eq, mm = self.equity_and_mm(a)
            assert (r["equity"], r["maintenance"]) == (eq, mm), f"account {a}: {r} != {(eq, mm)} after {where}"
            assert r["free"] == r["equity"] - e.held(a, 0) - r["initial"] and r["initial"] >= r["maintenance"], (
                f"account {a}: {r} after {where}")
            if r["equity"] < 0 and risk_before[a] >= 0:
                assert a in covered, f"account {a}: equity {r['equity']} (was {risk_before[a]}) after {where}"
            if any(e.position(a, i)["qty"] for i in PERPS):
                assert r["equity"] >= r["maintenance"], f"account {a} left liquidatable: {r} after {where}"

    # -- the stream ------------------------------------------------------------------------------

    def setup(self, s: dict) -> None:
        self.taker = {i: s["fees"][i][0] for i in (1, 2, 3)}
        self.send("InstrumentDefinition", instrument=1, tickSize=TICK[1], lotSize=LOT[1], minQty=LOT[1], maxQty=100_000,
                  referencePrice=REF, symbol="SPOT", kind="Spot", haltPolicy="Reject", status="Trading",
                  baseAsset=1, takerFeePpm=s["fees"][1][0], makerFeePpm=s["fees"][1][1])
        for i in PERPS:
            self.send("InstrumentDefinition", instrument=i, tickSize=TICK[i], lotSize=LOT[i], minQty=LOT[i],
                      maxQty=100_000, referencePrice=REF, symbol=f"PERP{i}", kind="Perpetual", haltPolicy="Reject",
                      status="Trading", baseAsset=0, takerFeePpm=s["fees"][i][0], makerFeePpm=s["fees"][i][1])
            self.send("PerpetualParams", instrument=i, **s["params"][i])
        for i in (1, 2, 3):
            self.send("InstrumentLimits", instrument=i, notionalDivisor=s["div"][i])
        for a in TRADERS:
            self.send("CreateAccount", account=a, stpDefault=s["stp"][a])
            for asset, amount in enumerate(s["deposits"][a]):
                if amount:
                    self.send("Funds", account=a, asset=asset, amount=amount, action="Deposit")
        if s["fund"]:
            self.send("Funds", account=0, asset=0, amount=s["fund"], action="Deposit")

    def center(self, inst: int) -> int:
        lo, hi = window(inst)
        e = self.engine
        p = e.mark_price(inst) if inst in PERPS else (e.last_price(inst) or REF)
        return min(max(p - p % TICK[inst], lo), hi)

    def act(self, k: int, a: int, b: int, c: int, d: int) -> None:
        if k < 50:
            self.new_order(a, b, c, d)
        elif k < 56:
            self.cancel(a, b, c)
        elif k < 60:
            self.replace(a, b, c, d)
        elif k < 67:
            self.funds(a, b, c, d)
        elif k < 82:
            self.index(a, b, c, d)
        elif k < 88:
            self.gap = 100 + a * 12  # the next message comes later: funding times pass
        elif k < 91:
            acct = TRADERS[a % 4]
            self.send("MassCancel", clOrdId=self.seq, account=acct, instrument=0, scope="Account", sessionId=acct)
        elif k < 96:
            inst = 1 + a % 3
            lot = LOT[inst]
            self.send("InstrumentLimits", instrument=inst, notionalDivisor=self.div[inst],
                      maxOrderQty=(0, 0, 5 * lot, 20 * lot)[b % 4], maxPosition=(0, 0, 10 * lot, 30 * lot)[c % 4])
        else:
            inst = PERPS[a % 2]
            self.send("PerpetualParams", instrument=inst, imPpm=(50_000, 100_000, 300_000, PPM, 0)[b % 5],
                      mmPpm=(500_000, 800_000)[c % 2], tierNotional=(0, 2000)[(c >> 1) % 2],
                      tierStepPpm=(0, 100_000)[(c >> 2) % 2], fundingIntervalNs=(1000, 1000, 0, 3000)[d % 4],
                      fundingCapPpm=(10_000, PPM)[(d >> 2) % 2], basisCapPpm=(0, 50_000, PPM)[(d >> 3) % 3],
                      basisEmaPpm=(PPM, 300_000)[(d >> 5) % 2])

    def new_order(self, a: int, b: int, c: int, d: int) -> None:
        e = self.engine
        acct = 5 if a % 31 == 30 else (0 if a % 37 == 36 else TRADERS[a % 4])
        inst = (1, 2, 2, 3, 3)[b % 5]
        tick, lot = TICK[inst], LOT[inst]
        lo, hi = window(inst)
        side = "Buy" if (b >> 3) & 1 else "Sell"
        ot = ("Market", "Stop", "StopLimit", "Limit", "Limit", "Limit", "Limit", "Limit", "Limit", "Limit")[c % 10]
        tif = ("IOC", "FOK", "Day", "GTC", "GTC", "GTC", "GTC", "GTC")[(c >> 4) % 8]
        # mostly on the other side of the center, so that orders trade
        off = (d % 13) - 4
        price = min(max(self.center(inst) + (off if side == "Buy" else -off) * tick, lo), hi)
        qty = lot * (1 + (d >> 4) % 12)
        reduce = int(inst in PERPS and (a >> 5) % 7 == 0)
        if reduce and acct < 5:
            q = e.position(acct, inst)["qty"]
            if q and (b >> 4) % 4:
                side = "Sell" if q > 0 else "Buy"
                qty = min(qty, abs(q))
                if d % 2 == 0:  # the whole position, at the edge of what the excess over maintenance covers
                    qty = abs(q)
                    price = self.loss_edge(acct, inst, side, qty, over=d % 4 == 0)
            elif not q and (b >> 4) % 4:
                reduce = 0
        stop = 0
        if ot in ("Stop", "StopLimit"):
            last = e.last_price(inst) or REF
            stop = min(max(last + (2 if side == "Buy" else -2) * tick * (1 + d % 3), lo), hi)
        if ot in ("Market", "Stop"):
            price = 0
        if ot == "Market":
            tif = ("IOC", "GTC")[c % 2]
        self.send("NewOrder", clOrdId=self.seq, price=price, qty=qty, displayQty=0, stopPrice=stop,
                  sessionId=acct, account=acct, instrument=inst, side=side, ordType=ot, timeInForce=tif,
                  postOnly=0, reduceOnly=reduce, stpMode="AccountDefault")

    def loss_edge(self, acct: int, inst: int, side: str, qty: int, over: bool) -> int:
        """``over``: the price of the deepest opposite book level that filling ``qty`` reaches,
        when filling it there would lose more than the account's equity - held - maintenance
        (so that it trades at once, at the largest loss the book offers), or else the price
        (in the window) closest to the mark at which it would; otherwise the one farthest
        from the mark at which it would not. The far end of the window when there is none."""
        e = self.engine
        lo, hi = window(inst)
        tick, div = TICK[inst], self.div[inst]
        r = e.account_risk(acct)
        excess = r["equity"] - e.held(acct, 0) - r["maintenance"]
        mark = e.mark_price(inst)
        at_mark = mark * qty // div
        if over:
            left, lost, deepest = qty, 0, 0
            for level in e.book(inst, 2 if side == "Buy" else 1):  # the opposite side, best first
                deepest = e.order(level[0][0])["price"]
                take = min(left, sum(leaves for _, _, leaves in level))
                lost += (deepest * take // div - mark * take // div) * (1 if side == "Buy" else -1)
                left -= take
                if not left:
                    break
            if lost > excess:
                return deepest
        prices = range(lo, hi + 1, tick) if side == "Buy" else range(hi, lo - 1, -tick)  # losing more and more
        losses = [(p, (p * qty // div - at_mark) if side == "Buy" else (at_mark - p * qty // div)) for p in prices]
        if over:
            return next((p for p, loss in losses if loss > excess), prices[-1])
        return max((p for p, loss in losses if loss <= excess), key=lambda p: p if side == "Buy" else -p,
                   default=prices[-1])

    def pick(self, a: int, b: int) -> tuple[int, int, int]:
        """A live order (id, account, instrument) most of the time, else a dead or unknown id."""
        if self.live and b % 8:
            ids = sorted(self.live)
            oid = ids[b % len(ids)]
            acct, inst = self.live[oid]
            if a % 11 == 10:
                acct = TRADERS[(TRADERS.index(acct) + 1) % 4] if acct in TRADERS else 1  # NotYourOrder
            return oid, acct, inst
        return b, TRADERS[a % 4], 1 + a % 3

    def cancel(self, a: int, b: int, c: int) -> None:
        oid, acct, inst = self.pick(a, b)
        self.send("CancelOrder", clOrdId=self.seq, orderId=oid, origClOrdId=0, sessionId=acct, account=acct,
                  instrument=inst)

    def replace(self, a: int, b: int, c: int, d: int) -> None:
        oid, acct, inst = self.pick(a, b)
        o = self.engine.order(oid)
        tick, lot = TICK[inst], LOT[inst]
        lo, hi = window(inst)
        price = min(max((o["price"] if o and o["price"] else self.center(inst)) + ((c % 9) - 4) * tick, lo), hi)
        qty = lot * (1 + d % 12) + (o["filled"] if o else 0)
        self.send("ReplaceOrder", clOrdId=self.seq, orderId=oid, origClOrdId=0, price=price, qty=qty, displayQty=0,
                  sessionId=acct, account=acct, instrument=inst)

    def funds(self, a: int, b: int, c: int, d: int) -> None:
        e = self.engine
        acct = ACCOUNTS[a % 6]
        asset = (0, 0, 0, 1, 2, 3)[b % 6]
        deposit = c % 3 == 0
        if deposit:
            amount = (0, -5, 1 + d, 100 * (d + 1), 5000, 2**60)[(c >> 2) % 6]
        else:
            known = asset < 3 and (acct == 0 or acct in TRADERS)
            avail = e.balance(acct, asset) - e.held(acct, asset) if known else 10
            free = e.account_risk(acct)["free"] if known else 10
            amount = (0, 1 + d, avail, avail + 1, free, free + 1, max(1, avail // 2))[(c >> 2) % 7]
        self.send("Funds", account=acct, asset=asset, amount=amount, action="Deposit" if deposit else "Withdraw")

    def index(self, a: int, b: int, c: int, d: int) -> None:
        inst = (2, 3, 2, 3, 1)[a % 5]
        lo, hi = window(3 if inst == 1 else inst)
        cur = self.engine.index_price(inst) if inst in PERPS else REF
        m = b % 16
        if m < 6:
            price = cur + cur * (c - 128) * 3 // (128 * 100)
        elif m < 12:
            move = cur * (15 + d * 30 // 255) // 100
            price = cur - move if c & 1 else cur + move
        elif m < 14:
            price = (lo - 1, hi + 1)[m - 12]  # a tick beyond the window
        else:
            price = self.clamping_index(inst, lo, hi)
        if m < 12:
            price = min(max(price, lo), hi)
        self.send("IndexPrice", instrument=inst, price=price)

    def clamping_index(self, inst: int, lo: int, hi: int) -> int:
        """An index near an end of the window at which the mark would be clamped, if there is
        one (the smoothed basis lags behind: docs/risk.md "Mark price"), else an end."""
        if inst not in PERPS:
            return hi
        e = self.engine
        tick = TICK[inst]
        ema = int(e.state.ins[I_EMA, inst])
        bid, ask = e.best_bid(inst), e.best_ask(inst)
        p = self.params[inst]
        for price in [lo + k * tick for k in range(6)] + [hi - k * tick for k in range(6)]:
            sample = 0 if bid is None or ask is None else (bid + ask) // 2 - price
            new = ema + trunc_ppm(sample - ema, p["basisEmaPpm"])
            cap = price * p["basisCapPpm"] // PPM
            if not lo <= price + min(max(new, -cap), cap) <= hi:
                return price
        return lo if ema < 0 else hi

    # -- replay ------------------------------------------------------------------------------

    @staticmethod
    def same_state(x: MatchingEngine, y: MatchingEngine) -> bool:
        """The whole state but the size of the last batch's output."""
        a, b = x.snapshot(), y.snapshot()
        a[G_EVENTS] = b[G_EVENTS] = 0
        return np.array_equal(a, b)

    def check_replay(self, cuts: list[int]) -> None:
        """The same input into a fresh engine, in batches, gives the same bytes; the snapshot
        restored into a fresh engine and fed the rest gives the same bytes and state."""
        fresh = MatchingEngine(EngineConfig(**CFG))
        got, i = [], 0
        for n in cuts + [len(self.msgs)]:
            if i >= len(self.msgs):
                break
            batch = self.msgs[i: i + max(1, n)]
            got.append(fresh.process(pack_slots(batch)).tobytes())
            i += len(batch)
        assert b"".join(got) == b"".join(self.outs), "a replay in batches gave different output"
        assert self.same_state(fresh, self.engine)
        if self.snap is not None:
            k = self.snapshot_at
            restored = MatchingEngine(EngineConfig(**CFG))
            restored.restore(self.snap)
            rest = restored.process(pack_slots(self.msgs[k:])).tobytes() if k < len(self.msgs) else b""
            assert rest == b"".join(self.outs[k:]), f"restored at message {k}: different output"
            assert self.same_state(restored, self.engine)


FEES = [(0, 0), (1000, 0), (5000, -5000), (5000, 2500), (3000, -1000)]


def make_setup(choose, choose_late=None) -> dict:
    """Instrument fees, perpetual parameters, divisors, STP defaults and deposits; ``choose``
    picks one of a list (a hypothesis draw, or a seeded RNG's choice); ``choose_late`` (by
    default ``choose``) the parameters added later (impact notional, liquidation fee,
    interest), so that a seeded RNG's streams stay what they were."""
    choose_late = choose_late or choose
    params = {}
    for i in PERPS:
        params[i] = dict(imPpm=choose([50_000, 100_000, 100_000, 200_000, PPM]),
                         mmPpm=choose([500_000, 800_000]),
                         tierNotional=choose([0, 0, 2000]),
                         tierStepPpm=choose([0, 100_000]),
                         fundingIntervalNs=choose([0, 1000, 1000]),
                         fundingCapPpm=choose([0, 10_000, PPM]),
                         basisCapPpm=choose([0, 50_000, PPM]),
                         basisEmaPpm=choose([0, 300_000, PPM]))
    setup = dict(
        fees={i: choose(FEES) for i in (1, 2, 3)},
        params=params,
        div={1: choose([1, 10]), 2: 1, 3: choose([1, 10])},
        stp={a: choose(["Off", "Off", "CancelResting", "DecrementBoth"]) for a in TRADERS},
        deposits={a: (choose([100, 300, 300, 1000, 20_000]), choose([0, 10, 50]), choose([0, 7])) for a in TRADERS},
        fund=choose([0, 200, 5000]),
    )
    for i in PERPS:  # drawn last: the choices above come out of a seeded RNG as they did before
        params[i].update(impactNotional=choose_late([0, 0, 300]), liquidationFeePpm=choose_late([0, 5000]),
                         interestPpm=choose_late([0, 100]))
    return setup


@st.composite
def setups(draw) -> dict:
    return make_setup(lambda options: draw(st.sampled_from(options)))


BYTE = st.integers(0, 255)
ACTIONS = st.lists(st.tuples(st.integers(0, 99), BYTE, BYTE, BYTE, BYTE), min_size=30, max_size=100)


def run_flow(setup: dict, actions: list, snapshot_at: int, cuts: list[int]) -> Flow:
    flow = Flow(snapshot_at)
    flow.setup(setup)
    for action in actions:
        flow.act(*action)
    flow.check_replay(cuts)
    return flow


@settings(max_examples=EXAMPLES or 40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(setup=setups(), actions=ACTIONS, snapshot_at=st.integers(1, 110),
       cuts=st.lists(st.integers(1, 30), max_size=8))
def test_random_flows_keep_the_risk_invariants(setup, actions, snapshot_at, cuts):
    run_flow(setup, actions, snapshot_at, cuts)


def test_random_flows_reach_the_risk_rules():
    """The property test is worth something only if its streams reach the rules: run the
    same generator from a seeded RNG (uniform choices, long streams) and count what the
    engine answered."""
    rng, late = random.Random(2024), random.Random(13)
    seen: Counter = Counter()
    for _ in range(80):
        actions = [(rng.randrange(100), *(rng.randrange(256) for _ in range(4))) for _ in range(100)]
        seen.update(run_flow(make_setup(rng.choice, late.choice), actions, rng.randrange(1, 120), [5, 17]).seen)
    for name in ("FundingApplied", "MarkPrice", "Trade", "StopTriggered", "MarkClamped", "ImpactSample",
                 "ReduceOnlyLossAccepted",
                 "ReduceOnlyLossRejected", "FundAfterTakeover"):
        assert seen[name], name
    for stage in ("Start", "BookOrder", "InsuranceTakeover", "AutoDeleverage", "Done"):
        assert seen[("Liquidation", stage)] >= 3, (stage, seen[("Liquidation", stage)])
    for reason in ("InsufficientFunds", "InsufficientMargin", "PositionLimit", "MaxOrderQty",
                   "ReduceOnlyWouldIncrease", "UnknownAccount"):
        assert seen[("OrderRejected", reason)], reason
    for reason in ("None", "UnknownAccount", "UnknownAsset", "QtyOutOfRange", "InsufficientFunds",
                   "InsufficientMargin"):
        assert seen[("Funds", reason)], reason
    for reason in ("None", "NotPerpetual", "PriceOutOfRange"):
        assert seen[("IndexPrice", reason)], reason
    for reason in ("None", "InvalidInstrumentDefinition"):
        assert seen[("PerpetualParams", reason)], reason
    assert seen[("OrderCanceled", "Liquidation")] and seen[("CancelRejected", "InsufficientMargin")]
