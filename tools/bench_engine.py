"""``ringex bench engine``: matching-engine throughput on a standard, seeded order stream.

The stream (``make_stream``) is one spot instrument (tick 1, lot 1, reference price 100 000,
base asset 1) and 64 accounts (STP off), each funded with asset 0 (the quote) and asset 1
(the base) far beyond anything the stream can hold, then ``orders`` order-entry messages:

* 60% passive limit orders (GTC), buy or sell, 1 + Geometric(0.35) ticks away from a mid
  price that random-walks one tick at a time; quantity 1..100;
* 30% cancels of an order the stream placed earlier and has not cancelled yet, chosen
  uniformly (an order that has meanwhile been filled gets CancelRejected(UnknownOrder),
  as it would on a real exchange);
* 10% aggressive IOC limit orders up to Geometric(0.3) ticks through the mid, quantity
  1..300, so that they regularly sweep several levels.

Every message is SBE-encoded into (k, SLOT_SIZE) slots exactly as the ring delivers them,
and handed to ``MatchingEngine.process`` in batches of ``batch`` slots (default 1024, the
rings' default ``batch_limit``). A run is a fresh
engine (admin messages first, untimed) then the timed order stream; figures are medians.
An untimed check run of the same stream counts the rejections: no order may be rejected
(the stream's cancels name order ids, which a rejected order would shift).
``python_orders_per_s`` runs the same engine code with ``NUMBA_DISABLE_JIT=1`` in a
subprocess over the first ``python_orders`` orders of the same stream.

``--risk`` (``run_risk_bench``): the same orders (same prices, sides, quantities, kinds and
cancel targets) spread over 10 000 accounts trading one perpetual future (cross margin,
every order margin-checked), with an ``IndexPrice`` at the stream's mid after every
``index_every`` orders (so marks move and the liquidation check runs); then the
liquidation check alone: 10 000 accounts holding positions, one ``IndexPrice`` that moves
the mark (a) without putting anyone at risk and (b) so that a known number of accounts
becomes liquidatable, timed over many repetitions from the same snapshot. The plain
benchmark and the same 10 000-account stream on a spot instrument run alongside, in
alternation, as baselines. docs/benchmarks.md describes every figure.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ringex.engine.config import EngineConfig
from ringex.engine.engine import MatchingEngine, pack_slots
from ringex.engine.wire.codec import HEADER
from ringex.engine.wire.messages import (
    SLOT_SIZE, AdminResult, CancelOrder, CancelRejected, CreateAccount, Funds, IndexPrice,
    InstrumentDefinition, Liquidation, LiquidationStage, NewOrder, OrderRejected, OrdType,
    PerpetualParams, RejectReason, SCHEMA, Side, StpMode, TimeInForce,
)

INSTRUMENT = 1
ACCOUNTS = 64
REFERENCE_PRICE = 100_000
QUOTE_ASSET = 0  # the settlement asset: quote of every instrument, collateral of perpetuals
BASE_ASSET = 1  # the spot instrument's base asset
# Per account. A buy holds at most ~1.3e5 * 300 = 4e7 of asset 0 and a sell at most 300 of
# asset 1, and the stream leaves at most a few hundred thousand orders working, so nothing
# the stream does comes near these (deposits are capped at 2**60 by the engine).
QUOTE_DEPOSIT = 10**15
BASE_DEPOSIT = 10**12
CONFIG = EngineConfig(max_instruments=4, max_accounts=ACCOUNTS + 1, max_orders=1 << 18,
                      price_levels=1 << 16, max_stops=16, market_protection_ticks=100,
                      event_buffer=8192)

# -- risk (--risk) ---------------------------------------------------------------------------
RISK_ACCOUNTS = 10_000
INDEX_EVERY = 1_000  # an IndexPrice after every this many orders
# Collateral of each account of the risk stream: an account trades ~100 orders of the
# million, its position stays within a few thousand lots (notional < 5e8, IM < 5e7), so every
# order passes the margin check and no mark move of the stream liquidates anyone.
COLLATERAL = 10**10
INSURANCE_DEPOSIT = 10**13  # account 0, the insurance fund
PERP_PARAMS = dict(imPpm=50_000, mmPpm=500_000, tierNotional=50_000_000, tierStepPpm=10_000,
                   fundingIntervalNs=0, fundingCapPpm=0, basisCapPpm=0, basisEmaPpm=0)
# The liquidation-check state: pair k is a long (account 2k+1) and a short (2k+2) of LIQ_QTY
# lots each, crossed at the reference price. Each is funded so that it becomes liquidatable
# exactly when the mark passes its own threshold: longs at P0 - LIQ_GAP - LIQ_STEP*k (from
# above), shorts at P0 + LIQ_GAP + LIQ_STEP*k (from below).
LIQ_QTY = 10
LIQ_GAP = 3_000
LIQ_STEP = 2
LIQ_REPS = 500
LIQ_FRACTION = 0.01  # of the accounts made liquidatable by move (b)


def risk_config(accounts: int, max_orders: int = 1 << 18) -> EngineConfig:
    return EngineConfig(max_instruments=4, max_accounts=accounts + 1, max_orders=max_orders,
                        price_levels=1 << 16, max_stops=16, market_protection_ticks=100,
                        event_buffer=8192)


def admin_slots(accounts: int = ACCOUNTS) -> np.ndarray:
    """The spot instrument definition, the accounts and their deposits, as slots."""
    msgs = [InstrumentDefinition.encode(
        seq=1, instrument=INSTRUMENT, tickSize=1, lotSize=1, minQty=1, maxQty=1_000_000,
        referencePrice=REFERENCE_PRICE, symbol="BENCH", baseAsset=BASE_ASSET, kind="Spot",
        haltPolicy="Reject", status="Trading")]
    for a in range(1, accounts + 1):
        msgs.append(CreateAccount.encode(seq=len(msgs) + 1, account=a, stpDefault=int(StpMode.Off)))
    for a in range(1, accounts + 1):
        msgs.append(Funds.encode(seq=len(msgs) + 1, account=a, asset=QUOTE_ASSET, amount=QUOTE_DEPOSIT,
                                 action="Deposit"))
        msgs.append(Funds.encode(seq=len(msgs) + 1, account=a, asset=BASE_ASSET, amount=BASE_DEPOSIT,
                                 action="Deposit"))
    return pack_slots(msgs)


def _perpetual_admin(accounts: int, collateral: Sequence[int] | int) -> list[bytes]:
    """A perpetual (instrument 1), its parameters, ``accounts`` accounts with their
    collateral (asset 0) and the insurance fund's deposit."""
    msgs = [InstrumentDefinition.encode(
        seq=1, instrument=INSTRUMENT, tickSize=1, lotSize=1, minQty=1, maxQty=1_000_000,
        referencePrice=REFERENCE_PRICE, symbol="PERP", baseAsset=0, kind="Perpetual",
        haltPolicy="Reject", status="Trading")]
    msgs.append(PerpetualParams.encode(seq=2, instrument=INSTRUMENT, **PERP_PARAMS))
    msgs.append(Funds.encode(seq=3, account=0, asset=QUOTE_ASSET, amount=INSURANCE_DEPOSIT, action="Deposit"))
    for a in range(1, accounts + 1):
        msgs.append(CreateAccount.encode(seq=len(msgs) + 1, account=a, stpDefault=int(StpMode.Off)))
    for a in range(1, accounts + 1):
        amount = collateral if isinstance(collateral, int) else collateral[a - 1]
        msgs.append(Funds.encode(seq=len(msgs) + 1, account=a, asset=QUOTE_ASSET, amount=int(amount),
                                 action="Deposit"))
    return msgs


def risk_admin_slots(accounts: int = RISK_ACCOUNTS) -> np.ndarray:
    """The risk stream's setup: the perpetual and ``accounts`` accounts of ``COLLATERAL`` each."""
    return pack_slots(_perpetual_admin(accounts, COLLATERAL))


def _stream(orders: int, seed: int, accounts: int) -> tuple[np.ndarray, np.ndarray]:
    """The standard stream's slots and, per order, the mid price it was generated around."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=orders, p=[0.6, 0.3, 0.1])  # 0 passive, 1 cancel, 2 IOC
    step = rng.choice([-1, 0, 0, 0, 0, 0, 0, 0, 0, 1], size=orders)
    mid = np.clip(REFERENCE_PRICE + np.cumsum(step), REFERENCE_PRICE - 20_000, REFERENCE_PRICE + 20_000)
    side = rng.integers(1, 3, size=orders)
    passive_off = 1 + rng.geometric(0.35, size=orders) - 1
    ioc_off = rng.geometric(0.3, size=orders) - 1
    qty_passive = rng.integers(1, 101, size=orders)
    qty_ioc = rng.integers(1, 301, size=orders)
    account = rng.integers(1, ACCOUNTS + 1, size=orders)
    pick = rng.random(size=orders)
    if accounts != ACCOUNTS:
        # Same orders, other owners: drawn from a second generator so that every draw above
        # (and so every price, side, quantity, kind and cancel target) stays the same.
        account = np.random.default_rng([seed, accounts]).integers(1, accounts + 1, size=orders)

    new = np.zeros(orders, dtype=NewOrder.slot_dtype(SLOT_SIZE))
    cxl = np.zeros(orders, dtype=CancelOrder.slot_dtype(SLOT_SIZE))
    is_cancel = np.zeros(orders, dtype=bool)
    buy = side == int(Side.Buy)

    # which order each cancel targets: needs the order ids, assigned in stream order
    cancel_target = np.zeros(orders, dtype=np.int64)
    cancel_account = np.zeros(orders, dtype=np.int64)
    live: list[int] = []  # order ids placed as passive and not yet cancelled by the stream
    owner: dict[int, int] = {}
    next_id = 1
    k_list = kind.tolist()
    pick_list = pick.tolist()
    acc_list = account.tolist()
    for i in range(orders):
        k = k_list[i]
        if k == 1 and live:
            j = int(pick_list[i] * len(live))
            oid = live[j]
            live[j] = live[-1]
            live.pop()
            cancel_target[i] = oid
            cancel_account[i] = owner.pop(oid)
            is_cancel[i] = True
            continue
        if k == 0 or k == 1:  # a cancel with nothing to cancel becomes a passive order
            kind[i] = 0
            live.append(next_id)
            owner[next_id] = acc_list[i]
        next_id += 1

    passive = kind == 0
    seq = np.arange(1, orders + 1, dtype=np.uint64) + 1000
    price = np.where(passive, np.where(buy, mid - passive_off, mid + passive_off),
                     np.where(buy, mid + ioc_off, mid - ioc_off))
    new["blockLength"], new["templateId"], new["schemaId"], new["version"] = HEADER.unpack(NewOrder.header_bytes)
    new["seq"] = seq
    new["timestampNs"] = seq * 1000
    new["clOrdId"] = np.arange(1, orders + 1, dtype=np.uint64)
    new["price"] = price
    new["qty"] = np.where(passive, qty_passive, qty_ioc)
    new["account"] = account
    new["instrument"] = INSTRUMENT
    new["side"] = side
    new["ordType"] = int(OrdType.Limit)
    new["timeInForce"] = np.where(passive, int(TimeInForce.GTC), int(TimeInForce.IOC))
    cxl["blockLength"], cxl["templateId"], cxl["schemaId"], cxl["version"] = HEADER.unpack(CancelOrder.header_bytes)
    cxl["seq"] = seq
    cxl["timestampNs"] = seq * 1000
    cxl["clOrdId"] = np.arange(1, orders + 1, dtype=np.uint64) + (1 << 40)
    cxl["orderId"] = cancel_target
    cxl["account"] = cancel_account
    cxl["instrument"] = INSTRUMENT

    slots = new.view(np.uint8).reshape(orders, SLOT_SIZE).copy()
    slots[is_cancel] = cxl.view(np.uint8).reshape(orders, SLOT_SIZE)[is_cancel]
    return slots, mid


def make_stream(orders: int, seed: int = 1, accounts: int = ACCOUNTS) -> np.ndarray:
    """``orders`` order-entry messages as a (orders, SLOT_SIZE) uint8 slot array.

    ``accounts`` other than the standard 64 gives the same orders owned by accounts
    ``1..accounts`` (an order and the cancel that targets it keep one owner)."""
    return _stream(orders, seed, accounts)[0]


def _restamp(slots: np.ndarray, first_seq: int) -> None:
    """Renumber the Stamps of ``slots`` in place: seq ``first_seq, first_seq+1, ...``,
    timestamp ``seq * 1000`` ns."""
    words = slots.view("<u8")  # the Stamp is at bytes 8..32 of every message
    seq = np.arange(first_seq, first_seq + len(slots), dtype=np.uint64)
    words[:, 1] = seq
    words[:, 2] = seq * 1000


def index_slot(price: int, seq: int = 0) -> np.ndarray:
    """One IndexPrice for the bench's instrument, as a (1, SLOT_SIZE) slot array."""
    return pack_slots([IndexPrice.encode(seq=seq, timestampNs=seq * 1000, instrument=INSTRUMENT, price=int(price))])


def make_risk_stream(orders: int, seed: int = 1, accounts: int = RISK_ACCOUNTS,
                     index_every: int = INDEX_EVERY, first_seq: int = 0) -> tuple[np.ndarray, int]:
    """The standard stream's orders over ``accounts`` accounts with an ``IndexPrice`` at the
    stream's current mid after every ``index_every`` orders (0: none); Stamps renumbered
    from ``first_seq`` (default: after ``accounts``' setup). Returns (slots, index messages)."""
    orders_slots, mid = _stream(orders, seed, accounts)
    n_index = orders // index_every if index_every > 0 else 0
    total = orders + n_index
    slots = np.empty((total, SLOT_SIZE), dtype=np.uint8)
    i = np.arange(orders)
    slots[i + (i // index_every if index_every > 0 else 0)] = orders_slots
    if n_index:
        idx = np.zeros(n_index, dtype=IndexPrice.slot_dtype(SLOT_SIZE))
        idx["blockLength"], idx["templateId"], idx["schemaId"], idx["version"] = HEADER.unpack(IndexPrice.header_bytes)
        j = np.arange(1, n_index + 1)
        idx["price"] = mid[j * index_every - 1]  # the mid of the order just before it
        idx["instrument"] = INSTRUMENT
        slots[j * (index_every + 1) - 1] = idx.view(np.uint8).reshape(n_index, SLOT_SIZE)
    _restamp(slots, first_seq or 2 * accounts + 1000)
    return slots, n_index


# -- running and counting -----------------------------------------------------------------------

_TEMPLATE = np.dtype({"names": ["templateId"], "formats": ["<u2"], "offsets": [2], "itemsize": SLOT_SIZE})
_REJECTED = OrderRejected.slot_dtype(SLOT_SIZE)
_CXL_REJECTED = CancelRejected.slot_dtype(SLOT_SIZE)
_ADMIN_RESULT = AdminResult.slot_dtype(SLOT_SIZE)
_LIQUIDATION = Liquidation.slot_dtype(SLOT_SIZE)
_NAMES = {m.template_id: m.name for m in SCHEMA.messages.values()}
MONEY_REASONS = ("InsufficientFunds", "InsufficientMargin")


def tally(events: np.ndarray, counts: Counter | None = None) -> Counter:
    """Count a batch's events: by message name, ``OrderRejected:<reason>``,
    ``CancelRejected:<reason>``, ``AdminRejected:<refTemplateId>:<reason>`` and
    ``Liquidation:<stage>``."""
    counts = Counter() if counts is None else counts
    if len(events) == 0:
        return counts
    tid = events.view(_TEMPLATE)[:, 0]["templateId"]
    ids, n = np.unique(tid, return_counts=True)
    for t, k in zip(ids.tolist(), n.tolist()):
        counts[_NAMES.get(t, str(t))] += k
    for layout, dtype, field, label in ((OrderRejected, _REJECTED, "reason", "OrderRejected"),
                                        (CancelRejected, _CXL_REJECTED, "reason", "CancelRejected"),
                                        (Liquidation, _LIQUIDATION, "stage", "Liquidation")):
        rows = events[tid == layout.template_id]
        if len(rows):
            vals, n = np.unique(rows.view(dtype)[:, 0][field], return_counts=True)
            enum = LiquidationStage if field == "stage" else RejectReason
            for v, k in zip(vals.tolist(), n.tolist()):
                counts[f"{label}:{enum(v).name}"] += k
    rows = events[tid == AdminResult.template_id]
    if len(rows):
        res = rows.view(_ADMIN_RESULT)[:, 0]
        bad = res[res["reason"] != 0]
        for ref, reason in zip(bad["refTemplateId"].tolist(), bad["reason"].tolist()):
            counts[f"AdminRejected:{_NAMES.get(ref, ref)}:{RejectReason(reason).name}"] += 1
    return counts


def _setup(config: EngineConfig, admin: np.ndarray, batch: int = 4096) -> MatchingEngine:
    """A fresh engine with ``admin`` processed; raises if any admin message was refused."""
    eng = MatchingEngine(config)
    counts: Counter = Counter()
    for i in range(0, len(admin), batch):
        tally(eng.process(admin[i: i + batch]), counts)
    bad = {k: v for k, v in counts.items() if k.startswith(("AdminRejected", "OrderRejected"))}
    if bad:
        raise RuntimeError(f"the benchmark's setup was refused by the engine: {bad}")
    return eng


def _run_once(stream: np.ndarray, batch: int, config: EngineConfig = CONFIG,
              admin: np.ndarray | None = None) -> dict[str, Any]:
    eng = _setup(config, admin_slots() if admin is None else admin)
    batches = [stream[i: i + batch] for i in range(0, len(stream), batch)]
    events = 0
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for b in batches:
            out = eng.process(b)
            events += len(out)
        elapsed = time.perf_counter() - t0
    finally:
        if gc_was:
            gc.enable()
    trades = eng.next_trade_id - 1  # trade ids count from 1
    return {"elapsed_s": elapsed, "events": events, "trades": trades, "live_orders": eng.live_orders,
            "orders_accepted": eng.next_order_id - 1}


def check_run(stream: np.ndarray, batch: int = 1024, config: EngineConfig = CONFIG,
              admin: np.ndarray | None = None,
              inspect: Callable[[MatchingEngine], None] | None = None) -> Counter:
    """An untimed run of ``stream`` that counts every event by kind (``tally``); ``inspect``
    gets the engine at the end."""
    eng = _setup(config, admin_slots() if admin is None else admin)
    counts: Counter = Counter()
    for i in range(0, len(stream), batch):
        tally(eng.process(stream[i: i + batch]), counts)
    if inspect is not None:
        inspect(eng)
    return counts


def _risk_at_end(accounts: int, into: dict[str, Any]) -> Callable[[MatchingEngine], None]:
    """An ``inspect`` for the risk stream: positions and margin of every account at its end."""
    def inspect(eng: MatchingEngine) -> None:
        risks = [eng.account_risk(a) for a in range(1, accounts + 1)]
        positions = [abs(eng.position(a, INSTRUMENT)["qty"]) for a in range(1, accounts + 1)]
        into["risk_end_accounts_with_positions"] = sum(1 for q in positions if q)
        into["risk_end_max_abs_position"] = max(positions)
        into["risk_end_max_initial_margin"] = max(r["initial"] for r in risks)
        into["risk_end_min_free_collateral"] = min(r["free"] for r in risks)
        into["risk_end_mark"] = int(eng.mark_price(INSTRUMENT))
    return inspect


def _rejections(counts: Counter) -> dict[str, int]:
    rejected = sum(v for k, v in counts.items() if k.startswith("OrderRejected:"))
    money = sum(counts[f"OrderRejected:{r}"] for r in MONEY_REASONS)
    return {"orders_rejected": rejected, "rejected_for_money": money,
            "cancels_rejected": sum(v for k, v in counts.items() if k.startswith("CancelRejected:")),
            "admin_rejected": sum(v for k, v in counts.items() if k.startswith("AdminRejected:"))}


def _warn_rejections(what: str, counts: Counter) -> None:
    bad = {k: v for k, v in sorted(counts.items())
           if k.startswith(("OrderRejected:", "AdminRejected:")) or k.startswith("Liquidation:")}
    if bad:
        print(f"warning: {what}: the engine refused orders or liquidated ({bad}); the stream's cancels "
              "name order ids, so the figures are not comparable with a clean run", file=sys.stderr)


def _python_child(path: str, batch: int) -> None:
    """Runs in a NUMBA_DISABLE_JIT=1 subprocess: prints the JSON of one run."""
    stream = np.load(path)
    result = _run_once(stream, batch)
    print(json.dumps(result))


def python_run(stream: np.ndarray, batch: int, timeout: float = 1800.0) -> dict[str, Any]:
    """The same stream with the JIT disabled, in a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "stream.npy")
        np.save(path, stream)
        env = dict(os.environ, NUMBA_DISABLE_JIT="1")
        code = f"from ringex.tools.bench_engine import _python_child; _python_child({path!r}, {batch})"
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"NUMBA_DISABLE_JIT run failed:\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def _jit_warm_up() -> float:
    from ringex.engine.engine import warm_up

    t0 = time.perf_counter()
    warm = warm_up()
    return warm if warm else time.perf_counter() - t0


def _same_output(results: list[dict[str, Any]]) -> None:
    first = results[0]
    if any(r["events"] != first["events"] or r["trades"] != first["trades"] for r in results):
        raise RuntimeError("runs of the same stream disagree: the engine is not deterministic")


def run_bench(orders: int = 1_000_000, runs: int = 3, seed: int = 1, batch: int = 1024,
              python_orders: int = 100_000) -> dict[str, Any]:
    """Median figures of ``runs`` fresh-engine runs of the standard stream; see the module doc."""
    jit_warmup_s = _jit_warm_up()
    t0 = time.perf_counter()
    stream = make_stream(orders, seed)
    gen_s = time.perf_counter() - t0
    results = [_run_once(stream, batch) for _ in range(max(1, runs))]
    elapsed = statistics.median(r["elapsed_s"] for r in results)
    _same_output(results)
    first = results[0]
    counts = check_run(stream, batch)
    _warn_rejections("bench engine", counts)
    out: dict[str, Any] = {
        "orders": orders,
        "runs": len(results),
        "seed": seed,
        "batch": batch,
        "orders_per_s": orders / elapsed,
        "ns_per_order": elapsed / orders * 1e9,
        "elapsed_s": elapsed,
        "trades": first["trades"],
        "events": first["events"],
        "events_per_s": first["events"] / elapsed,
        "orders_accepted": first["orders_accepted"],
        "live_orders_end": first["live_orders"],
        **_rejections(counts),
        "jit_warmup_s": jit_warmup_s,
        "stream_build_s": gen_s,
    }
    if python_orders > 0:
        n = min(python_orders, orders)
        py = python_run(stream[:n], batch)
        out["python_orders"] = n
        out["python_orders_per_s"] = n / py["elapsed_s"]
        out["jit_speedup"] = out["orders_per_s"] / out["python_orders_per_s"]
    return out


# -- risk: the liquidation check ----------------------------------------------------------------


#: Collateral of the margin probe's two accounts: far beyond any mark move of the bench.
PROBE_COLLATERAL = 10**12


def _cross(eng: MatchingEngine, longs: Sequence[int], first_seq: int) -> None:
    """Open the pairs: for each long account ``a`` in ``longs``, the short ``a + 1`` rests
    ``LIQ_QTY`` lots at the reference price and ``a`` takes them; raises unless every pair
    traded. The margin probe opens its pair the same way, so its fees are the bench's."""
    msgs = []
    for a in longs:
        msgs.append(NewOrder.encode(clOrdId=a + 1, account=a + 1, instrument=INSTRUMENT, side="Sell",
                                    ordType="Limit", timeInForce="GTC", price=REFERENCE_PRICE, qty=LIQ_QTY))
        msgs.append(NewOrder.encode(clOrdId=a, account=a, instrument=INSTRUMENT, side="Buy",
                                    ordType="Limit", timeInForce="IOC", price=REFERENCE_PRICE, qty=LIQ_QTY))
    orders = pack_slots(msgs)
    _restamp(orders, first_seq)
    counts: Counter = Counter()
    for i in range(0, len(orders), 1024):
        tally(eng.process(orders[i: i + 1024]), counts)
    if counts["Trade"] != len(longs) or counts["OrderRejected"] or counts["Liquidation"]:
        raise RuntimeError(f"opening the positions: {len(longs)} crosses expected, got {dict(counts)}")


def threshold_collateral(marks: Sequence[int], long: bool) -> list[int]:
    """For each mark, the collateral with which an account holding ``LIQ_QTY`` lots long (or
    short), opened at the reference price, has equity exactly its maintenance margin there.

    The figures are the engine's own (``MatchingEngine.account_risk``), not a copy of its
    rules: a probe engine holds the same pair of positions with ``PROBE_COLLATERAL`` each
    and moves its mark to every threshold; what the account needs is its maintenance there
    less what the position gained or lost (the probe's equity less its collateral)."""
    probe = _setup(risk_config(2, max_orders=16), pack_slots(_perpetual_admin(2, PROBE_COLLATERAL)))
    _cross(probe, [1], first_seq=1000)
    account = 1 if long else 2
    out = []
    for seq, mark in enumerate(marks, start=2000):
        probe.process(index_slot(mark, seq))
        if probe.mark_price(INSTRUMENT) != mark:
            raise RuntimeError(f"the probe's mark is {probe.mark_price(INSTRUMENT)}, not the index {mark}")
        risk = probe.account_risk(account)
        out.append(PROBE_COLLATERAL + risk["maintenance"] - risk["equity"])
    return out


def liquidation_accounts(accounts: int) -> list[tuple[int, int, int]]:
    """The liquidation-check state: (account, signed position, collateral) for ``accounts``
    (even) accounts. Pair k: account 2k+1 long ``LIQ_QTY``, 2k+2 short, crossed at the
    reference price P0; the long is liquidatable exactly when the mark is below
    ``P0 - LIQ_GAP - LIQ_STEP*k``, the short when it is above ``P0 + LIQ_GAP + LIQ_STEP*k``
    (equity equals maintenance at those marks: ``threshold_collateral``)."""
    p0, q, pairs = REFERENCE_PRICE, LIQ_QTY, accounts // 2
    lows = [p0 - LIQ_GAP - LIQ_STEP * k for k in range(pairs)]  # equity == MM: not yet liquidatable
    highs = [p0 + LIQ_GAP + LIQ_STEP * k for k in range(pairs)]
    if pairs and lows[-1] <= q:
        raise ValueError(f"{accounts} accounts do not fit LIQ_GAP/LIQ_STEP under the reference price")
    out = []
    for k, (c_long, c_short) in enumerate(zip(threshold_collateral(lows, True), threshold_collateral(highs, False))):
        out.append((2 * k + 1, q, c_long))
        out.append((2 * k + 2, -q, c_short))
    return out


def liquidation_state(accounts: int, config: EngineConfig) -> tuple[MatchingEngine, list[tuple[int, int, int]]]:
    """A fresh engine in which every one of ``accounts`` accounts holds a position (see
    ``liquidation_accounts``), the book empty and the mark at the reference price. Raises
    when the engine refuses to open a position (LIQ_GAP too small for the initial margin)."""
    state = liquidation_accounts(accounts)
    eng = _setup(config, pack_slots(_perpetual_admin(len(state), [c for _, _, c in state])))
    _cross(eng, [a for a, qty, _ in state if qty > 0], first_seq=3 * accounts + 1000)
    wrong = [a for a, qty, _ in state if eng.position(a, INSTRUMENT)["qty"] != qty]
    if wrong:
        raise RuntimeError(f"accounts {wrong[:10]}... do not hold the positions they traded")
    return eng, state


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def liquidation_check(accounts: int = RISK_ACCOUNTS, reps: int = LIQ_REPS, fraction: float = LIQ_FRACTION,
                      warmup: int = 5, max_orders: int = 1 << 12) -> dict[str, Any]:
    """Time ``process`` of one ``IndexPrice`` against ``accounts`` accounts holding positions:
    (a) a move down of LIQ_GAP/2 that puts nobody at risk, (b) a move down that makes
    ``fraction`` of the accounts (longs) liquidatable; plus (call) one ``CancelOrder`` of an
    unknown order, the cost of a ``process`` call itself. Every repetition starts from the
    same snapshot (``restore``, then one untimed ``IndexPrice`` at the unchanged mark, so that
    the code and the call path are warm again after the restore has swept the caches);
    figures in µs (``perf_counter_ns`` around ``process``)."""
    config = risk_config(accounts, max_orders=max_orders)
    t0 = time.perf_counter()
    eng, state = liquidation_state(accounts, config)
    build_s = time.perf_counter() - t0
    n = len(state)
    at_risk = min(n // 2, max(1, round(fraction * n)))
    mark_a = REFERENCE_PRICE - LIQ_GAP // 2
    mark_b = REFERENCE_PRICE - LIQ_GAP - LIQ_STEP * (at_risk - 1) - 1
    seq = 3 * accounts + 1000 + n
    cases = {
        "call": pack_slots([CancelOrder.encode(seq=seq, timestampNs=seq * 1000, clOrdId=1, orderId=1 << 50,
                                          account=1, instrument=INSTRUMENT)]),
        "a": index_slot(mark_a, seq),
        "b": index_slot(mark_b, seq),
    }
    primer = index_slot(REFERENCE_PRICE, seq - 1)  # the mark it already has: nothing moves
    snap = eng.snapshot()
    times: dict[str, list[float]] = {k: [] for k in cases}
    seen: dict[str, Counter] = {}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(warmup + reps):
            for name, slot in cases.items():
                eng.restore(snap)
                if tally(eng.process(primer))["Liquidation"]:
                    raise RuntimeError("the unchanged mark liquidated someone")
                t = time.perf_counter_ns()
                out = eng.process(slot)
                t = time.perf_counter_ns() - t
                counts = tally(out)
                if name in seen and counts != seen[name]:
                    raise RuntimeError(f"case {name}: repetitions from one snapshot disagree")
                seen[name] = counts
                if r >= warmup:
                    times[name].append(t / 1000)
    finally:
        if gc_was:
            gc.enable()
    a, b = seen["a"], seen["b"]
    started = b["Liquidation:Start"]
    return {
        "liq_accounts_with_positions": n,
        "liq_reps": reps,
        "liq_state_build_s": build_s,
        "process_call_us_p50": _pct(times["call"], 50),
        "liq_nomove_mark": mark_a,
        "liq_nomove_move_ppm": (REFERENCE_PRICE - mark_a) * 1_000_000 // REFERENCE_PRICE,
        "liq_nomove_us_p50": _pct(times["a"], 50),
        "liq_nomove_us_p99": _pct(times["a"], 99),
        "liq_nomove_liquidations": a["Liquidation:Start"],
        "liq_nomove_admin_rejected": sum(v for k, v in a.items() if k.startswith("AdminRejected:")),
        "liquidation_mark": mark_b,
        "liquidation_move_ppm": (REFERENCE_PRICE - mark_b) * 1_000_000 // REFERENCE_PRICE,
        "liquidation_check_us_p50": _pct(times["b"], 50),
        "liquidation_check_us_p99": _pct(times["b"], 99),
        "liquidation_check_us_max": max(times["b"]),
        "accounts_at_risk": started,
        "accounts_at_risk_expected": at_risk,
        "liquidations_done": b["Liquidation:Done"],
        "liquidation_us_per_account_p50": _pct(times["b"], 50) / started if started else None,
        "liquidation_events": sum(v for k, v in b.items() if ":" not in k),
        "liquidation_insurance_takeovers": b["Liquidation:InsuranceTakeover"],
        "liquidation_admin_rejected": sum(v for k, v in b.items() if k.startswith("AdminRejected:")),
    }


# -- risk: the stream ---------------------------------------------------------------------------


def run_risk_bench(orders: int = 1_000_000, accounts: int = RISK_ACCOUNTS, runs: int = 3, seed: int = 1,
                   batch: int = 1024, index_every: int = INDEX_EVERY, liq_reps: int = LIQ_REPS,
                   liq_fraction: float = LIQ_FRACTION, baseline: bool = True) -> dict[str, Any]:
    """``ringex bench engine --risk``: the standard stream's orders over ``accounts``
    perpetual-futures accounts, margin-checked, an ``IndexPrice`` every ``index_every``
    orders; then ``liquidation_check``. With ``baseline``, the plain benchmark (spot, 64
    accounts) and the same ``accounts``-account stream on spot run in alternation with it
    (``runs`` each; figures are medians)."""
    jit_warmup_s = _jit_warm_up()
    config = risk_config(accounts)
    t0 = time.perf_counter()
    risk_stream, n_index = make_risk_stream(orders, seed, accounts, index_every)
    risk_admin = risk_admin_slots(accounts)
    if baseline:
        std_stream = make_stream(orders, seed)
        spot_stream = make_stream(orders, seed, accounts)
        _restamp(spot_stream, 3 * accounts + 1000)
        spot_admin = admin_slots(accounts)
    gen_s = time.perf_counter() - t0

    at_end: dict[str, Any] = {}
    counts = check_run(risk_stream, batch, config, risk_admin, _risk_at_end(accounts, at_end))
    _warn_rejections("bench engine --risk", counts)
    if baseline:
        spot_counts = check_run(spot_stream, batch, config, spot_admin)
        _warn_rejections("bench engine --risk (spot baseline)", spot_counts)

    res: dict[str, list[dict[str, Any]]] = {"risk": [], "baseline": [], "spot": []}
    for _ in range(max(1, runs)):  # alternating, so that the host's drift hits all three alike
        if baseline:
            res["baseline"].append(_run_once(std_stream, batch))
            res["spot"].append(_run_once(spot_stream, batch, config, spot_admin))
        res["risk"].append(_run_once(risk_stream, batch, config, risk_admin))
    for results in res.values():
        if results:
            _same_output(results)
    elapsed = statistics.median(r["elapsed_s"] for r in res["risk"])
    first = res["risk"][0]
    rej = _rejections(counts)
    out: dict[str, Any] = {
        "orders": orders,
        "accounts": accounts,
        "runs": len(res["risk"]),
        "seed": seed,
        "batch": batch,
        "index_every": index_every,
        "index_messages": n_index,
        "risk_orders_per_s": orders / elapsed,  # elapsed includes the index messages
        "risk_ns_per_order": elapsed / orders * 1e9,
        "risk_messages_per_s": (orders + n_index) / elapsed,
        "risk_elapsed_s": elapsed,
        "risk_trades": first["trades"],
        "risk_events": first["events"],
        "risk_orders_accepted": first["orders_accepted"],
        "risk_live_orders_end": first["live_orders"],
        "risk_orders_rejected": rej["orders_rejected"],
        "rejected_for_margin": counts["OrderRejected:InsufficientMargin"],
        "risk_rejected_for_money": rej["rejected_for_money"],
        "risk_cancels_rejected": rej["cancels_rejected"],
        "risk_admin_rejected": rej["admin_rejected"],
        "mark_updates": counts["MarkPrice"],
        "risk_liquidations": counts["Liquidation:Start"],
        "collateral_per_account": COLLATERAL,
        **at_end,
    }
    if baseline:
        base = statistics.median(r["elapsed_s"] for r in res["baseline"])
        spot = statistics.median(r["elapsed_s"] for r in res["spot"])
        out.update({
            "baseline_orders_per_s": orders / base,
            "risk_vs_baseline": base / elapsed,
            "spot_accounts_orders_per_s": orders / spot,
            "risk_vs_spot_accounts": spot / elapsed,
            "spot_accounts_rejected_for_money": _rejections(spot_counts)["rejected_for_money"],
            "baseline_trades": res["baseline"][0]["trades"],
            "same_trades_as_baseline": first["trades"] == res["baseline"][0]["trades"],
        })
    out.update(liquidation_check(accounts, liq_reps, liq_fraction))
    out["jit_warmup_s"] = jit_warmup_s
    out["stream_build_s"] = gen_s
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringex.tools.bench_engine", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1024,
                        help="slots per process() call (the ring's default batch_limit is 1024)")
    parser.add_argument("--python-orders", type=int, default=100_000,
                        help="orders for the NUMBA_DISABLE_JIT comparison (0 skips it; not with --risk)")
    add_risk_args(parser)
    args = parser.parse_args(argv)
    result = run_from_args(args)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"ringex bench engine{' --risk' if args.risk else ''} (medians)")
        for k, v in result.items():
            print(f"  {k:<32} {v:,.3f}" if isinstance(v, float) else f"  {k:<32} {v}")
    return 0


def add_risk_args(parser: argparse.ArgumentParser) -> None:
    """The ``--risk`` options (shared with ``ringex bench engine``)."""
    parser.add_argument("--risk", action="store_true",
                        help="perpetual futures with margin checks over --accounts accounts, an IndexPrice every "
                             "--index-every orders, then the liquidation check")
    parser.add_argument("--accounts", type=int, default=RISK_ACCOUNTS, help="--risk: accounts (default 10000)")
    parser.add_argument("--index-every", type=int, default=INDEX_EVERY,
                        help="--risk: orders between IndexPrice messages (default 1000; 0: none)")
    parser.add_argument("--liq-reps", type=int, default=LIQ_REPS,
                        help="--risk: repetitions of each liquidation-check case (default 500)")
    parser.add_argument("--liq-fraction", type=float, default=LIQ_FRACTION,
                        help="--risk: fraction of the accounts the liquidating move puts at risk (default 0.01)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="--risk: skip the baseline runs (plain bench, same accounts on spot)")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    batch = getattr(args, "batch", 1024)
    if args.risk:
        return run_risk_bench(orders=args.orders, accounts=args.accounts, runs=args.runs, seed=args.seed,
                              batch=batch, index_every=args.index_every, liq_reps=args.liq_reps,
                              liq_fraction=args.liq_fraction, baseline=not args.no_baseline)
    return run_bench(orders=args.orders, runs=args.runs, seed=args.seed, batch=batch,
                     python_orders=getattr(args, "python_orders", 100_000))


if __name__ == "__main__":
    sys.exit(main())
