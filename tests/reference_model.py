"""A slow, plain reference model of the matching engine (docs/engine.md), for the tests.

Nothing here is clever: orders live in a dict, a book side is a dict ``price -> list`` (the
head of a list is the oldest order), every "find" is a linear scan in ascending order id.
The model takes the same SBE bytes as the engine and answers the list of events it must
produce, each an ``Event`` of ``raw_wire`` (every field as a plain int), so comparing them
with the engine's output is a plain ``==``. The invariants of any event stream are
``event_checker``'s; inbound messages come from ``message_builder``.

Money (docs/risk.md).  The model answers ``Funds`` and checks every rule that does not
need settled balances: definitions (``baseAsset``, fees), ``InstrumentLimits`` (including
``maxOrderQty``), ``MaxOrderQty``, ``reduceOnly`` (``InvalidFlags`` on spot,
``ReduceOnlyWouldIncrease`` from the positions it keeps for perpetuals), ``PositionLimit``,
``PerpetualParams`` and ``IndexPrice`` (the mark price).  It does **not** model
settlement, holds, margin, funding or liquidation; instead it makes sure they cannot
change what it predicts, and raises ``Unpredictable`` (an ``AssertionError``) rather
than mis-predict:

* every order it accepts must be affordable by a wide margin: the account's cumulative
  exposure (a bound on everything its orders could ever spend, hold or require as
  margin, see ``Model.cost``) stays within what it deposited, so the engine can never
  answer ``InsufficientFunds``/``InsufficientMargin`` and no account can be liquidated;
* a ``Funds`` whose answer depends on a balance (its ``AdminResult.value`` is the balance
  after) is only predictable for an account that has not traded, and a withdrawal (which
  depends on holds) only for one without working orders, unless it exceeds the balance;
* an accepted ``PerpetualParams`` with a funding interval, a live reduce-only order whose
  account trades again in its instrument, and a mark price that depends on a basis average
  the model could not follow, are all ``Unpredictable``.

Streams for the model (tests/test_engine_model.py, the scenarios) fund each account right
after creating it and stay within these bounds (``Model.affordable`` tells a generator).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable

from raw_wire import (
    ACCOUNT_DEFAULTS, BUY, CLOSED, DAY, DEPOSIT, FOK, GTC, HALTED, LIMIT, MARKET, PERPETUAL, SELL, SPOT,
    STAMP_FIELDS, STOP, STOP_LIMIT, TRADING, VALID_HALT_POLICY, VALID_KIND, VALID_ORD_TYPE, VALID_SCOPE,
    VALID_SIDE, VALID_STATUS, VALID_STP, VALID_TIF, WITHDRAW, C, Event, R, raw_decode,
)
from ringex.engine.wire.messages import SCHEMA, HaltPolicy, KillAction, KillScope, MassCancelScope, StpMode

PPM = 1_000_000
MAX_BALANCE = 2**60  # docs/risk.md: a deposit may not take a balance above this
POSITION_CAP = 2**56  # a perpetual's position is at most POSITION_CAP // top
MAX_PERPETUALS = 32  # docs/risk.md: at most 32 perpetuals can be defined
MAX_KILLED_SESSIONS = 32  # as the engine's table (ringex.engine.kernel.state)
PERPETUAL_PARAMS = ("imPpm", "mmPpm", "tierNotional", "tierStepPpm", "fundingIntervalNs", "fundingCapPpm",
                    "basisCapPpm", "basisEmaPpm", "liquidationFeePpm", "interestPpm", "impactNotional")


def tdiv(a: int, b: int) -> int:
    """Integer division rounding toward zero (``b > 0``)."""
    return a // b if a >= 0 else -((-a) // b)


class Unpredictable(AssertionError):
    """The stream went where the model cannot follow (settled money, funding, liquidation):
    a limit of the model, not a fault of the engine.  The stream must be changed."""


@dataclass
class ModelConfig:
    """The same keys and defaults as ``EngineConfig`` (any object with them will do)."""

    max_instruments: int = 16
    max_accounts: int = 1024
    max_orders: int = 1 << 18
    price_levels: int = 1 << 16
    max_stops: int = 4096
    market_protection_ticks: int = 100
    max_assets: int = 8


NO_CAP = -1  # Order.cap of an order whose execution has no budget price


@dataclass(eq=False)
class Order:
    oid: int
    clord: int
    session: int
    account: int
    instrument: int
    side: int
    ord_type: int
    tif: int
    post_only: int
    stp: int  # as sent (AccountDefault allowed)
    price: int
    stop_price: int
    qty: int  # total: filled + leaves while live
    display: int  # displayQty, 0 = fully displayed
    filled: int = 0
    leaves: int = 0
    visible: int = 0  # displayed now, while resting
    state: str = "new"  # queued | stop | aggressor | resting | done
    reduce_only: int = 0
    # a spot buy never trades above the price its hold was computed at (docs/risk.md "Spot
    # holds"): for a Market or Stop buy that caps its execution; None: the ask side was empty
    # at arrival, the hold is 0 and the order trades nothing
    cap: int | None = NO_CAP

    @property
    def is_stop_type(self) -> bool:
        return self.ord_type in (STOP, STOP_LIMIT)

    @property
    def market_like(self) -> bool:
        """Executes as a market order (a Market, or a triggered Stop)."""
        return self.ord_type in (MARKET, STOP)


@dataclass(eq=False)
class Instrument:
    iid: int
    tick: int
    lot: int
    min_qty: int
    max_qty: int
    ref: int
    halt_policy: int
    status: int
    base: int  # lowest price in ticks
    levels: int
    kind: int = SPOT
    base_asset: int = 1
    maker_fee_ppm: int = 0
    taker_fee_ppm: int = 0
    max_order_qty: int = 0
    max_position: int = 0
    max_notional: int = 0
    notional_divisor: int = 1
    band_ppm: int = 0
    cb_move_ppm: int = 0
    cb_window_ns: int = 0
    cb_halt_ns: int = 0
    kill: bool = False
    cb_start: int = 0  # the breaker window the reference belongs to
    cb_ref: int | None = None  # the window's reference price (its first trade)
    cb_until: int = 0  # halted by the breaker until this sequencer time (0: not)
    last: int | None = None
    bids: dict[int, list[Order]] | None = None
    asks: dict[int, list[Order]] | None = None
    # perpetuals (docs/risk.md "Perpetual futures"); the margin fields are kept, not used
    params: dict[str, int] | None = None  # the last PerpetualParams applied (None: defaults)
    index: int = 0
    mark: int = 0
    ema: int | None = 0  # the smoothed basis; None: unknown (moved while the weight was the default)

    def __post_init__(self) -> None:
        self.bids, self.asks = {}, {}
        self.index = self.mark = self.ref

    @property
    def top(self) -> int:
        """The highest price of the book window."""
        return (self.base + self.levels - 1) * self.tick

    @property
    def bottom(self) -> int:
        """The lowest price of the book window."""
        return self.base * self.tick

    @property
    def perpetual(self) -> bool:
        return self.kind == PERPETUAL

    def in_book(self, price: int) -> bool:
        return price % self.tick == 0 and self.base <= price // self.tick < self.base + self.levels

    def side(self, side: int) -> dict[int, list[Order]]:
        return self.bids if side == BUY else self.asks

    def best(self, side: int) -> int | None:
        prices = [p for p, q in self.side(side).items() if q]
        if not prices:
            return None
        return max(prices) if side == BUY else min(prices)

    def band(self) -> tuple[int, int]:
        """The price band around its reference (docs/risk.md "Price band")."""
        if self.kind == PERPETUAL:
            ref = self.mark
        elif self.cb_on and self.cb_ref is not None:
            ref = self.cb_ref
        else:
            ref = self.ref if self.last is None else self.last
        w = ref * self.band_ppm // PPM
        return ref - w, ref + w

    def notional(self, price: int, qty: int) -> int:
        return price * qty // self.notional_divisor

    @property
    def cb_on(self) -> bool:
        return bool(self.cb_move_ppm and self.cb_window_ns and self.cb_halt_ns)


def shown(display: int, leaves: int) -> int:
    """Displayed quantity of an order with ``leaves`` left (docs: Quantities)."""
    return min(display, leaves) if display > 0 else leaves


class Model:
    """The reference model.  ``process(bytes) -> list[Event]``."""

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        base = ModelConfig()
        for key in vars(base):
            if config is not None and hasattr(config, key):
                setattr(base, key, int(getattr(config, key)))
        for key, value in overrides.items():
            if not hasattr(base, key):
                raise TypeError(f"unknown config key {key}")
            setattr(base, key, int(value))
        self.cfg = base
        self.instruments: dict[int, Instrument] = {}
        self.accounts: dict[int, int] = {}  # id -> stpDefault
        self.max_open: dict[int, int] = {}  # id -> maxOpenOrders (0: no limit)
        self.killed_accounts: set[int] = set()
        self.killed_sessions: list[int] = []
        self.kill_exchange = False
        self.orders: dict[int, Order] = {}  # live orders
        self.stop_slots = 0
        self.next_oid = 1
        self.next_tid = 1
        self.events: list[Event] = []
        self.stamp: dict[str, int] = dict.fromkeys(STAMP_FIELDS, 0)
        self.quiet = False  # while simulating a FOK order
        # money, as far as the model follows it (see the module docstring)
        self.balances: dict[tuple[int, int], int] = {}  # (account, asset) -> deposits - withdrawals
        self.traded: set[int] = set()  # accounts with a trade: their balances are settled, unknown here
        self.exposure: dict[tuple[int, int], int] = {}  # (account, asset) -> bound on what it may need
        self.positions: dict[tuple[int, int], int] = {}  # (account, perpetual) -> signed position

    # -- plumbing ----------------------------------------------------------------------

    def process_many(self, messages: Iterable[bytes]) -> list[Event]:
        out: list[Event] = []
        for m in messages:
            out.extend(self.process(m))
        return out

    def process(self, buf: bytes) -> list[Event]:
        self.events = []
        tid, m, stamp = raw_decode(buf)
        self.stamp = dict(zip(STAMP_FIELDS, stamp))
        self.cb_reopen()
        for iid, inst in sorted(self.instruments.items()):
            if inst.params and inst.params["fundingIntervalNs"]:
                raise Unpredictable(f"perpetual {iid} has a funding interval: the model does not model funding")
        if m is None:
            self.emit("OrderRejected", reason=R.UnsupportedMessage, refTemplateId=tid)
        else:
            {
                1: self.new_order, 2: self.cancel, 3: self.replace, 4: self.mass_cancel,
                10: self.define_instrument, 11: self.create_account, 12: self.funds, 13: self.index_price,
                14: self.status_update, 15: self.kill_switch, 16: self.set_limits, 17: self.perpetual_params,
            }[tid](m)
        return self.events

    def emit(self, name: str, **fields: int) -> None:
        if self.quiet:
            return
        layout = SCHEMA.message(name)
        out = dict.fromkeys(layout.field_names, 0)
        out.update(self.stamp)
        for k, v in fields.items():
            if k not in out:
                raise KeyError(f"{name} has no field {k}")
            out[k] = int(v)
        self.events.append((name, out))

    def live(self, pred=lambda o: True) -> list[Order]:
        return [self.orders[k] for k in sorted(self.orders) if pred(self.orders[k])]

    # -- admin -------------------------------------------------------------------------

    def admin_result(self, tid: int, m: dict, reason: int, value: int = 0) -> None:
        self.emit("AdminResult", value=value, account=m.get("account", 0), instrument=m.get("instrument", 0),
                  refTemplateId=tid, reason=reason)

    def define_instrument(self, m: dict) -> None:
        i = m["instrument"]
        tick, lot, lo, hi, ref = m["tickSize"], m["lotSize"], m["minQty"], m["maxQty"], m["referencePrice"]
        if not 1 <= i < self.cfg.max_instruments:
            return self.admin_result(10, m, R.InstrumentCapacity)
        if i in self.instruments:
            return self.admin_result(10, m, R.DuplicateInstrument)
        maker, taker, kind, asset = m["makerFeePpm"], m["takerFeePpm"], m["kind"], m["baseAsset"]
        ok = (tick > 0 and lot > 0 and 0 < lo <= hi and lo % lot == 0 and hi % lot == 0
              and ref > 0 and ref % tick == 0 and kind in VALID_KIND
              and m["haltPolicy"] in VALID_HALT_POLICY and m["status"] in VALID_STATUS
              # docs/risk.md: a spot instrument names its base asset, a perpetual's is 0; fees
              and (1 <= asset < self.cfg.max_assets if kind == SPOT else asset == 0)
              and 0 <= taker <= PPM and -taker <= maker <= taker)
        levels = self.cfg.price_levels
        if ok:  # docs/risk.md: nothing can overflow
            base = max(1, ref // tick - levels // 2)
            top = (base + levels - 1) * tick
            ok = top * hi < 2**62
        if not ok:
            return self.admin_result(10, m, R.InvalidInstrumentDefinition)
        if kind == PERPETUAL and sum(x.perpetual for x in self.instruments.values()) >= MAX_PERPETUALS:
            return self.admin_result(10, m, R.InstrumentCapacity)
        # limits off (the Instrument defaults) until an InstrumentLimits sets them
        self.instruments[i] = Instrument(i, tick, lot, lo, hi, ref, m["haltPolicy"], m["status"], base, levels,
                                         kind=kind, base_asset=asset, maker_fee_ppm=maker, taker_fee_ppm=taker)
        self.admin_result(10, m, R["None"])
        self.emit("InstrumentStatus", instrument=i, status=m["status"])

    def set_limits(self, m: dict) -> None:
        """docs/risk.md "InstrumentLimits"."""
        inst = self.instruments.get(m["instrument"])
        if inst is None:
            return self.admin_result(16, m, R.UnknownInstrument)
        if not (m["notionalDivisor"] >= 1 and m["maxOrderNotional"] >= 0
                and m["maxOrderQty"] >= 0 and m["maxPosition"] >= 0
                and 0 <= m["priceBandPpm"] <= PPM and 0 <= m["cbMovePpm"] <= PPM
                and m["cbWindowNs"] < 2**63 and m["cbHaltNs"] < 2**63):
            return self.admin_result(16, m, R.InvalidInstrumentDefinition)
        if (inst.tick * inst.lot) % m["notionalDivisor"] != 0:
            return self.admin_result(16, m, R.InexactNotional)  # issue 13, defect 2
        if m["notionalDivisor"] != inst.notional_divisor and (
                any(o.instrument == inst.iid for o in self.orders.values())
                or any(q != 0 for (_a, i), q in self.positions.items() if i == inst.iid)):
            return self.admin_result(16, m, R.InstrumentInUse)  # issue 13, defect 4
        self.admin_result(16, m, R["None"])
        inst.max_order_qty = m["maxOrderQty"]
        inst.max_position = m["maxPosition"]
        inst.max_notional = m["maxOrderNotional"]
        inst.notional_divisor = m["notionalDivisor"]
        inst.band_ppm = m["priceBandPpm"]
        breaker = (m["cbMovePpm"], m["cbWindowNs"], m["cbHaltNs"])
        if breaker != (inst.cb_move_ppm, inst.cb_window_ns, inst.cb_halt_ns):
            # a new window from the next trade; a breaker halt keeps its scheduled reopen
            inst.cb_move_ppm, inst.cb_window_ns, inst.cb_halt_ns = breaker
            inst.cb_start, inst.cb_ref = 0, None

    def create_account(self, m: dict) -> None:
        a = m["account"]
        if not 1 <= a < self.cfg.max_accounts:
            return self.admin_result(11, m, R.AccountCapacity)
        if a in self.accounts:
            return self.admin_result(11, m, R.DuplicateAccount)
        if m["stpDefault"] not in ACCOUNT_DEFAULTS:
            return self.admin_result(11, m, R.InvalidStpMode)
        self.accounts[a] = m["stpDefault"]
        self.max_open[a] = m["maxOpenOrders"]
        self.admin_result(11, m, R["None"])

    # -- money (docs/risk.md), as far as the model follows it -----------------------------

    def funds(self, m: dict) -> None:
        """``Funds``: checks in the documented order; ``value`` is the balance after (unchanged
        when rejected; 0 when there is no such balance)."""
        a, asset, amount, action = m["account"], m["asset"], m["amount"], m["action"]
        if not (a == 0 or a in self.accounts):
            return self.admin_result(12, m, R.UnknownAccount)
        if not asset < self.cfg.max_assets:
            return self.admin_result(12, m, R.UnknownAsset)
        if a in self.traded:
            raise Unpredictable(f"Funds for account {a}, which has traded: its balance is settled money, "
                                "which the model does not follow (send Funds before an account trades)")
        bal = self.deposited(a, asset)
        if action not in (DEPOSIT, WITHDRAW):
            return self.admin_result(12, m, R.InvalidScope, bal)
        if amount <= 0:
            return self.admin_result(12, m, R.QtyOutOfRange, bal)
        if action == DEPOSIT:
            if bal + amount > MAX_BALANCE:
                return self.admin_result(12, m, R.QtyOutOfRange, bal)
            bal += amount
        else:
            if amount > bal:  # available = balance - held <= balance
                return self.admin_result(12, m, R.InsufficientFunds, bal)
            if any(o.account == a for o in self.orders.values()):
                raise Unpredictable(f"a withdrawal from account {a}, which has working orders: it depends on "
                                    "their holds and margin, which the model does not follow")
            bal -= amount
        self.balances[(a, asset)] = bal
        self.admin_result(12, m, R["None"], bal)

    def deposited(self, account: int, asset: int) -> int:
        """Deposits minus withdrawals (the balance, as long as the account has not traded)."""
        return self.balances.get((account, asset), 0)

    @staticmethod
    def cost(inst: Instrument, side: int, qty: int) -> dict[int, int]:
        """A bound on what an order of ``qty`` may ever take of each asset of its account: a
        spot buy's hold (notional at a price up to twice the top of the book, plus a taker fee
        of at most the notional); a spot sell's hold (its quantity of the base asset); for a
        perpetual the cash paid, the position's value lost, its initial margin and the loss
        term of the margin (each at most a notional at twice the top: a mark is at most
        index + index)."""
        unit = 2 * inst.top * qty + 2
        if inst.perpetual:
            return {0: 4 * unit}
        if side == BUY:
            return {0: 2 * unit}
        return {inst.base_asset: qty}

    def affordable(self, account: int, instrument: int, side: int, qty: int) -> bool:
        """Whether one more order (or replace) of ``qty`` keeps ``account`` within its deposits
        by the model's bound: then no money check can refuse it (for stream generators)."""
        inst = self.instruments.get(instrument)
        if inst is None or qty <= 0:
            return True
        return all(self.exposure.get((account, asset), 0) + c <= self.deposited(account, asset)
                   for asset, c in self.cost(inst, side, qty).items())

    def commit_exposure(self, account: int, inst: Instrument, side: int, qty: int) -> None:
        """Before an order or replace passes its money check: it must be affordable by the bound."""
        if not self.affordable(account, inst.iid, side, qty):
            raise Unpredictable(
                f"an order of {qty} on instrument {inst.iid} by account {account} could meet a money check "
                f"(exposure {dict((k, v) for k, v in self.exposure.items() if k[0] == account)}, "
                f"deposits {dict((k, v) for k, v in self.balances.items() if k[0] == account)}): "
                "the model does not follow balances; fund the account or keep orders small")
        for asset, c in self.cost(inst, side, qty).items():
            self.exposure[(account, asset)] = self.exposure.get((account, asset), 0) + c

    def perpetual_params(self, m: dict) -> None:
        inst = self.instruments.get(m["instrument"])
        if inst is None:
            return self.admin_result(17, m, R.UnknownInstrument)
        if not inst.perpetual:
            return self.admin_result(17, m, R.NotPerpetual)
        if not (1 <= m["imPpm"] <= PPM and 1 <= m["mmPpm"] <= PPM and m["tierNotional"] >= 0
                and 0 <= m["tierStepPpm"] <= PPM and m["fundingIntervalNs"] < 2**63
                and 0 <= m["fundingCapPpm"] <= PPM and 0 <= m["basisCapPpm"] <= PPM
                and 0 <= m["basisEmaPpm"] <= PPM and 0 <= m["liquidationFeePpm"] <= PPM
                and -PPM <= m["interestPpm"] <= PPM and m["impactNotional"] >= 0):
            return self.admin_result(17, m, R.InvalidInstrumentDefinition)
        self.admin_result(17, m, R["None"])
        inst.params = {k: m[k] for k in PERPETUAL_PARAMS}

    def index_price(self, m: dict) -> None:
        """``IndexPrice``: a new index and mark (docs/risk.md "Mark price"), both in the book
        window.  The liquidation check that follows finds nobody: every account is funded far
        beyond its exposure."""
        inst = self.instruments.get(m["instrument"])
        if inst is None:
            return self.admin_result(13, m, R.UnknownInstrument)
        if not inst.perpetual:
            return self.admin_result(13, m, R.NotPerpetual)
        index = m["price"]
        if not inst.bottom <= index <= inst.top:
            return self.admin_result(13, m, R.PriceOutOfRange)
        self.admin_result(13, m, R["None"])
        if inst.params and inst.params.get("impactNotional"):
            raise Unpredictable(f"perpetual {inst.iid}: an impact notional samples the book's depth, "
                                "not modelled (tests/test_risk_perp.py)")
        bid, ask = inst.best(BUY), inst.best(SELL)
        sample = (bid + ask) // 2 - index if bid is not None and ask is not None else 0
        weight = inst.params["basisEmaPpm"] if inst.params else None
        if inst.ema is not None:
            if weight is not None:
                inst.ema += tdiv((sample - inst.ema) * weight, PPM)
            elif sample != inst.ema:
                inst.ema = None  # moved by the default weight, which docs/risk.md does not give
        cap = index * (inst.params["basisCapPpm"] if inst.params else 0) // PPM
        if cap == 0:
            basis = 0
        elif inst.ema is None:
            raise Unpredictable(f"perpetual {inst.iid}: its basis average moved before its PerpetualParams "
                                "set a weight, and now a basis cap makes the mark depend on it")
        else:
            basis = min(max(inst.ema, -cap), cap)
        # the mark stays in the book window; the event's basis is mark - index after that clamp
        inst.index, inst.mark = index, min(max(index + basis, inst.bottom), inst.top)
        self.emit("MarkPrice", markPrice=inst.mark, indexPrice=index, basis=inst.mark - index, instrument=inst.iid)

    def kill_switch(self, m: dict) -> None:
        scope, action, a, sess, i = m["scope"], m["action"], m["account"], m["sessionId"], m["instrument"]
        if scope not in (1, 2, 3, 4) or action not in (KillAction.Engage, KillAction.Release):
            return self.admin_result(15, m, R.InvalidScope)
        if scope == KillScope.Account and a not in self.accounts:
            return self.admin_result(15, m, R.UnknownAccount)
        if scope == KillScope.Instrument and i not in self.instruments:
            return self.admin_result(15, m, R.UnknownInstrument)
        engage = action == KillAction.Engage
        if (scope == KillScope.Session and engage and sess not in self.killed_sessions
                and len(self.killed_sessions) >= MAX_KILLED_SESSIONS):
            return self.admin_result(15, m, R.KillSwitchCapacity)
        self.admin_result(15, m, R["None"])
        if scope == KillScope.Account:
            (self.killed_accounts.add if engage else self.killed_accounts.discard)(a)
            chosen = lambda o: o.account == a  # noqa: E731
        elif scope == KillScope.Session:
            if engage and sess not in self.killed_sessions:
                self.killed_sessions.append(sess)
            elif not engage and sess in self.killed_sessions:
                self.killed_sessions.remove(sess)
            chosen = lambda o: o.session == sess  # noqa: E731
        elif scope == KillScope.Instrument:
            self.instruments[i].kill = engage
            chosen = lambda o: o.instrument == i  # noqa: E731
        else:
            self.kill_exchange = engage
            chosen = lambda o: True  # noqa: E731
        self.emit("KillSwitchStatus", account=a, sessionId=sess, instrument=i, scope=scope, action=action)
        if engage:
            for o in self.live(chosen):
                self.cancel_whole(o, C.KillSwitch)

    def kill_reason(self, m: dict, inst: Instrument) -> int | None:
        if m["account"] in self.killed_accounts:
            return R.KillSwitchAccount
        if m["sessionId"] in self.killed_sessions:
            return R.KillSwitchSession
        if inst.kill:
            return R.KillSwitchInstrument
        if self.kill_exchange:
            return R.KillSwitchExchange
        return None

    def pre_trade(self, m: dict, inst: Instrument) -> int | None:
        """docs/risk.md pre-trade checks, between docs/engine.md steps 8 and 9: MaxOrderQty,
        PriceBand, MaxNotional, MaxOpenOrders, ReduceOnlyWouldIncrease, PositionLimit, then
        money (which the model does not check: ``commit_exposure`` makes sure it passes)."""
        ot, side, price, qty = m["ordType"], m["side"], m["price"], m["qty"]
        if inst.max_order_qty and qty > inst.max_order_qty:
            return R.MaxOrderQty
        if inst.band_ppm and ot in (LIMIT, STOP_LIMIT):
            lo, hi = inst.band()
            if not lo <= price <= hi:
                return R.PriceBand
        if inst.max_notional:
            p = price if ot in (LIMIT, STOP_LIMIT) else m["stopPrice"] if ot == STOP else self.protection(inst, side)
            if p is not None:
                p = min(max(p, inst.base * inst.tick), (inst.base + inst.levels - 1) * inst.tick)
                if inst.notional(p, qty) > inst.max_notional:
                    return R.MaxNotional
        most = self.max_open[m["account"]]
        if most and sum(1 for o in self.orders.values() if o.account == m["account"]) >= most:
            return R.MaxOpenOrders
        if inst.perpetual:
            q = self.positions.get((m["account"], inst.iid), 0)
            if m["reduceOnly"]:
                if not (q > 0 and side == SELL or q < 0 and side == BUY) or qty > abs(q):
                    return R.ReduceOnlyWouldIncrease
                return None  # not checked further
            if self.over_position_limit(m["account"], inst, side, qty):
                return R.PositionLimit
        return None

    def over_position_limit(self, account: int, inst: Instrument, side: int, qty: int,
                            instead_of: Order | None = None) -> bool:
        """docs/risk.md check 6: with ``qty`` more on ``side`` (in place of ``instead_of``'s
        leaves, for a replace) and every open order of the account filled."""
        q = self.positions.get((account, inst.iid), 0)
        mine = [o for o in self.orders.values() if o.account == account and o.instrument == inst.iid
                and not o.reduce_only and o is not instead_of]
        buys = sum(o.leaves for o in mine if o.side == BUY) + (qty if side == BUY else 0)
        sells = sum(o.leaves for o in mine if o.side == SELL) + (qty if side == SELL else 0)
        limit = POSITION_CAP // inst.top
        if inst.max_position:
            limit = min(limit, inst.max_position)
        return max(abs(q + buys), abs(q - sells)) > limit

    def protection(self, inst: Instrument, side: int) -> int | None:
        """A market order's limit price: the best opposite price plus the protection, clipped
        to the price band; None when the opposite side is empty (nothing can trade)."""
        opposite = SELL if side == BUY else BUY
        best = inst.best(opposite)
        if best is None:
            return None
        reach = self.cfg.market_protection_ticks * inst.tick
        if side == BUY:
            limit = best + reach
            if inst.band_ppm:
                limit = min(limit, inst.band()[1] // inst.tick * inst.tick)
        else:
            limit = best - reach
            if inst.band_ppm:
                limit = max(limit, -(-inst.band()[0] // inst.tick) * inst.tick)
        return limit

    def status_update(self, m: dict) -> None:
        inst = self.instruments.get(m["instrument"])
        if inst is None:
            return self.admin_result(14, m, R.UnknownInstrument)
        if m["status"] not in VALID_STATUS:
            return self.admin_result(14, m, R.InvalidInstrumentDefinition)
        if inst.cb_until:  # the operator takes over from the circuit breaker
            inst.cb_until, inst.cb_ref = 0, None
        inst.status = m["status"]
        self.admin_result(14, m, R["None"])
        self.emit("InstrumentStatus", instrument=inst.iid, status=inst.status)
        if inst.status == CLOSED:
            for o in self.live(lambda o: o.instrument == inst.iid and o.tif == DAY):
                self.cancel_whole(o, C.Expired)
        elif inst.status == TRADING:
            # (processing one queued order never touches another: they are not in the book)
            self.release_queue(inst)

    def release_queue(self, inst: Instrument) -> None:
        for o in self.live(lambda o: o.instrument == inst.iid and o.state == "queued"):
            if inst.status != TRADING:  # the circuit breaker halted it again
                return
            self.start(o, inst)

    # -- circuit breaker (docs/risk.md) -------------------------------------------------

    def cb_reopen(self) -> None:
        ts = self.stamp["timestampNs"]
        for iid in sorted(self.instruments):
            inst = self.instruments[iid]
            if inst.cb_until and ts >= inst.cb_until:
                inst.cb_until, inst.cb_ref = 0, None
                inst.status = TRADING
                self.emit("InstrumentStatus", instrument=iid, status=TRADING)
                self.release_queue(inst)

    def cb_breach(self, inst: Instrument, price: int) -> bool:
        ts = self.stamp["timestampNs"]
        start = ts - ts % inst.cb_window_ns
        if start != inst.cb_start:
            inst.cb_start, inst.cb_ref = start, None
        if inst.cb_ref is None:
            inst.cb_ref = price
            return False
        return abs(price - inst.cb_ref) * PPM > inst.cb_ref * inst.cb_move_ppm

    def cb_trip(self, o: Order, inst: Instrument) -> None:
        self.emit("OrderCanceled", **self.order_ids(o), canceledQty=o.leaves, reason=C.Halted)
        o.leaves = 0
        inst.status = HALTED
        inst.cb_until = min(self.stamp["timestampNs"] + inst.cb_halt_ns, 2**63 - 1)
        self.emit("InstrumentStatus", instrument=inst.iid, status=HALTED)

    # -- new orders --------------------------------------------------------------------

    def new_order(self, m: dict) -> None:
        def reject(reason: int) -> None:
            self.emit("OrderRejected", clOrdId=m["clOrdId"], orderId=0, sessionId=m["sessionId"],
                      account=m["account"], instrument=m["instrument"], reason=reason, refTemplateId=1)

        inst = self.instruments.get(m["instrument"])
        side, ot, tif = m["side"], m["ordType"], m["timeInForce"]
        qty, price, stop_price, dq = m["qty"], m["price"], m["stopPrice"], m["displayQty"]
        # 1
        if inst is None:
            return reject(R.UnknownInstrument)
        if m["account"] not in self.accounts:
            return reject(R.UnknownAccount)
        kill = self.kill_reason(m, inst)
        if kill is not None:
            return reject(kill)
        # 2
        if side not in VALID_SIDE:
            return reject(R.InvalidSide)
        if ot not in VALID_ORD_TYPE:
            return reject(R.InvalidOrdType)
        if tif not in VALID_TIF:
            return reject(R.InvalidTimeInForce)
        if m["postOnly"] not in (0, 1) or m["reduceOnly"] not in (0, 1):
            return reject(R.InvalidFlags)
        # docs/risk.md check 5: reduce-only on a spot instrument is InvalidFlags; it says "step 4
        # of docs/engine.md", which is the quantity checks: the engine checks it here, with the
        # other flag values (step 2), and the model follows the engine (reported to the lead)
        if m["reduceOnly"] and not inst.perpetual:
            return reject(R.InvalidFlags)
        if m["stpMode"] not in VALID_STP:
            return reject(R.InvalidStpMode)
        # 3
        if inst.status == CLOSED:
            return reject(R.InstrumentClosed)
        if inst.status == HALTED and inst.halt_policy == HaltPolicy.Reject:
            return reject(R.InstrumentHalted)
        # 4
        if qty <= 0:
            return reject(R.QtyOutOfRange)
        if qty % inst.lot:
            return reject(R.BadLot)
        if not inst.min_qty <= qty <= inst.max_qty:
            return reject(R.QtyOutOfRange)
        # 5
        if ot in (LIMIT, STOP_LIMIT):
            if price <= 0:
                return reject(R.PriceOutOfRange)
            if price % inst.tick:
                return reject(R.BadTick)
            if not inst.in_book(price):
                return reject(R.PriceOutOfRange)
        elif price != 0:
            return reject(R.PriceOutOfRange)
        # 6
        if ot in (STOP, STOP_LIMIT):
            already = inst.last is not None and (
                (side == BUY and stop_price <= inst.last) or (side == SELL and stop_price >= inst.last))
            if stop_price <= 0 or not inst.in_book(stop_price) or already:
                return reject(R.InvalidStopPrice)
        elif stop_price != 0:
            return reject(R.InvalidStopPrice)
        # 7
        if m["postOnly"] and not (ot == LIMIT and tif in (DAY, GTC)):
            return reject(R.InvalidFlags)
        if dq != 0 and not (ot in (LIMIT, STOP_LIMIT) and tif in (DAY, GTC)
                            and 0 < dq <= qty and dq % inst.lot == 0):
            return reject(R.InvalidDisplayQty)
        # 8
        if len(self.orders) >= self.cfg.max_orders:
            return reject(R.BookFull)
        if ot in (STOP, STOP_LIMIT) and self.stop_slots >= self.cfg.max_stops:
            return reject(R.StopCapacity)
        # 8, then the pre-trade checks of docs/risk.md
        risk = self.pre_trade(m, inst)
        if risk is not None:
            return reject(risk)
        # money: the model cannot check it, so it must be sure the engine's check passes
        if m["reduceOnly"]:  # not checked; it may still move money
            for asset, c in self.cost(inst, side, qty).items():
                self.exposure[(m["account"], asset)] = self.exposure.get((m["account"], asset), 0) + c
        else:
            self.commit_exposure(m["account"], inst, side, qty)
        # 9
        if m["postOnly"] and self.crosses(inst, side, price):
            return reject(R.PostOnlyWouldTrade)
        o = Order(oid=self.next_oid, clord=m["clOrdId"], session=m["sessionId"], account=m["account"],
                  instrument=inst.iid, side=side, ord_type=ot, tif=tif, post_only=m["postOnly"],
                  stp=m["stpMode"], price=price, stop_price=stop_price, qty=qty, display=dq, leaves=qty,
                  reduce_only=m["reduceOnly"])
        if side == BUY and not inst.perpetual:  # the price of its hold caps a Market or Stop buy
            if ot == STOP:  # its risk price: clamped to the book window
                o.cap = min(stop_price + self.cfg.market_protection_ticks * inst.tick, inst.top)
            elif ot == MARKET:
                o.cap = self.protection(inst, BUY)
        # 10
        if tif == FOK and not self.fillable(o):
            return reject(R.FokUnfillable)

        self.next_oid += 1
        self.orders[o.oid] = o
        if o.is_stop_type:
            self.stop_slots += 1
        self.emit("OrderAccepted", orderId=o.oid, clOrdId=o.clord, price=price, qty=qty, displayQty=dq,
                  stopPrice=stop_price, sessionId=o.session, account=o.account, instrument=o.instrument,
                  side=side, ordType=ot, timeInForce=tif, postOnly=m["postOnly"], reduceOnly=m["reduceOnly"])
        if inst.status == HALTED:  # policy Queue
            o.state = "queued"
            return
        self.start(o, inst)

    def start(self, o: Order, inst: Instrument) -> None:
        """An accepted order enters the market (on arrival, or at resume when it was queued)."""
        if o.is_stop_type:
            o.state = "stop"
            return
        self.run_aggressor(o, inst)
        self.evaluate_stops(inst)

    def crosses(self, inst: Instrument, side: int, price: int) -> bool:
        if side == BUY:
            ask = inst.best(SELL)
            return ask is not None and price >= ask
        bid = inst.best(BUY)
        return bid is not None and price <= bid

    def fillable(self, o: Order) -> bool:
        """FOK: run the execution on a copy of everything, silently, and see."""
        twin = copy.deepcopy(self)
        twin.quiet = True
        twin.events = []
        t = copy.deepcopy(o)
        # the walk is not capped at a spot buy's hold price: for a Stop buy, whose cap (stop price
        # + protection) may be below the protection from the book now, the engine counts what
        # lies up to best ask + protection (docs leave it open; reported to the lead)
        t.cap = NO_CAP
        twin.execute(t, twin.instruments[t.instrument])
        return t.filled == o.qty

    # -- execution ---------------------------------------------------------------------

    def run_aggressor(self, o: Order, inst: Instrument) -> None:
        """Execute, then the remainder rules: rest, or cancel."""
        self.execute(o, inst)
        if o.leaves > 0:
            if not o.market_like and o.tif in (DAY, GTC):
                self.rest(o, inst)
                return
            reason = C.MarketRemainder if o.market_like else C.IocRemainder
            self.cancel_whole(o, reason)
        self.forget(o)

    def forget(self, o: Order) -> None:
        if o.leaves == 0:
            o.state = "done"
            self.orders.pop(o.oid, None)

    def rest(self, o: Order, inst: Instrument) -> None:
        o.state = "resting"
        o.visible = shown(o.display, o.leaves)
        inst.side(o.side).setdefault(o.price, []).append(o)
        self.emit("BookAdd", orderId=o.oid, price=o.price, qty=o.visible, instrument=inst.iid, side=o.side)

    def effective_stp(self, o: Order) -> int:
        return self.accounts[o.account] if o.stp == StpMode.AccountDefault else o.stp

    def execute(self, o: Order, inst: Instrument) -> None:
        o.state = "aggressor"
        opposite = SELL if o.side == BUY else BUY
        book = inst.side(opposite)
        if o.market_like:
            limit = self.protection(inst, o.side)
            if limit is None or o.cap is None:
                return  # no limit at all (or a spot buy that could hold nothing): nothing trades
            if o.cap != NO_CAP:
                limit = min(limit, o.cap)
        else:
            limit = o.price
        stp = self.effective_stp(o)
        while o.leaves > 0:
            best = inst.best(opposite)
            if best is None or (best > limit if o.side == BUY else best < limit):
                return
            level = book[best]
            r = level[0]
            if r.account == o.account and stp != StpMode.Off:
                if stp in (StpMode.CancelResting, StpMode.CancelBoth):
                    self.cancel_whole(r, C.SelfTrade)
                if stp in (StpMode.CancelAggressor, StpMode.CancelBoth):
                    self.emit("OrderCanceled", **self.order_ids(o), canceledQty=o.leaves, reason=C.SelfTrade)
                    o.leaves = 0
                    return
                if stp == StpMode.DecrementBoth:
                    d = min(o.leaves, r.leaves)
                    self.emit("OrderCanceled", **self.order_ids(r), canceledQty=d, reason=C.SelfTrade)
                    r.leaves -= d
                    r.qty -= d
                    from_shown = min(d, r.visible)
                    r.visible -= from_shown
                    if r.leaves == 0:
                        level.pop(0)
                        self.emit("BookDelete", orderId=r.oid, instrument=inst.iid)
                        self.forget(r)
                    else:
                        self.emit("BookReduce", orderId=r.oid, qty=from_shown, instrument=inst.iid)
                        if r.visible == 0:
                            self.refill(r, inst, level)
                    self.emit("OrderCanceled", **self.order_ids(o), canceledQty=d, reason=C.SelfTrade)
                    o.leaves -= d
                    o.qty -= d
                continue
            if inst.cb_on and not self.quiet and self.cb_breach(inst, r.price):
                return self.cb_trip(o, inst)
            q = min(o.leaves, r.visible)
            self.settle(o, r, inst, q)
            tid = self.next_tid
            self.next_tid += 1
            r.visible -= q
            r.leaves -= q
            r.filled += q
            o.leaves -= q
            o.filled += q
            inst.last = r.price
            self.emit("Trade", tradeId=tid, price=r.price, qty=q, makerOrderId=r.oid, makerClOrdId=r.clord,
                      makerLeavesQty=r.leaves, takerOrderId=o.oid, takerClOrdId=o.clord, takerLeavesQty=o.leaves,
                      instrument=inst.iid, makerAccount=r.account, makerSessionId=r.session,
                      takerAccount=o.account, takerSessionId=o.session, aggressorSide=o.side)
            self.emit("BookExecute", orderId=r.oid, qty=q, price=r.price, tradeId=tid, instrument=inst.iid)
            if r.visible == 0:
                if r.leaves > 0:
                    self.refill(r, inst, level)
                else:
                    level.pop(0)
                    self.forget(r)

    def settle(self, taker: Order, maker: Order, inst: Instrument, q: int) -> None:
        """What the model follows of a fill: who has traded (their balances are now settled
        money), and perpetual positions."""
        for o in (taker, maker):
            self.traded.add(o.account)
            if not inst.perpetual:
                continue
            if not self.quiet and any(x.reduce_only and x is not o and x.account == o.account
                                      and x.instrument == inst.iid for x in self.orders.values()):
                raise Unpredictable(f"account {o.account} trades on perpetual {inst.iid} while it has a working "
                                    "reduce-only order: what the engine does with it is not modelled")
            key = (o.account, inst.iid)
            self.positions[key] = self.positions.get(key, 0) + (q if o.side == BUY else -q)

    def refill(self, r: Order, inst: Instrument, level: list[Order]) -> None:
        """``r`` (displayed 0, reserve left) shows more and goes to the back of its level."""
        level.remove(r)
        r.visible = shown(r.display, r.leaves)
        level.append(r)
        self.emit("BookAdd", orderId=r.oid, price=r.price, qty=r.visible, instrument=inst.iid, side=r.side)

    def evaluate_stops(self, inst: Instrument) -> None:
        while inst.last is not None and inst.status == TRADING:
            fired = self.live(lambda o: o.state == "stop" and o.instrument == inst.iid and (
                inst.last >= o.stop_price if o.side == BUY else inst.last <= o.stop_price))
            if not fired:
                return
            s = fired[0]
            self.stop_slots -= 1
            self.emit("StopTriggered", orderId=s.oid, clOrdId=s.clord, stopPrice=s.stop_price,
                      triggerPrice=inst.last, sessionId=s.session, account=s.account, instrument=s.instrument)
            self.run_aggressor(s, inst)

    # -- cancels -----------------------------------------------------------------------

    def order_ids(self, o: Order) -> dict[str, int]:
        return {"orderId": o.oid, "clOrdId": o.clord, "sessionId": o.session, "account": o.account,
                "instrument": o.instrument}

    def cancel_whole(self, o: Order, reason: int) -> None:
        """``OrderCanceled`` of the whole remainder, then ``BookDelete`` if it rested."""
        self.emit("OrderCanceled", **self.order_ids(o), canceledQty=o.leaves, reason=reason)
        o.leaves = 0
        if o.state == "resting":
            inst = self.instruments[o.instrument]
            inst.side(o.side)[o.price].remove(o)
            self.emit("BookDelete", orderId=o.oid, instrument=o.instrument)
        elif o.state == "stop" or (o.state == "queued" and o.is_stop_type):
            self.stop_slots -= 1
        if o.state != "aggressor":
            self.forget(o)

    def cancel_rejected(self, m: dict, ref: int, reason: int) -> None:
        self.emit("CancelRejected", orderId=m["orderId"], clOrdId=m["clOrdId"], origClOrdId=m["origClOrdId"],
                  sessionId=m["sessionId"], account=m["account"], instrument=m["instrument"],
                  reason=reason, refTemplateId=ref)

    def find(self, m: dict, ref: int) -> Order | None:
        """The live order a cancel or replace names, or None after its CancelRejected."""
        o = self.orders.get(m["orderId"])
        if o is None or o.instrument != m["instrument"]:
            return self.cancel_rejected(m, ref, R.UnknownOrder)
        if o.account != m["account"]:
            return self.cancel_rejected(m, ref, R.NotYourOrder)
        return o

    def cancel(self, m: dict) -> None:
        o = self.find(m, 2)
        if o is not None:
            self.cancel_whole(o, C.User)

    def mass_cancel(self, m: dict) -> None:
        scope, a, i = m["scope"], m["account"], m["instrument"]

        def reject(reason: int) -> None:
            self.emit("CancelRejected", orderId=0, clOrdId=m["clOrdId"], origClOrdId=0, sessionId=m["sessionId"],
                      account=a, instrument=i, reason=reason, refTemplateId=4)

        if scope not in VALID_SCOPE:
            return reject(R.InvalidScope)
        if scope in (MassCancelScope.Account, MassCancelScope.AccountInstrument) and a not in self.accounts:
            return reject(R.UnknownAccount)
        if scope in (MassCancelScope.Instrument, MassCancelScope.AccountInstrument) and i not in self.instruments:
            return reject(R.UnknownInstrument)
        if scope == MassCancelScope.Session:
            sess = m["sessionId"]
            chosen = self.live(lambda o: o.session == sess)
        elif scope == MassCancelScope.Account:
            chosen = self.live(lambda o: o.account == a)
        elif scope == MassCancelScope.AccountInstrument:
            chosen = self.live(lambda o: o.account == a and o.instrument == i)
        else:
            chosen = self.live(lambda o: o.instrument == i)
        for o in chosen:
            self.cancel_whole(o, C.MassCancel)
        self.emit("MassCancelDone", clOrdId=m["clOrdId"], canceledCount=len(chosen), sessionId=m["sessionId"],
                  account=a, instrument=i, scope=scope)

    # -- replace -----------------------------------------------------------------------

    def replace(self, m: dict) -> None:
        o = self.find(m, 3)
        if o is None:
            return
        def reject(reason: int) -> None:
            self.cancel_rejected(m, 3, reason)

        inst = self.instruments[o.instrument]
        price, qty, dq = m["price"], m["qty"], m["displayQty"]
        if inst.status == HALTED:
            return reject(R.InstrumentHalted)
        if inst.status == CLOSED:
            return reject(R.InstrumentClosed)
        if o.state != "resting":
            return reject(R.StopNotAllowed)
        if qty <= 0:  # as for a new order (step 4)
            return reject(R.QtyOutOfRange)
        if qty % inst.lot:
            return reject(R.BadLot)
        if not inst.min_qty <= qty <= inst.max_qty or qty <= o.filled:
            return reject(R.QtyOutOfRange)
        if price <= 0:
            return reject(R.PriceOutOfRange)
        if price % inst.tick:
            return reject(R.BadTick)
        if not inst.in_book(price):
            return reject(R.PriceOutOfRange)
        if dq != 0 and not (0 < dq <= qty and dq % inst.lot == 0):
            return reject(R.InvalidDisplayQty)
        if inst.max_order_qty and qty > inst.max_order_qty:
            return reject(R.MaxOrderQty)
        if inst.band_ppm and price != o.price and not inst.band()[0] <= price <= inst.band()[1]:
            return reject(R.PriceBand)
        if inst.max_notional and inst.notional(price, qty) > inst.max_notional:
            return reject(R.MaxNotional)
        if o.reduce_only:
            raise Unpredictable(f"a replace of reduce-only order {o.oid}: not modelled")
        leaves = qty - o.filled
        if inst.perpetual and leaves > o.leaves and self.over_position_limit(o.account, inst, o.side, leaves, o):
            return reject(R.PositionLimit)
        self.commit_exposure(o.account, inst, o.side, qty)  # a spot hold grows, margin: must be affordable
        keeps = price == o.price and qty <= o.qty
        cross = not keeps and self.crosses(inst, o.side, price)
        if cross and o.post_only:
            return reject(R.PostOnlyWouldTrade)
        self.emit("OrderReplaced", orderId=o.oid, clOrdId=m["clOrdId"], origClOrdId=m["origClOrdId"], price=price,
                  qty=qty, leavesQty=leaves, displayQty=dq, sessionId=m["sessionId"], account=m["account"],
                  instrument=m["instrument"])
        o.clord, o.qty, o.leaves, o.display = m["clOrdId"], qty, leaves, dq
        if keeps:
            now = min(o.visible, shown(dq, leaves))
            if now < o.visible:
                self.emit("BookReduce", orderId=o.oid, qty=o.visible - now, instrument=inst.iid)
                o.visible = now
            return
        inst.side(o.side)[o.price].remove(o)
        o.price = price
        if cross:
            self.emit("BookDelete", orderId=o.oid, instrument=inst.iid)
            self.run_aggressor(o, inst)  # a resting order is a Limit Day/GTC: it rests its remainder
            self.evaluate_stops(inst)
        else:
            o.visible = shown(dq, leaves)
            inst.side(o.side).setdefault(price, []).append(o)
            self.emit("BookReplace", orderId=o.oid, price=price, qty=o.visible, instrument=inst.iid, side=o.side)

    # -- views for the tests -----------------------------------------------------------

    def book(self, instrument: int) -> dict[int, list[tuple[int, int, int]]]:
        """``{side: [(price, orderId, displayed), ...]}`` best price first, FIFO in a level."""
        inst = self.instruments[instrument]
        out = {}
        for side in (BUY, SELL):
            rows = []
            for p in sorted(inst.side(side), reverse=side == BUY):
                rows.extend((p, o.oid, o.visible) for o in inst.side(side)[p])
            out[side] = rows
        return out

    def check(self) -> None:
        """The model's own invariants (after any message)."""
        stops = 0
        for iid, inst in self.instruments.items():
            bid, ask = inst.best(BUY), inst.best(SELL)
            assert bid is None or ask is None or bid < ask, f"instrument {iid} crossed: {bid} >= {ask}"
            for side in (BUY, SELL):
                for p, level in inst.side(side).items():
                    for o in level:
                        assert o.state == "resting" and o.price == p and o.side == side
                        assert self.orders.get(o.oid) is o
                        assert 0 < o.visible <= o.leaves
        for oid, o in self.orders.items():
            assert o.state in ("resting", "stop", "queued"), (oid, o.state)
            assert o.leaves > 0 and o.qty == o.filled + o.leaves, o
            if o.state == "resting":
                assert o in self.instruments[o.instrument].side(o.side)[o.price]
            if o.is_stop_type and o.state in ("stop", "queued"):
                stops += 1
        assert stops == self.stop_slots
        assert len(self.orders) <= self.cfg.max_orders
        assert self.stop_slots <= self.cfg.max_stops
