"""Helpers for the compiled engine's tests (``tests/test_engine_*.py``).

``Exchange`` wraps a ``MatchingEngine`` with message builders that fill in a stamp and sane
defaults, and returns each message's events both decoded (``last``) and as short strings
(``fmt``) so that a scenario states its exact expected event sequence in a few lines:

    ex = Exchange()
    assert ex.sell(1, 5, 101) == ["Accepted 1", "BookAdd 1 Sell 5@101"]
"""

from __future__ import annotations

import struct
from typing import Any, Iterable

import numpy as np

from ringex.engine.wire.codec import Decoded
from ringex.engine.config import EngineConfig
from ringex.engine.engine import MatchingEngine
from ringex.engine.wire.messages import SCHEMA

SMALL = dict(max_instruments=4, max_accounts=8, max_orders=64, price_levels=64, max_stops=8,
             market_protection_ticks=3, event_buffer=16)
REF = 100  # reference price of instrument 1: the book covers 68..131 with 64 levels
FUNDING = 10**15  # deposited, of each of FUND_ASSETS, into every account a kit creates
FUND_ASSETS = (0, 1, 2)  # the settlement asset and the base assets the kits' spot instruments use


def _n(v: Any) -> Any:
    return v.name if hasattr(v, "name") else v


def fmt(e: Decoded) -> str:
    """One event as a short, exact string (the fields a scenario cares about)."""
    f = e.fields
    n = e.name
    if n == "OrderAccepted":
        return f"Accepted {f['orderId']}"
    if n == "OrderRejected":
        return f"Rejected {_n(f['reason'])}"
    if n == "Trade":
        return (f"Trade {f['tradeId']} {f['qty']}@{f['price']} m={f['makerOrderId']} t={f['takerOrderId']} "
                f"ml={f['makerLeavesQty']} tl={f['takerLeavesQty']}")
    if n == "BookExecute":
        return f"BookExecute {f['orderId']} {f['qty']}@{f['price']}"
    if n in ("BookAdd", "BookReplace"):
        return f"{n} {f['orderId']} {_n(f['side'])} {f['qty']}@{f['price']}"
    if n == "BookDelete":
        return f"BookDelete {f['orderId']}"
    if n == "BookReduce":
        return f"BookReduce {f['orderId']} {f['qty']}"
    if n == "OrderCanceled":
        return f"Canceled {f['orderId']} {_n(f['reason'])} {f['canceledQty']}"
    if n == "OrderReplaced":
        return f"Replaced {f['orderId']} {f['qty']}@{f['price']} leaves={f['leavesQty']}"
    if n == "CancelRejected":
        return f"CancelRejected {_n(f['reason'])}"
    if n == "StopTriggered":
        return f"StopTriggered {f['orderId']} @{f['triggerPrice']}"
    if n == "MassCancelDone":
        return f"MassCancelDone {f['canceledCount']}"
    if n == "InstrumentStatus":
        return f"Status {_n(f['status'])}"
    if n == "AdminResult":
        return f"Admin {_n(f['reason'])}"
    return n


class Exchange:
    """An engine with instrument 1 (tick 1, lot 1, reference 100, spot, base asset 1) and
    accounts 1-3 (STP off).  Every account created through ``account`` is funded (docs/risk.md:
    orders need money; these tests are about matching): ``FUNDING`` of each of ``FUND_ASSETS``."""

    def __init__(self, setup: bool = True, **config: Any) -> None:
        self.engine = MatchingEngine(EngineConfig(**{**SMALL, **config}))
        self.seq = 0
        self.last: list[Decoded] = []
        self.clord = 0
        if setup:
            assert self.define(1) == ["Admin None", "Status Trading"]
            for a in (1, 2, 3):
                assert self.account(a) == ["Admin None"]

    # -- raw ----------------------------------------------------------------------------------

    def encode(self, name: str, **fields: Any) -> bytes:
        self.seq += 1
        fields.setdefault("seq", self.seq)
        fields.setdefault("timestampNs", 1_000_000 + self.seq)
        fields.setdefault("ingressNs", 2_000_000 + self.seq)
        return SCHEMA.encode(name, **fields)

    def encode_raw(self, name: str, raw: dict[str, int], **fields: Any) -> bytes:
        """``encode`` and then overwrite the fields in ``raw`` unvalidated (bad enum values)."""
        return patch(self.encode(name, **fields), name, **raw)

    def send_raw(self, name: str, raw: dict[str, int], **fields: Any) -> list[str]:
        return self.run([self.encode_raw(name, raw, **fields)])

    def run(self, messages: Iterable[bytes]) -> list[str]:
        self.last = self.engine.process_messages(messages)
        return [fmt(e) for e in self.last]

    def send(self, name: str, **fields: Any) -> list[str]:
        return self.run([self.encode(name, **fields)])

    # -- admin --------------------------------------------------------------------------------

    def define(self, instrument: int, **kw: Any) -> list[str]:
        """An instrument; its base asset is 1 for a spot one, 0 for a perpetual, unless given."""
        f = dict(instrument=instrument, tickSize=1, lotSize=1, minQty=1, maxQty=1_000_000,
                 referencePrice=REF, symbol=f"I{instrument}", kind="Spot", haltPolicy="Reject",
                 status="Trading")
        f.update(kw)
        f.setdefault("baseAsset", 0 if f["kind"] in ("Perpetual", 2) else 1)
        return self.send("InstrumentDefinition", **f)

    def limits(self, instrument: int, **kw: Any) -> list[str]:
        """InstrumentLimits: the given limits, the others off (notionalDivisor 1)."""
        return self.send("InstrumentLimits", **{"instrument": instrument, "notionalDivisor": 1, **kw})

    def account(self, account: int, stp: str = "Off", fund: bool = True, **kw: Any) -> list[str]:
        """CreateAccount; when it succeeds (and ``fund``), deposits. Returns (and leaves in
        ``last``) the CreateAccount's events."""
        got = self.send("CreateAccount", account=account, stpDefault=stp, **kw)
        created = self.last
        if fund and got == ["Admin None"]:
            for asset in FUND_ASSETS:
                assert self.funds(account, FUNDING, asset=asset) == ["Admin None"]
        self.last = created
        return got

    def funds(self, account: int, amount: int, asset: int = 0, action: str = "Deposit") -> list[str]:
        return self.send("Funds", account=account, amount=amount, asset=asset, action=action)

    def status(self, status: str, instrument: int = 1) -> list[str]:
        return self.send("TradingStatusUpdate", instrument=instrument, status=status)

    # -- order entry ----------------------------------------------------------------------------

    def order(self, account: int, side: str, qty: int, price: int = 0, ordType: str = "Limit",
              tif: str = "GTC", instrument: int = 1, **kw: Any) -> list[str]:
        self.clord += 1
        kw.setdefault("clOrdId", self.clord)
        return self.send("NewOrder", account=account, side=side, qty=qty, price=price, ordType=ordType,
                         timeInForce=tif, instrument=instrument, sessionId=10 + account, **kw)

    def buy(self, account: int, qty: int, price: int = 0, **kw: Any) -> list[str]:
        return self.order(account, "Buy", qty, price, **kw)

    def sell(self, account: int, qty: int, price: int = 0, **kw: Any) -> list[str]:
        return self.order(account, "Sell", qty, price, **kw)

    def cancel(self, account: int, order_id: int, instrument: int = 1) -> list[str]:
        self.clord += 1
        return self.send("CancelOrder", account=account, orderId=order_id, instrument=instrument,
                         clOrdId=self.clord, sessionId=10 + account)

    def replace(self, account: int, order_id: int, qty: int, price: int, display: int = 0,
                instrument: int = 1) -> list[str]:
        self.clord += 1
        return self.send("ReplaceOrder", account=account, orderId=order_id, qty=qty, price=price,
                         displayQty=display, instrument=instrument, clOrdId=self.clord,
                         sessionId=10 + account)

    def mass_cancel(self, scope: str, account: int = 0, instrument: int = 0) -> list[str]:
        self.clord += 1
        return self.send("MassCancel", scope=scope, account=account, instrument=instrument,
                         clOrdId=self.clord, sessionId=10 + account)

    # -- looking at the book --------------------------------------------------------------------

    def bids(self, instrument: int = 1) -> list[list[tuple[int, int, int]]]:
        return self.engine.book(instrument, 1)

    def asks(self, instrument: int = 1) -> list[list[tuple[int, int, int]]]:
        return self.engine.book(instrument, 2)


def patch(message: bytes, name: str, **raw: int) -> bytes:
    """Overwrite fields of an encoded message with raw integers (no enum validation)."""
    layout = SCHEMA.message(name)
    buf = bytearray(message)
    for field, value in raw.items():
        f = layout.field(field)
        struct.pack_into("<" + f.struct_code, buf, f.offset, value)
    return bytes(buf)


def mixed_stream(n: int, seed: int = 1, config: EngineConfig | None = None) -> list[bytes]:
    """A seeded stream of every inbound message kind over two instruments and four
    accounts: all order types, cancels and replaces (mostly of live orders: the stream is
    built against a scratch engine to know which are live), mass cancels, halts, closes,
    and now and then a malformed message."""
    rng = np.random.default_rng(seed)
    scratch = MatchingEngine(config or EngineConfig(**{**SMALL, "max_orders": 48, "max_stops": 6,
                                                        "price_levels": 32}))
    out: list[bytes] = []
    live: dict[int, tuple[int, int]] = {}  # order id -> (account, instrument)
    seq = 0

    def send(name: str, **f: Any) -> None:
        nonlocal seq
        seq += 1
        msg = SCHEMA.encode(name, seq=seq, timestampNs=10 * seq, ingressNs=10 * seq - 3, **f)
        emit(msg)

    def emit(msg: bytes) -> None:
        out.append(msg)
        for e in scratch.process_messages([msg]):
            f = e.fields
            if e.name == "OrderAccepted":
                live[f["orderId"]] = (f["account"], f["instrument"])
            elif e.name == "OrderCanceled" or (e.name == "Trade" and f["makerLeavesQty"] == 0):
                live.pop(f["orderId"] if e.name == "OrderCanceled" else f["makerOrderId"], None)
            if e.name == "Trade" and f["takerLeavesQty"] == 0:
                live.pop(f["takerOrderId"], None)

    send("InstrumentDefinition", instrument=1, tickSize=1, lotSize=1, minQty=1, maxQty=1000,
         referencePrice=REF, symbol="A", kind="Spot", haltPolicy="Queue", status="Trading", baseAsset=1)
    send("InstrumentDefinition", instrument=2, tickSize=2, lotSize=5, minQty=5, maxQty=500,
         referencePrice=REF, symbol="B", kind="Perpetual", haltPolicy="Reject", status="Trading")
    for a, stp in ((1, "Off"), (2, "CancelResting"), (3, "DecrementBoth"), (4, "CancelBoth")):
        send("CreateAccount", account=a, stpDefault=stp)
        for asset in (0, 1):  # orders need money (docs/risk.md); this stream is about matching
            send("Funds", account=a, asset=asset, amount=FUNDING, action="Deposit")
    types_ = ["Limit"] * 6 + ["Market", "Stop", "StopLimit"]
    tifs = ["GTC", "GTC", "Day", "IOC", "FOK"]
    stps = ["AccountDefault"] * 4 + ["Off", "CancelResting", "CancelAggressor", "CancelBoth", "DecrementBoth"]
    statuses = ["Trading"] * 5 + ["Halted", "Closed"]
    for i in range(n):
        r = rng.random()
        inst = int(rng.integers(1, 3))
        acct = int(rng.integers(1, 5))
        oid = int(rng.integers(1, scratch.next_order_id + 1))
        if r >= 0.6 and live and rng.random() < 0.75:  # cancels and replaces mostly of live orders
            ids = sorted(live)
            oid = ids[int(rng.integers(len(ids)))]
            acct, inst = live[oid]
        tick, lot = (1, 1) if inst == 1 else (2, 5)
        mid = REF // tick  # the reference price in ticks
        if r < 0.6:
            ot = types_[rng.integers(len(types_))]
            price = (mid + int(rng.integers(-6, 7))) * tick if ot in ("Limit", "StopLimit") else 0
            stop = (mid + int(rng.integers(-8, 9))) * tick if ot in ("Stop", "StopLimit") else 0
            qty = lot * int(rng.integers(1, 12))
            tif = tifs[rng.integers(len(tifs))]
            disp = lot * int(rng.integers(1, 4)) if (ot in ("Limit", "StopLimit") and tif in ("GTC", "Day")
                                                     and rng.random() < 0.2) else 0
            post = int(ot == "Limit" and tif in ("GTC", "Day") and rng.random() < 0.1)
            send("NewOrder", clOrdId=i + 1, price=price, qty=qty, displayQty=min(disp, qty), stopPrice=stop,
                 sessionId=acct, account=acct, instrument=inst, side=["Buy", "Sell"][rng.integers(2)],
                 ordType=ot, timeInForce=tif, postOnly=post, stpMode=stps[rng.integers(len(stps))])
        elif r < 0.8:
            send("CancelOrder", clOrdId=i + 1, orderId=oid, account=acct, instrument=inst)
        elif r < 0.93:
            send("ReplaceOrder", clOrdId=i + 1, orderId=oid, account=acct, instrument=inst,
                 price=(mid + int(rng.integers(-6, 7))) * tick, qty=lot * int(rng.integers(1, 12)),
                 displayQty=lot * int(rng.integers(0, 3)))
        elif r < 0.96:
            send("MassCancel", clOrdId=i + 1, account=acct, instrument=inst,
                 scope=["Account", "Instrument", "AccountInstrument"][rng.integers(3)])
        elif r < 0.99:
            send("TradingStatusUpdate", instrument=inst, status=statuses[rng.integers(len(statuses))])
        else:
            seq += 1
            bad = bytearray(SCHEMA.encode("IndexPrice", seq=seq, instrument=inst, price=5))
            if rng.random() < 0.5:
                bad[2:4] = int(rng.integers(16, 200)).to_bytes(2, "little")
            emit(bytes(bad))
    return out
