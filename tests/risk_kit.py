"""Helpers for the risk engine's tests (``tests/test_risk_*.py``, docs/risk.md).

``Risk`` is ``engine_kit.Exchange`` (its order entry) with a clock (each
message one nanosecond after the previous one unless ``at`` moves it, for funding), a
ledger of accepted deposits and withdrawals per asset (for the money invariant) and
builders for the risk messages (``Funds``, ``InstrumentLimits``, ``PerpetualParams``,
``IndexPrice``). Events come back as short strings (``fmt``); the risk events are

    "Admin None 1000"                       (a Funds answer: reason and the balance after)
    "Mark 105 idx=100 basis=5"              (MarkPrice)
    "Funding 1 rem=0 total=30 rate=10000"
    "Liq Start 1"                           (Liquidation: stage and account; the numbers
                                             are checked with ``liq``)

Nothing here is engine code: every number a test expects is written out in the test.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from ringex.engine.wire.codec import Decoded
from ringex.engine.wire.messages import SCHEMA

from engine_kit import Exchange, _n
from engine_kit import fmt as base_fmt

PPM = 1_000_000
SMALL = dict(max_instruments=4, max_accounts=10, max_assets=4, max_orders=64, price_levels=64,
             max_stops=8, market_protection_ticks=3, event_buffer=16)
REF = 100  # reference price: with 64 levels the book covers 68 .. 131
TOP = 131
BOTTOM = 68
T0 = 1_000_000


def fmt(e: Decoded) -> str:
    """``engine_kit.fmt``, plus a Funds result's balance and the risk engine's own events."""
    f = e.fields
    n = e.name
    if n == "AdminResult" and f["refTemplateId"] == 12:
        return f"Admin {_n(f['reason'])} {f['value']}"
    if n == "MarkPrice":
        return f"Mark {f['markPrice']} idx={f['indexPrice']} basis={f['basis']}"
    if n == "FundingApplied":
        return f"Funding {f['instrument']} rem={f['remainder']} total={f['total']} rate={f['ratePpm']}"
    if n == "Liquidation":
        return f"Liq {_n(f['stage'])} {f['account']}"
    return base_fmt(e)


def liq(events: Iterable[Decoded], *keys: str) -> list[tuple]:
    """The Liquidation events as (stage, account, *keys)."""
    return [(_n(e["stage"]), e["account"], *(e[k] for k in keys)) for e in events if e.name == "Liquidation"]


class Risk(Exchange):
    """An engine with accounts ``accounts`` (STP off, unfunded) and nothing defined; a clock;
    a ledger. Order entry is ``engine_kit.Exchange``'s."""

    def __init__(self, accounts: Iterable[int] = (1, 2, 3), **config: Any) -> None:
        super().__init__(setup=False, **{**SMALL, **config})
        self.config = self.engine.config
        self.clock = T0
        self.ledger: Counter[int] = Counter()  # asset -> accepted deposits - withdrawals
        self.divisor: dict[int, int] = {}
        for a in accounts:
            assert self.account(a) == ["Admin None"]

    # -- raw ----------------------------------------------------------------------------------

    def at(self, t: int) -> "Risk":
        """The next message is stamped ``t`` (later ones follow one ns apart)."""
        self.clock = t - 1
        return self

    def encode(self, name: str, **fields: Any) -> bytes:
        self.seq += 1
        self.clock += 1
        fields.setdefault("seq", self.seq)
        fields.setdefault("timestampNs", self.clock)
        fields.setdefault("ingressNs", self.clock)
        return SCHEMA.encode(name, **fields)

    def run(self, messages: Iterable[bytes]) -> list[str]:
        self.last = self.engine.process_messages(messages)
        return [fmt(e) for e in self.last]

    # -- admin --------------------------------------------------------------------------------

    def define(self, instrument: int, **kw: Any) -> list[str]:
        """``Exchange.define`` with no fees unless given; remembers the notional divisor."""
        kw.setdefault("makerFeePpm", 0)
        kw.setdefault("takerFeePpm", 0)
        out = super().define(instrument, **kw)
        if out[0] == "Admin None":
            self.divisor[instrument] = 1
        return out

    def spot(self, instrument: int, base: int = 1, **kw: Any) -> list[str]:
        out = self.define(instrument, baseAsset=base, **kw)
        assert out == ["Admin None", "Status Trading"], out
        return out

    def perp(self, instrument: int, **kw: Any) -> list[str]:
        out = self.define(instrument, kind="Perpetual", **kw)
        assert out == ["Admin None", "Status Trading"], out
        return out

    def limits(self, instrument: int, **kw: Any) -> list[str]:
        out = super().limits(instrument, **kw)
        if out == ["Admin None"]:
            self.divisor[instrument] = kw.get("notionalDivisor", 1)
        return out

    def params(self, instrument: int, **kw: Any) -> list[str]:
        """PerpetualParams: the defaults of an instrument defined without one, overridden by kw."""
        f = dict(instrument=instrument, imPpm=PPM, mmPpm=500_000, tierNotional=0, tierStepPpm=0,
                 fundingIntervalNs=0, fundingCapPpm=0, basisCapPpm=0, basisEmaPpm=0)
        f.update(kw)
        return self.send("PerpetualParams", **f)

    def account(self, account: int, stp: str = "Off", **kw: Any) -> list[str]:
        """CreateAccount, unfunded: money comes from ``deposit``."""
        return super().account(account, stp, fund=False, **kw)

    def funds(self, account: int, amount: int, asset: int = 0, action: str = "Deposit") -> list[str]:
        out = super().funds(account, amount, asset, action)
        r = self.last[0]
        assert r.name == "AdminResult" and r["refTemplateId"] == 12
        if _n(r["reason"]) == "None":
            self.ledger[asset] += amount if action == "Deposit" else -amount
        return out

    def deposit(self, account: int, amount: int, asset: int = 0) -> list[str]:
        return self.funds(account, amount, asset, "Deposit")

    def withdraw(self, account: int, amount: int, asset: int = 0) -> list[str]:
        return self.funds(account, amount, asset, "Withdraw")

    def index(self, instrument: int, price: int) -> list[str]:
        return self.send("IndexPrice", instrument=instrument, price=price)

    def kill(self, scope: str, action: str = "Engage", **kw: Any) -> list[str]:
        return self.send("KillSwitch", scope=scope, action=action, **kw)

    # -- looking -------------------------------------------------------------------------------

    def bal(self, account: int, asset: int = 0) -> int:
        return self.engine.balance(account, asset)

    def held(self, account: int, asset: int = 0) -> int:
        return self.engine.held(account, asset)

    def fees(self) -> int:
        return self.engine.fee_balance()

    def pos(self, account: int, instrument: int = 1) -> tuple[int, int, int]:
        p = self.engine.position(account, instrument)
        return (p["qty"], p["cost"], p["realized"])

    def risk(self, account: int) -> dict[str, int]:
        return dict(self.engine.account_risk(account))

    def wallet(self, accounts: Iterable[int], assets: Iterable[int] = (0, 1)) -> dict:
        """(balance, held) per (account, asset), to compare before/after."""
        return {(a, s): (self.bal(a, s), self.held(a, s)) for a in accounts for s in assets}

    def assert_conserved(self) -> None:
        """docs/risk.md's invariant: per asset, every account's balance (the insurance fund's
        included) plus the fee account (asset 0) equals deposits minus withdrawals."""
        for asset in range(self.config.max_assets):
            total = sum(self.bal(a, asset) for a in range(self.config.max_accounts))
            if asset == 0:
                total += self.fees()
            assert total == self.ledger[asset], f"asset {asset}: {total} held in accounts, ledger {self.ledger[asset]}"

    def assert_positions_sum_to_zero(self, instruments: Iterable[int]) -> None:
        for i in instruments:
            s = sum(self.pos(a, i)[0] for a in range(self.config.max_accounts))
            assert s == 0, f"positions of instrument {i} sum to {s}"


def ceil_div(a: int, b: int) -> int:
    return -((-a) // b)
