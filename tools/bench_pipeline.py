"""``ringex bench pipeline``: the whole inbound path, process to process.

A producer process writes pre-encoded SBE NewOrder messages into a gateway ring (stamping
each batch's ingress time); the exchange's own processes run the sequencer and the
journaling engine (durability as asked, ``batch`` by default: one fdatasync per batch);
this process consumes the output ring as a subscriber and measures, for each order's
acknowledgement (accepted or rejected), ingress stamp to consumer. The embedded topology is
used: one process composes sequencer and engine with backoff idle, as on a 2-core host.
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

from ringex.engine import messages as m
from ringex.ringbuffer.idle import BackoffIdleStrategy
from ringex.ringbuffer.ring import Ring
from ringex.tools.config import parse_config
from ringex.tools.launcher import Exchange, output_consumer_index

_INGRESS_WORD = m.NewOrder.offset("ingressNs") >> 3
_TEMPLATE = 2  # byte offset of the template id in the SBE header

BENCH_TOML = """
[exchange]
name = "bench"
data_dir = "{data_dir}"
shm_prefix = "{prefix}"
[journal]
durability = "{durability}"
snapshot_every = 100000000
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
max_qty = 1000000
[[account]]
id = 1
stp_default = "off"
[[account]]
id = 2
stp_default = "off"
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


def _producer(ring_name: str, n: int, batch: int, go: "multiprocessing.synchronize.Event") -> None:
    slots = order_stream(n)
    ring = Ring.attach(ring_name, wait_s=10.0)
    prod = ring.producer()
    idle = BackoffIdleStrategy(max_spins=20, max_yields=20, max_park_ns=50_000)
    go.wait(30)
    words = slots.view("<u8")
    i = 0
    deadline = time.monotonic() + 300
    while i < n and time.monotonic() < deadline:
        k = min(batch, n - i)
        words[i:i + k, _INGRESS_WORD] = time.time_ns()
        done = prod.offer_batch(slots[i:i + k])
        i += done
        idle.idle(done)
    prod.close()
    ring.close()


def run_once(messages: int, durability: str) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ringex-bench-"))
    prefix = f"rxbp{multiprocessing.current_process().pid}x{int(time.monotonic_ns()) % 100000}"
    cfg = parse_config(BENCH_TOML.format(data_dir=tmp / "data", prefix=prefix, durability=durability),
                       base_dir=tmp)
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    exchange = Exchange(cfg, restart_children=False)
    producer = None
    try:
        exchange.start()
        out = Ring.attach(exchange.names.output, wait_s=5.0)
        consumer = out.consumer(output_consumer_index(cfg, "bench"))
        # Let the admin messages through before timing.
        idle = BackoffIdleStrategy(max_spins=20, max_yields=20, max_park_ns=50_000)
        producer = ctx.Process(target=_producer, args=(exchange.names.gateway("bench"), messages, 256, go),
                               daemon=True)
        producer.start()
        acks = 0
        lat: list[np.ndarray] = []
        accepted, rejected = m.OrderAccepted.template_id, m.OrderRejected.template_id
        t_first = None
        go.set()
        deadline = time.monotonic() + 600
        while acks < messages and time.monotonic() < deadline:
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
                ingress = ingress[ingress > 0]
                if t_first is None and len(ingress):
                    t_first = int(ingress.min())
                lat.append((now - ingress) / 1000.0)
                acks += int(ack.sum())
            consumer.commit(k)
            idle.reset()
        t_end = time.time_ns()
        if acks < messages:
            raise RuntimeError(f"pipeline stalled: {acks} of {messages} orders acknowledged")
        consumer.close()
        out.close()
        all_lat = np.concatenate(lat)
        seconds = (t_end - (t_first or t_end)) / 1e9
        return {
            "msgs_per_s": messages / seconds if seconds > 0 else 0.0,
            "p50_us": float(np.percentile(all_lat, 50)),
            "p99_us": float(np.percentile(all_lat, 99)),
            "p999_us": float(np.percentile(all_lat, 99.9)),
        }
    finally:
        go.set()
        if producer is not None:
            producer.join(30)
            if producer.is_alive():
                producer.kill()
                producer.join(5)
        exchange.stop(drain_timeout=5.0)
        shutil.rmtree(tmp, ignore_errors=True)


def run_bench(messages: int = 1_000_000, runs: int = 3, durability: str = "batch") -> dict:
    results = [run_once(messages, durability) for _ in range(runs)]
    out = {k: statistics.median(r[k] for r in results) for k in results[0]}
    out.update({"messages": messages, "runs": runs, "durability": durability})
    return out


if __name__ == "__main__":
    print(json.dumps(run_bench(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000, 1)))
