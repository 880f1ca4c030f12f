"""``ringex bench pipeline``: the whole inbound path, process to process.

A producer process writes pre-encoded SBE NewOrder messages into a gateway ring (stamping
each batch's ingress time); the exchange's own processes run the sequencer and the
journaling engine (durability as asked, ``batch`` by default: one fdatasync per batch);
this process consumes the output ring as a subscriber and measures, for each order's
acknowledgement (accepted or rejected), ingress stamp to consumer. Throughput comes from a
flood (the producer offers as fast as the ring takes); the latency percentiles from a
second, paced phase (300k messages at 50k msg/s in batches of 16), since a flood's latency
is only the depth of the queue it builds (reported as ``flood_p50_us``). The embedded
topology is used: one process composes sequencer and engine with backoff idle, as on a
2-core host.

Pauses: each run is done twice, alternating, with periodic snapshots on (``snapshot_every``
a tenth of the paced phase, so that at least three snapshots fall in it however long each
takes to write; ``snapshots`` counts those that did) and off (the figures under ``snapshots_off``). ``max_pause_ms`` is the
longest time the output made no progress while an order was waiting: over the paced
phase's acknowledgements in arrival order, ``arrival[i] - max(arrival[i-1], ingress[i])``
(an order that arrives to an idle engine waits only for itself; one that arrives during a
stall waits for the rest of it), the largest such gap. ``p9999_us`` is the 99.99th
percentile of the paced phase's latency. ``hiccup_p999_us`` and ``hiccup_max_ms`` come
from the exchange process's hiccup meter (``ringbuffer/hiccup.py``) over the paced phase,
``longest_duty_cycle_ms`` over the whole run (the flood's back-pressure waits included): a
pause matched by a large hiccup is the platform (the process was not running when it
should have been), one that is not was the engine's own work or outside its process.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ringex.engine.pipeline.engine_agent import SNAPSHOTS_COUNTER
from ringex.engine.storage import defaults
from ringex.engine.wire import messages as m
from ringex.ringbuffer.hiccup import HiccupSnapshot, hiccup_name, read_hiccups
from ringex.ringbuffer.idle import BackoffIdleStrategy
from ringex.ringbuffer.ring import Ring
from ringex.tools.config import parse_config
from ringex.tools.launcher import Exchange, output_consumer_index

_INGRESS_WORD = m.NewOrder.offset("ingressNs") >> 3
_TEMPLATE = 2  # byte offset of the template id in the SBE header
LATENCY_MESSAGES = 300_000
LATENCY_RATE = 50_000.0
# Snapshots due per paced phase: more than the three asked for, since one is due only
# ``snapshot_every`` after the previous one started and never while it is being written.
SNAPSHOTS_PER_PACED_PHASE = 10

BENCH_TOML = """
[exchange]
name = "bench"
data_dir = "{data_dir}"
shm_prefix = "{prefix}"
[journal]
durability = "{durability}"
snapshot_every = {snapshot_every}
snapshot_writer = "{snapshot_writer}"
[engine]
max_orders = 1048576
[rings]
gateways = ["bench"]
subscribers = ["bench"]
inbound_capacity = 65536
engine_capacity = 65536
output_capacity = 262144
batch_limit = 2048
[[process]]
name = "core"
agents = ["sequencer", "engine"]
idle = "backoff"
[[instrument]]
id = 1
symbol = "BENCH"
reference_price = 100000
base_asset = 1
max_qty = 1000000
# funded far beyond what the stream can hold or trade, so no order is refused for funds
[[account]]
id = 1
stp_default = "off"
deposits = {{ 0 = 1000000000000000, 1 = 1000000000000 }}
[[account]]
id = 2
stp_default = "off"
deposits = {{ 0 = 1000000000000000, 1 = 1000000000000 }}
"""


def order_stream(n: int, seed: int = 7) -> np.ndarray:
    """n NewOrder slots: limit orders around a mid price, two accounts, crossing often."""
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, dtype=m.NewOrder.slot_dtype(m.SLOT_SIZE))
    header = np.frombuffer(m.NewOrder.header_bytes, dtype="<u2")
    rows["blockLength"], rows["templateId"], rows["schemaId"], rows["version"] = header
    side = rng.integers(1, 3, n)
    offset = rng.integers(-5, 15, n)  # mostly passive, sometimes through the touch
    mid = 100_000
    rows["clOrdId"] = np.arange(1, n + 1)
    rows["side"] = side
    rows["price"] = np.where(side == 1, mid - offset, mid + offset)
    rows["qty"] = rng.integers(1, 10, n)
    rows["account"] = side  # buyers account 1, sellers account 2
    rows["instrument"] = 1
    rows["ordType"] = int(m.OrdType.Limit)
    rows["timeInForce"] = np.where(rng.random(n) < 0.2, int(m.TimeInForce.IOC), int(m.TimeInForce.GTC))
    rows["stpMode"] = int(m.StpMode.Off)
    rows["sessionId"] = 1
    return rows.view(np.uint8).reshape(n, m.SLOT_SIZE)


def _producer(ring_name: str, phases: list[tuple[int, int, float]], go, next_phase) -> None:
    """Offer each phase's orders: (count, batch, rate msg/s; 0 = as fast as the ring takes)."""
    total = sum(n for n, _b, _r in phases)
    slots = order_stream(total)
    words = slots.view("<u8")
    ring = Ring.attach(ring_name, wait_s=10.0)
    prod = ring.producer()
    idle = BackoffIdleStrategy(max_spins=20, max_yields=20, max_park_ns=50_000)
    i = 0
    for phase, (n, batch, rate) in enumerate(phases):
        (go if phase == 0 else next_phase).wait(120)
        end = i + n
        start_t = time.monotonic()
        sent = 0
        deadline = start_t + 300
        while i < end and time.monotonic() < deadline:
            if rate:
                due = start_t + sent / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            k = min(batch, end - i)
            words[i:i + k, _INGRESS_WORD] = time.time_ns()
            done = prod.offer_batch(slots[i:i + k])
            i += done
            sent += done
            idle.idle(done)
    prod.close()
    ring.close()


def _consume(exchange: Exchange, consumer, expected: int, timeout: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Read acknowledgements until ``expected`` arrived; (seconds from first ingress, each
    acknowledgement's ingress and arrival times in ns, in arrival order)."""
    idle = BackoffIdleStrategy(max_spins=20, max_yields=20, max_park_ns=50_000)
    accepted, rejected = m.OrderAccepted.template_id, m.OrderRejected.template_id
    acks = 0
    ingresses: list[np.ndarray] = []
    arrivals: list[np.ndarray] = []
    t_first = None
    deadline = time.monotonic() + timeout
    while acks < expected and time.monotonic() < deadline:
        head, tail = consumer.read(8192)
        k = len(head) + len(tail)
        exchange.drain()
        if not k:
            idle.idle(0)
            continue
        now = time.time_ns()
        for region in (head, tail):
            if not len(region):
                continue
            tids = region[:, _TEMPLATE].astype(np.int64) | (region[:, _TEMPLATE + 1].astype(np.int64) << 8)
            ack = (tids == accepted) | (tids == rejected)
            ingress = region.view("<u8")[ack, _INGRESS_WORD].astype(np.int64)
            if t_first is None and len(ingress):
                t_first = int(ingress.min())
            ingresses.append(ingress)
            arrivals.append(np.full(len(ingress), now, dtype=np.int64))
            acks += int(ack.sum())
        consumer.commit(k)
        idle.reset()
    t_end = time.time_ns()
    if acks < expected:
        raise RuntimeError(f"pipeline stalled: {acks} of {expected} orders acknowledged")
    return (t_end - (t_first or t_end)) / 1e9, np.concatenate(ingresses), np.concatenate(arrivals)


def max_pause_ns(ingress: np.ndarray, arrival: np.ndarray) -> int:
    """The longest the output stood still while an order waited (see the module doc)."""
    if not len(arrival):
        return 0
    waited_from = np.maximum(np.concatenate(([ingress[0]], arrival[:-1])), ingress)
    return int(max(0, (arrival - waited_from).max()))


def _engine_hiccups(exchange: Exchange) -> HiccupSnapshot:
    """The exchange process's hiccup meter (the bench's one process: sequencer and engine)."""
    return read_hiccups(hiccup_name(exchange._children[0].runner.counters_name or ""))


def _snapshots_written(exchange: Exchange) -> int:
    from ringex.ringbuffer.counters import CountersReader

    total = 0
    for child in exchange._children:
        reader = CountersReader(child.runner.counters_name or "")
        try:
            if reader.find(SNAPSHOTS_COUNTER) is not None:
                total += reader.value(SNAPSHOTS_COUNTER)
        finally:
            reader.close()
    return total


def run_once(messages: int, durability: str, latency_messages: int = LATENCY_MESSAGES,
             latency_rate: float = LATENCY_RATE, snapshots: bool = True,
             snapshot_writer: str = defaults.SNAPSHOT_WRITER) -> dict:
    """One exchange: a flood of ``messages`` for throughput, then ``latency_messages`` paced
    at ``latency_rate`` for the latency percentiles (a flood's latency is queueing); with
    ``snapshots``, one due every tenth of the paced phase, throughout."""
    tmp = Path(tempfile.mkdtemp(prefix="ringex-bench-"))
    prefix = f"rxbp{multiprocessing.current_process().pid}x{int(time.monotonic_ns()) % 100000}"
    every = max(1, latency_messages // SNAPSHOTS_PER_PACED_PHASE) if snapshots else 10**15
    cfg = parse_config(BENCH_TOML.format(data_dir=tmp / "data", prefix=prefix, durability=durability,
                                         snapshot_every=every, snapshot_writer=snapshot_writer),
                       base_dir=tmp)
    ctx = multiprocessing.get_context("spawn")
    go, next_phase = ctx.Event(), ctx.Event()
    exchange = Exchange(cfg, restart_children=False)
    producer = None
    try:
        exchange.start()
        out = Ring.attach(exchange.names.output, wait_s=5.0)
        consumer = out.consumer(output_consumer_index(cfg, "bench"))
        phases = [(messages, 256, 0.0), (latency_messages, 16, latency_rate)]
        producer = ctx.Process(target=_producer, args=(exchange.names.gateway("bench"), phases, go, next_phase),
                               daemon=True)
        producer.start()
        go.set()
        seconds, flood_in, flood_at = _consume(exchange, consumer, messages, 600)
        before = _snapshots_written(exchange)
        meter_before = _engine_hiccups(exchange)
        next_phase.set()
        _, ingress, arrival = _consume(exchange, consumer, latency_messages, 600)
        taken = _snapshots_written(exchange) - before
        hiccups = _engine_hiccups(exchange).since(meter_before)
        consumer.close()
        out.close()
        lat = (arrival - ingress) / 1000.0
        return {
            "msgs_per_s": messages / seconds if seconds > 0 else 0.0,
            "p50_us": float(np.percentile(lat, 50)),
            "p99_us": float(np.percentile(lat, 99)),
            "p999_us": float(np.percentile(lat, 99.9)),
            "p9999_us": float(np.percentile(lat, 99.99)),
            "max_pause_ms": max_pause_ns(ingress, arrival) / 1e6,
            "flood_p50_us": float(np.percentile((flood_at - flood_in) / 1000.0, 50)),
            "snapshots": taken,
            "hiccup_p999_us": hiccups.percentile(99.9) / 1e3,
            "hiccup_max_ms": hiccups.max_ns / 1e6,
            "longest_duty_cycle_ms": hiccups.longest_cycle_ns / 1e6,
        }
    finally:
        go.set()
        next_phase.set()
        if producer is not None:
            producer.join(30)
            if producer.is_alive():
                producer.kill()
                producer.join(5)
        exchange.stop(drain_timeout=5.0)
        shutil.rmtree(tmp, ignore_errors=True)


def _medians(results: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def run_bench(messages: int = 1_000_000, runs: int = 3, durability: str = defaults.DURABILITY,
              snapshot_writer: str = defaults.SNAPSHOT_WRITER) -> dict:
    """Medians of ``runs`` runs with snapshots on and ``runs`` with them off, alternating."""
    on, off = [], []
    for _ in range(runs):
        on.append(run_once(messages, durability, snapshots=True, snapshot_writer=snapshot_writer))
        off.append(run_once(messages, durability, snapshots=False, snapshot_writer=snapshot_writer))
    out = _medians(on)
    out["min_snapshots"] = min(r["snapshots"] for r in on)
    out["snapshots_off"] = {k: v for k, v in _medians(off).items() if k != "snapshots"}
    out.update({"messages": messages, "runs": runs, "durability": durability,
                "snapshot_writer": snapshot_writer, "snapshot_every": LATENCY_MESSAGES // SNAPSHOTS_PER_PACED_PHASE,
                "latency_rate_msgs_per_s": LATENCY_RATE, "latency_messages": LATENCY_MESSAGES})
    return out


if __name__ == "__main__":
    print(json.dumps(run_bench(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000, 1)))
