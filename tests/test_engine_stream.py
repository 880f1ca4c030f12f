"""The compiled engine over whole streams: determinism, batch boundaries, the same code with
the JIT disabled, output growth, snapshots, the numba cache guard and the benchmark's report
(never its speed: performance belongs to ``ringex bench``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from engine_kit import FUNDING, SMALL, mixed_stream
from ringex.engine.kernel import jitcache
from ringex.engine.config import EngineConfig
from ringex.engine.engine import MatchingEngine, pack_slots
from ringex.engine.wire.messages import SCHEMA, SLOT_SIZE

CONFIG = EngineConfig(**{**SMALL, "max_orders": 48, "max_stops": 6, "price_levels": 32})


def run_stream(slots: np.ndarray, batch: int, config: EngineConfig = CONFIG) -> bytes:
    eng = MatchingEngine(config)
    parts = [eng.process(slots[i: i + batch]).tobytes() for i in range(0, len(slots), batch)]
    return b"".join(parts)


@pytest.fixture(scope="module")
def mixed() -> np.ndarray:
    return pack_slots(mixed_stream(4000, seed=3))


def test_the_mixed_stream_reaches_the_interesting_events(mixed):
    eng = MatchingEngine(CONFIG)
    names = Counter(SCHEMA.decode(row).name for row in eng.process(mixed))
    for name in ("Trade", "BookExecute", "BookAdd", "BookDelete", "BookReduce", "BookReplace", "OrderReplaced",
                 "StopTriggered", "MassCancelDone", "OrderCanceled", "CancelRejected", "OrderRejected"):
        assert names[name] > 0, (name, names)


def test_same_input_same_output_whatever_the_batching(mixed):
    whole = run_stream(mixed, len(mixed))
    assert whole == run_stream(mixed, len(mixed))
    for batch in (1, 7, 64, 1000):
        assert run_stream(mixed, batch) == whole, batch
    # and every event is a well-formed SBE message
    for row in np.frombuffer(whole, dtype=np.uint8).reshape(-1, SLOT_SIZE)[:500]:
        SCHEMA.decode(row)


def test_the_same_code_with_the_jit_disabled_gives_the_same_bytes(mixed, tmp_path: Path):
    stream = mixed[:2500]
    np.save(tmp_path / "in.npy", stream)
    code = textwrap.dedent(f"""
        import numpy as np
        from numba.core import config
        assert config.DISABLE_JIT
        from ringex.engine.config import EngineConfig
        from ringex.engine.engine import MatchingEngine
        slots = np.load({str(tmp_path / "in.npy")!r})
        eng = MatchingEngine(EngineConfig(**{CONFIG_KW!r}))
        out = b"".join(eng.process(slots[i:i + 100]).tobytes() for i in range(0, len(slots), 100))
        open({str(tmp_path / "out.bin")!r}, "wb").write(out)
    """)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out.bin").read_bytes() == run_stream(stream, 100)


CONFIG_KW = {k: getattr(CONFIG, k) for k in CONFIG.__struct_fields__}


def test_one_message_that_emits_thousands_of_events_grows_the_buffer():
    n = 3000
    msgs = [SCHEMA.encode("InstrumentDefinition", seq=1, instrument=1, tickSize=1, lotSize=1, minQty=1,
                          maxQty=10**9, referencePrice=1000, symbol="X", kind="Spot", haltPolicy="Reject",
                          status="Trading", baseAsset=1),
            SCHEMA.encode("CreateAccount", seq=2, account=1, stpDefault="Off"),
            SCHEMA.encode("CreateAccount", seq=3, account=2, stpDefault="Off")]
    msgs += [SCHEMA.encode("Funds", seq=3, account=a, asset=asset, amount=FUNDING, action="Deposit")
             for a in (1, 2) for asset in (0, 1)]
    msgs += [SCHEMA.encode("NewOrder", seq=4 + i, account=1, instrument=1, side="Sell", ordType="Limit",
                           timeInForce="GTC", qty=1, price=1001 + i % 50) for i in range(n)]
    eng = MatchingEngine(EngineConfig(max_instruments=2, max_accounts=3, max_orders=n + 10, price_levels=256,
                                      event_buffer=16))
    assert len(eng.process(pack_slots(msgs))) == 3 + 1 + 4 + 2 * n
    assert eng.output_capacity >= 2 * n
    # one aggressor sweeps every level, plus an iceberg refilling a thousand times
    eng.process(pack_slots([SCHEMA.encode("NewOrder", seq=10**6, account=1, instrument=1, side="Sell",
                                        ordType="Limit", timeInForce="GTC", qty=1000, displayQty=1,
                                        price=1060)]))
    sweep = pack_slots([SCHEMA.encode("NewOrder", seq=10**6 + 1, account=2, instrument=1, side="Buy",
                                    ordType="Limit", timeInForce="IOC", qty=n + 1000, price=1060)])
    events = eng.process(sweep)
    names = Counter(SCHEMA.decode(row).name for row in events)
    assert names["Trade"] == n + 1000 and names["BookExecute"] == n + 1000
    assert names["BookAdd"] == 999  # the iceberg's refills
    assert len(events) == 1 + 2 * (n + 1000) + 999
    assert all(int(row.view(np.uint64)[1]) == 10**6 + 1 for row in events)  # the stamp's seq
    assert eng.live_orders == 0


def test_snapshot_and_restore_continue_identically(mixed):
    head, tail = mixed[:2000], mixed[2000:]
    a = MatchingEngine(CONFIG)
    a.process(head)
    snap = a.snapshot()
    expected = a.process(tail).tobytes()
    b = MatchingEngine(CONFIG)
    b.restore(snap)
    assert b.process(tail).tobytes() == expected
    with pytest.raises(ValueError):
        MatchingEngine(EngineConfig(**{**SMALL, "max_orders": 5})).restore(snap)


def test_state_arrays_are_named_views():
    eng = MatchingEngine(CONFIG)
    arrays = eng.arrays()
    assert arrays["order.price"].shape == (CONFIG.max_orders,)
    assert arrays["level.head"].shape == (CONFIG.max_instruments * 2 * CONFIG.price_levels,)
    assert np.shares_memory(arrays["order.leaves"], eng.state.arena)


def test_bad_input_shapes_are_refused():
    eng = MatchingEngine(CONFIG)
    with pytest.raises(ValueError):
        eng.process(np.zeros((2, SLOT_SIZE + 8), dtype=np.uint8))
    with pytest.raises(ValueError):
        eng.process(np.zeros((2, SLOT_SIZE), dtype=np.int64))
    assert len(eng.process(np.zeros((0, SLOT_SIZE), dtype=np.uint8))) == 0
    # read-only and non-contiguous inputs are fine
    slots = pack_slots(mixed_stream(50, seed=9))
    ro = slots.copy()
    ro.flags.writeable = False
    strided = np.zeros((len(slots), 2 * SLOT_SIZE), dtype=np.uint8)
    strided[:, :SLOT_SIZE] = slots
    assert (MatchingEngine(CONFIG).process(ro).tobytes()
            == MatchingEngine(CONFIG).process(strided[:, :SLOT_SIZE]).tobytes())


def test_engine_config_validation():
    with pytest.raises(ValueError, match="max_orders"):
        EngineConfig(max_orders=0)
    with pytest.raises(ValueError, match="price_levels"):
        EngineConfig(price_levels=1)
    with pytest.raises(ValueError, match="max_instruments"):
        EngineConfig(max_instruments=1)
    import msgspec

    with pytest.raises(msgspec.ValidationError, match="event_buffer"):
        msgspec.convert({"event_buffer": 0}, EngineConfig)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"max_order": 5}, EngineConfig)
    assert msgspec.convert({"max_orders": 10}, EngineConfig).max_orders == 10


def test_cache_guard_stamp_tracks_the_sources():
    fp = jitcache.fingerprint()
    assert fp == jitcache.fingerprint() and len(fp) == 32
    where = jitcache.cache_dir()
    if where is None:
        pytest.skip("JIT disabled")
    assert (where / jitcache.STAMP_NAME).read_text() == fp
    assert jitcache.guard_cache() is False  # already current: nothing cleared


def test_bench_runs_and_reports():
    """The benchmark's report: its structure and counts. Which run is faster is a measurement
    (``ringex bench engine``), not something a test can assert on a shared host."""
    from ringex.tools.bench_engine import check_run, make_stream, run_bench

    r = run_bench(orders=20_000, runs=1, seed=2, python_orders=1_000)
    for key in ("orders_per_s", "jit_warmup_s", "python_orders_per_s", "jit_speedup"):
        assert isinstance(r[key], float) and r[key] > 0, key
    assert (r["orders"], r["batch"], r["python_orders"]) == (20_000, 1024, 1_000)
    assert r["jit_speedup"] == pytest.approx(r["orders_per_s"] / r["python_orders_per_s"])
    # the timed run's counts are those of an untimed run of the same stream, event by event
    counts = check_run(make_stream(20_000, seed=2))
    assert r["trades"] == counts["Trade"] > 0
    assert r["events"] == sum(v for k, v in counts.items() if ":" not in k)
    assert r["orders_rejected"] == 0
