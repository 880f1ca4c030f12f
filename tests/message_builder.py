"""Inbound messages for the reference model and the engine, as bytes (``Msgs``): a running
stamp, raw ints (invalid enum values included), and accounts funded with ``FUNDING`` of
each asset so that orders about matching never meet a money check.
"""

from __future__ import annotations

from typing import Any, Iterable

from raw_wire import DAY, DEPOSIT, LIMIT, PERPETUAL, STAMP_FIELDS, raw_decode, raw_encode
from reference_model import PPM

FUNDING = 10**15  # what the test streams deposit, per asset, into every account they create


class Msgs:
    """Inbound message bytes with a running stamp (seq 1, 2, ...; distinct times).

    Every builder takes raw ints (invalid enum values included) and any extra field."""

    def __init__(self, start_seq: int = 1) -> None:
        self.seq = start_seq - 1
        self.skew = 0  # extra time, ns: ``advance`` moves the clock on

    def advance(self, ns: int) -> None:
        """The next stamps are ``ns`` later (sequencer time jumps, as between quiet periods)."""
        self.skew += ns

    def stamp(self) -> dict[str, int]:
        self.seq += 1
        t = 1_700_000_000_000_000_000 + 1000 * self.seq + self.skew
        return {"seq": self.seq, "timestampNs": t, "ingressNs": t - 17}

    def make(self, name: str, **fields: Any) -> bytes:
        return raw_encode(name, **{**self.stamp(), **fields})

    def again(self, like: bytes, name: str, **fields: Any) -> bytes:
        """A message with the stamp of ``like`` (seq and times do not move on): set-up traffic,
        such as funding a new account, that must not shift the clock of a hand-timed scenario."""
        return raw_encode(name, **{**dict(zip(STAMP_FIELDS, raw_decode(like)[2])), **fields})

    def instrument(self, instrument: int = 1, *, tick: int = 1, lot: int = 1, min_qty: int = 1,
                   max_qty: int = 1000, ref: int = 100, policy: int = 1, status: int = 1, kind: int = 1,
                   symbol: bytes = b"SYM", base_asset: int | None = None, maker_fee: int = -100,
                   taker_fee: int = 250) -> bytes:
        """An instrument; its base asset is 1 for a spot one, 0 for a perpetual, unless given."""
        if base_asset is None:
            base_asset = 0 if kind == PERPETUAL else 1
        return self.make("InstrumentDefinition", tickSize=tick, lotSize=lot, minQty=min_qty, maxQty=max_qty,
                         referencePrice=ref, symbol=symbol, makerFeePpm=maker_fee, takerFeePpm=taker_fee,
                         instrument=instrument, baseAsset=base_asset, kind=kind, haltPolicy=policy, status=status)

    def limits(self, instrument: int = 1, *, max_notional: int = 0, divisor: int = 1, band_ppm: int = 0,
               cb_move_ppm: int = 0, cb_window_ns: int = 0, cb_halt_ns: int = 0, max_order_qty: int = 0,
               max_position: int = 0) -> bytes:
        return self.make("InstrumentLimits", instrument=instrument, maxOrderNotional=max_notional,
                         notionalDivisor=divisor, priceBandPpm=band_ppm, cbMovePpm=cb_move_ppm,
                         cbWindowNs=cb_window_ns, cbHaltNs=cb_halt_ns, maxOrderQty=max_order_qty,
                         maxPosition=max_position)

    def account(self, account: int, stp: int = 1, max_open: int = 0) -> bytes:
        return self.make("CreateAccount", account=account, stpDefault=stp, maxOpenOrders=max_open)

    def funds(self, account: int, asset: int = 0, amount: int = FUNDING, action: int = DEPOSIT) -> bytes:
        return self.make("Funds", account=account, asset=asset, amount=amount, action=action)

    def funding(self, like: bytes, account: int, assets: Iterable[int] = (0, 1, 2),
                amount: int = FUNDING) -> list[bytes]:
        """Deposits of ``amount`` of each asset into ``account``, stamped as ``like`` (its
        ``CreateAccount``): enough that orders about matching never meet a money check."""
        return [self.again(like, "Funds", account=account, asset=asset, amount=amount, action=DEPOSIT)
                for asset in assets]

    def index(self, instrument: int, price: int) -> bytes:
        return self.make("IndexPrice", instrument=instrument, price=price)

    def perp_params(self, instrument: int, *, im_ppm: int = PPM, mm_ppm: int = 500_000, tier_notional: int = 0,
                    tier_step_ppm: int = 0, funding_interval_ns: int = 0, funding_cap_ppm: int = 0,
                    basis_cap_ppm: int = 0, basis_ema_ppm: int = 0) -> bytes:
        return self.make("PerpetualParams", instrument=instrument, imPpm=im_ppm, mmPpm=mm_ppm,
                         tierNotional=tier_notional, tierStepPpm=tier_step_ppm,
                         fundingIntervalNs=funding_interval_ns, fundingCapPpm=funding_cap_ppm,
                         basisCapPpm=basis_cap_ppm, basisEmaPpm=basis_ema_ppm)

    def kill(self, scope: int, action: int = 1, *, account: int = 0, session: int = 0,
             instrument: int = 0) -> bytes:
        return self.make("KillSwitch", account=account, sessionId=session, instrument=instrument,
                         scope=scope, action=action)

    def status(self, instrument: int, status: int) -> bytes:
        return self.make("TradingStatusUpdate", instrument=instrument, status=status)

    def order(self, account: int, side: int, qty: int, price: int = 0, *, instrument: int = 1,
              ord_type: int = LIMIT, tif: int = DAY, display: int = 0, stop: int = 0, post_only: int = 0,
              reduce_only: int = 0, stp: int = 0, cl: int | None = None, session: int | None = None) -> bytes:
        return self.make("NewOrder", clOrdId=1000 + self.seq + 1 if cl is None else cl, price=price, qty=qty,
                         displayQty=display, stopPrice=stop,
                         sessionId=100 + account if session is None else session, account=account,
                         instrument=instrument, side=side, ordType=ord_type, timeInForce=tif,
                         postOnly=post_only, reduceOnly=reduce_only, stpMode=stp)

    def cancel(self, account: int, order_id: int, *, instrument: int = 1, cl: int | None = None,
               orig: int = 0, session: int | None = None) -> bytes:
        return self.make("CancelOrder", clOrdId=2000 + self.seq + 1 if cl is None else cl, orderId=order_id,
                         origClOrdId=orig, sessionId=100 + account if session is None else session,
                         account=account, instrument=instrument)

    def replace(self, account: int, order_id: int, qty: int, price: int, *, display: int = 0,
                instrument: int = 1, cl: int | None = None, orig: int = 0, session: int | None = None) -> bytes:
        return self.make("ReplaceOrder", clOrdId=3000 + self.seq + 1 if cl is None else cl, orderId=order_id,
                         origClOrdId=orig, price=price, qty=qty, displayQty=display,
                         sessionId=100 + account if session is None else session,
                         account=account, instrument=instrument)

    def mass_cancel(self, scope: int, account: int = 0, instrument: int = 0, *, cl: int | None = None,
                    session: int = 7) -> bytes:
        return self.make("MassCancel", clOrdId=4000 + self.seq + 1 if cl is None else cl, sessionId=session,
                         account=account, instrument=instrument, scope=scope)
