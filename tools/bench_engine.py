"""``ringex bench engine``: matching-engine throughput on a standard, seeded order stream.

The stream (``make_stream``) is one instrument (tick 1, lot 1, reference price 100 000) and
64 accounts (STP off), then ``orders`` order-entry messages:

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
``python_orders_per_s`` runs the same engine code with ``NUMBA_DISABLE_JIT=1`` in a
subprocess over the first ``python_orders`` orders of the same stream.
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
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ringex.engine.codec import HEADER
from ringex.engine.config import EngineConfig
from ringex.engine.messages import (
    SLOT_SIZE, CancelOrder, CreateAccount, InstrumentDefinition, NewOrder, OrdType, Side, StpMode,
    TimeInForce,
)

INSTRUMENT = 1
ACCOUNTS = 64
REFERENCE_PRICE = 100_000
CONFIG = EngineConfig(max_instruments=4, max_accounts=ACCOUNTS + 1, max_orders=1 << 18,
                      price_levels=1 << 16, max_stops=16, market_protection_ticks=100,
                      event_buffer=8192)


def admin_slots() -> np.ndarray:
    """The instrument definition and the accounts, as slots."""
    msgs = [InstrumentDefinition.encode(
        seq=1, instrument=INSTRUMENT, tickSize=1, lotSize=1, minQty=1, maxQty=1_000_000,
        referencePrice=REFERENCE_PRICE, symbol="BENCH", kind="Spot", haltPolicy="Reject", status="Trading")]
    for a in range(1, ACCOUNTS + 1):
        msgs.append(CreateAccount.encode(seq=1 + a, account=a, stpDefault=int(StpMode.Off)))
    slots = np.zeros((len(msgs), SLOT_SIZE), dtype=np.uint8)
    for i, m in enumerate(msgs):
        slots[i, : len(m)] = np.frombuffer(m, dtype=np.uint8)
    return slots


def make_stream(orders: int, seed: int = 1) -> np.ndarray:
    """``orders`` order-entry messages as a (orders, SLOT_SIZE) uint8 slot array."""
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
    return slots


def _run_once(stream: np.ndarray, batch: int) -> dict[str, Any]:
    from ringex.engine.engine import MatchingEngine

    eng = MatchingEngine(CONFIG)
    eng.process(admin_slots())
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


def run_bench(orders: int = 1_000_000, runs: int = 3, seed: int = 1, batch: int = 1024,
              python_orders: int = 100_000) -> dict[str, Any]:
    """Median figures of ``runs`` fresh-engine runs of the standard stream; see the module doc."""
    from ringex.engine.engine import warm_up

    t0 = time.perf_counter()
    warm = warm_up()
    jit_warmup_s = warm if warm else time.perf_counter() - t0
    t0 = time.perf_counter()
    stream = make_stream(orders, seed)
    gen_s = time.perf_counter() - t0
    results = [_run_once(stream, batch) for _ in range(max(1, runs))]
    elapsed = statistics.median(r["elapsed_s"] for r in results)
    first = results[0]
    if any(r["events"] != first["events"] or r["trades"] != first["trades"] for r in results):
        raise RuntimeError("runs of the same stream disagree: the engine is not deterministic")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringex.tools.bench_engine", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1024,
                        help="slots per process() call (the ring's default batch_limit is 1024)")
    parser.add_argument("--python-orders", type=int, default=100_000,
                        help="orders for the NUMBA_DISABLE_JIT comparison (0 skips it)")
    args = parser.parse_args(argv)
    result = run_bench(orders=args.orders, runs=args.runs, seed=args.seed, batch=args.batch,
                       python_orders=args.python_orders)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print("ringex bench engine (medians)")
        for k, v in result.items():
            print(f"  {k:<22} {v:,.3f}" if isinstance(v, float) else f"  {k:<22} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
