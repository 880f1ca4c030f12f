"""``ringex bench feed``: engine events to a subscriber's book, over ITCH 5.0 / MoldUDP64 / UDP.

What it measures. The matching engine (in this process) runs the engine benchmark's order
stream (``tools/bench_engine.py``: passive limits, cancels, aggressive IOCs) once, up front;
its output events are what the feed publishes. The bench then writes them into an output
ring (as the engine agent would), and the real ``md-publisher`` agent (its own process,
backoff idle, doorbell) reads them, translates the book's changes to ITCH, stores them and
sends them in MoldUDP64 packets over loopback UDP to a ``FeedSubscriber`` (its own process),
which orders them, decodes them and applies each to its order-level book.

Two phases, the same processes:

1. latency: events written at ``--rate`` events/s (open loop, batches of 64), each batch's
   stamp ``timestampNs`` set to the wall clock as it is written; the subscriber takes, for
   every message it applies, now minus the message's ITCH Timestamp (nanoseconds since
   midnight, from that stamp): ``p50_us``, ``p99_us``, ``p999_us`` from the engine's output
   to the subscriber's book;
2. throughput: the rest of the events written as fast as the ring takes them;
   ``msgs_per_s`` = ITCH messages applied by the subscriber / time from the first to the
   last of them (the publisher, the UDP hop and the subscriber all in the path; a lost
   datagram is recovered by retransmission, counted in ``requests``).

``bytes_per_msg`` = UDP payload bytes received / messages (MoldUDP64 header and block
lengths included). Floor (issue 16, 2-core host): ``msgs_per_s`` >= 1,000,000.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_args", "print_result", "run_bench", "run_from_args"]

DAY_NS = 86_400 * 10**9
RING_CAPACITY = 1 << 16
LATENCY_BATCH = 64


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--orders", type=int, default=500_000, help="orders of the engine stream (default 500000)")
    p.add_argument("--seed", type=int, default=1, help="seed of the order stream")
    p.add_argument("--rate", type=int, default=20_000, help="events/s of the latency phase (default 20000)")
    p.add_argument("--latency-s", type=float, default=3.0, help="seconds of the latency phase (default 3)")
    p.add_argument("--runs", type=int, default=3, help="runs; figures are medians (default 3)")


def engine_events(orders: int, seed: int) -> tuple[np.ndarray, Any]:
    """The engine's output for the benchmark stream (every event, in order) and the
    instrument's configuration as a feed sees it."""
    from ringex.tools.bench_engine import CONFIG, _setup, admin_slots, make_stream
    from ringex.tools.config import InstrumentConfig

    eng = _setup(CONFIG, admin_slots())
    stream = make_stream(orders, seed)
    outs = [eng.process(stream[i:i + 1024]).copy() for i in range(0, len(stream), 1024)]
    events = np.concatenate(outs)
    from ringex.tools.bench_engine import INSTRUMENT, REFERENCE_PRICE
    ins = InstrumentConfig(id=INSTRUMENT, symbol="BENCH", reference_price=REFERENCE_PRICE, base_asset=1,
                           max_qty=1_000_000)
    return events, ins


def _subscriber(port_out: Any, result_out: Any, retransmit: tuple[str, int] | None, expected: int,
                timeout_s: float) -> None:
    """Child: follow the feed from sequence number 1 until ``expected`` messages are applied."""
    import gc

    from ringex.feeds.subscriber import FeedSubscriber

    gc.disable()
    from ringex.tools.bench_engine import CONFIG

    sub = FeedSubscriber(("127.0.0.1", 0), ("127.0.0.1", 1), capacity=CONFIG.max_orders)
    sub.record_latency(expected)
    port_out.send(sub.address[1])
    rtx = port_out.recv()  # the publisher's re-request address, once it listens
    sub.retransmit = tuple(rtx)
    sub.join()
    marks: list[tuple[int, int]] = []  # (messages applied, time) after each poll that applied some
    deadline = time.monotonic() + timeout_s
    while sub.messages < expected and time.monotonic() < deadline:
        if sub.poll(0.05):
            marks.append((sub.messages, time.time_ns()))
    result_out.send({"applied": sub.messages, "latency": sub.latencies[:sub.latency_count], "marks": marks,
                     "requests": sub.requests, "bytes": sub.bytes_received})
    sub.close()


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


def run_once(events: np.ndarray, ins: Any, rate: int, latency_s: float, directory: Path) -> dict[str, Any]:
    from ringex.engine.wire import messages as m
    from ringex.feeds.feed_book import FeedBook
    from ringex.feeds.feed_config import FeedConfig
    from ringex.feeds.itch_instrument import itch_instruments
    from ringex.feeds.itch_translate import Translator
    from ringex.feeds.md_publisher import ADDRESS_FILE, MdPublisherAgent
    from ringex.ringbuffer.ring import Ring
    from ringex.ringbuffer.runner import AgentRunner, RunnerConfig
    from ringex.tools.bench_engine import CONFIG

    instruments = itch_instruments([ins])
    lat_events = min(len(events), int(rate * latency_s))
    # what the feed will say: the counts the subscriber waits for, and the split between phases
    msgs: list[bytes] = []
    t = Translator(instruments, FeedBook(), capacity=2 * CONFIG.max_orders)
    t.translate(events[:lat_events], msgs)
    lat_msgs = len(msgs)
    lat_book = sum(1 for x in msgs if x[:1] in (b"A", b"E", b"X", b"D", b"U"))  # those the latency is taken of
    t.translate(events[lat_events:], msgs)
    total = len(msgs)

    ctx = multiprocessing.get_context("spawn")
    port_parent, port_child = ctx.Pipe()
    res_parent, res_child = ctx.Pipe()
    sub = ctx.Process(target=_subscriber, args=(port_child, res_child, None, total, 600.0), daemon=True)
    sub.start()
    prefix = f"rxbf{os.getpid()}"
    out = Ring.create(f"{prefix}-out", slot_size=m.SLOT_SIZE, capacity=RING_CAPACITY, consumers=1)
    rej = Ring.create(f"{prefix}-rej", slot_size=m.SLOT_SIZE, capacity=1024, consumers=1)
    runner = None
    try:
        port = port_parent.recv()
        cfg = FeedConfig(name="bench-md", destination=f"127.0.0.1:{port}", retransmit_listen="127.0.0.1:0",
                         snapshot_listen="127.0.0.1:0", heartbeat_ms=50)
        agent = MdPublisherAgent(cfg, out.name, rej.name, 0, directory, instruments, capacity=2 * CONFIG.max_orders)
        runner = AgentRunner(agent, RunnerConfig(idle_strategy="backoff"))
        runner.start_process()
        if not runner.wait_started(60):
            raise RuntimeError("the publisher did not start")
        addr = dict(line.split(" ", 1) for line in (directory / ADDRESS_FILE).read_text().splitlines())
        host, p = addr["retransmit"].rsplit(":", 1)
        port_parent.send((host, int(p)))
        producer = out.producer()
        ts_at = m.BookAdd.offset("timestampNs")
        # 1. latency: paced, each batch stamped as it is written
        t0 = time.perf_counter()
        for i in range(0, lat_events, LATENCY_BATCH):
            due = t0 + i / rate
            while time.perf_counter() < due:
                time.sleep(max(0.0, min(0.0005, due - time.perf_counter())))
            batch = events[i:min(i + LATENCY_BATCH, lat_events)].copy()
            batch[:, ts_at:ts_at + 8] = np.frombuffer(np.int64(time.time_ns()).tobytes(), np.uint8)
            _offer_all(producer, batch)
        # 2. throughput: as fast as the ring takes them
        for i in range(lat_events, len(events), 4096):
            batch = events[i:i + 4096].copy()
            batch[:, ts_at:ts_at + 8] = np.frombuffer(np.int64(time.time_ns()).tobytes(), np.uint8)
            _offer_all(producer, batch)
        if not res_parent.poll(600):
            raise RuntimeError("the subscriber did not report")
        r = res_parent.recv()
    finally:
        if runner is not None:
            runner.stop()
            runner.join(30)
            runner.close()
        sub.join(30)
        if sub.is_alive():
            sub.kill()
        out.close()
        rej.close()
    if r["applied"] < total:
        raise RuntimeError(f"the subscriber applied {r['applied']} of {total} messages")
    latency, marks = r["latency"], r["marks"]
    # throughput: from the first poll that applied a message of the throughput phase to the last
    thr = [(n, t) for n, t in marks if n > lat_msgs]
    span = (thr[-1][1] - thr[0][1]) / 1e9 if len(thr) > 1 else 0.0
    lat = latency[:lat_book] / 1000.0
    return {
        "msgs_per_s": (thr[-1][0] - thr[0][0]) / span if span > 0 else 0.0,
        "p50_us": _pct(lat, 50), "p99_us": _pct(lat, 99), "p999_us": _pct(lat, 99.9),
        "bytes_per_msg": round(r["bytes"] / r["applied"], 2),
        "messages": total, "events": len(events), "latency_messages": lat_msgs, "requests": r["requests"],
    }


def _offer_all(producer: Any, batch: np.ndarray) -> None:
    done = 0
    while done < len(batch):
        k = producer.offer_batch(batch[done:])
        done += k
        if not k:
            time.sleep(0.0002)


def run_bench(orders: int = 500_000, seed: int = 1, rate: int = 20_000, latency_s: float = 3.0,
              runs: int = 3) -> dict[str, Any]:
    events, ins = engine_events(orders, seed)
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="ringex-bench-feed-") as d:
            results.append(run_once(events, ins, rate, latency_s, Path(d)))
    keys = ("msgs_per_s", "p50_us", "p99_us", "p999_us")
    out = {k: float(np.median([r[k] for r in results])) for k in keys}
    out.update({k: results[0][k] for k in ("bytes_per_msg", "messages", "events", "latency_messages")})
    out["runs"] = [{k: r[k] for k in (*keys, "requests")} for r in results]
    out["floor_msgs_per_s"] = 1_000_000
    return out


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return run_bench(args.orders, args.seed, args.rate, args.latency_s, args.runs)


def print_result(r: dict[str, Any]) -> None:
    print(f"ringex bench feed: {r['events']:,} engine events -> {r['messages']:,} ITCH messages, "
          f"{r['bytes_per_msg']} bytes/message on the wire")
    print(f"  throughput  {r['msgs_per_s']:,.0f} messages/s applied by the subscriber "
          f"(floor {r['floor_msgs_per_s']:,})")
    print(f"  latency at the paced rate, engine output -> subscriber's book: p50 {r['p50_us']:,.0f} µs, "
          f"p99 {r['p99_us']:,.0f} µs, p99.9 {r['p999_us']:,.0f} µs")
    for i, x in enumerate(r["runs"], 1):
        print(f"  run {i}: {x['msgs_per_s']:,.0f} msg/s, p99 {x['p99_us']:,.0f} µs, {x['requests']} re-requests")
