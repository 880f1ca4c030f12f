"""``ringex bench ring``: the shared-memory ring against multiprocessing baselines.

Measures, for 64-byte messages between two processes pinned to different cores (when two
or more CPUs are available):

* ring throughput with one message per publish (``Producer.offer``); the consumer reads
  whatever is available and unpacks each message (``struct.iter_unpack``);
* ring throughput with batches of 64 (``claim``/``publish``), same consumer;
* ping-pong round-trip latency over two rings (one each way), p50/p99/p99.9 from an
  HdrHistogram;
* the same one-way traffic through ``multiprocessing.Queue`` and ``multiprocessing.Pipe``
  (fewer messages: they are 10-50x slower).

Each figure is the median of ``runs`` runs.  The ring benchmarks busy-spin (pinned, bounded
in time); every child has a deadline and is killed, and every ring unlinked, on the way out.

    python -m ringex.tools.bench_ring [--json] [--messages N] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import struct
import sys
import time
import traceback
from typing import Any, Callable

MESSAGE_SIZE = 64
BATCH = 64
_FMT = struct.Struct("<8q")
_TIMEOUT_S = 120.0

RESULT_KEYS = (
    "ring_single_msgs_per_s",
    "ring_batch_msgs_per_s",
    "rtt_p50_us",
    "rtt_p99_us",
    "rtt_p999_us",
    "mp_queue_msgs_per_s",
    "mp_pipe_msgs_per_s",
)


def _cpus() -> tuple[int | None, int | None]:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return None, None
    if len(cpus) >= 2:
        return cpus[-2], cpus[-1]
    return None, None


def _pin(cpu: int | None) -> None:
    if cpu is None:
        return
    try:
        import psutil

        psutil.Process().cpu_affinity([cpu])
    except Exception:  # pragma: no cover - pinning is best effort
        pass


def _message(seq: int = 0) -> bytes:
    return _FMT.pack(seq, 1, 2, 3, 4, 5, 6, 7)


def _child_main(fn: Callable, args: tuple, cpu: int | None, conn) -> None:
    _pin(cpu)
    try:
        res = fn(*args)
        conn.send({"ok": True, **(res or {})})
    except BaseException:
        conn.send({"ok": False, "error": traceback.format_exc()})
    finally:
        conn.close()


class _Children:
    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.procs: list = []

    def start(self, fn: Callable, args: tuple, cpu: int | None):
        recv, send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_child_main, args=(fn, args, cpu, send), daemon=True)
        proc.start()
        send.close()
        self.procs.append(proc)
        return proc, recv

    @staticmethod
    def result(proc, conn, timeout: float = _TIMEOUT_S) -> dict:
        if not conn.poll(timeout):
            raise TimeoutError(f"benchmark child {proc.pid} gave no result in {timeout} s")
        res = conn.recv()
        proc.join(10)
        if not res.get("ok"):
            raise RuntimeError(f"benchmark child failed:\n{res.get('error')}")
        return res

    def close(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
            proc.join(10)
        self.procs.clear()


# --- ring one-way -------------------------------------------------------------------------

def _ring_consumer(name: str, messages: int, ready_name: str | None = None) -> dict:
    from ringex.ringbuffer.ring import Ring

    ring = Ring.attach(name, wait_s=10)
    try:
        cons = ring.consumer(0)
        read, commit, iu = cons.read, cons.commit, struct.iter_unpack
        fmt = _FMT.format
        got = 0
        total = 0
        spins = 0
        deadline = time.monotonic() + _TIMEOUT_S
        while got < messages:
            head, tail = read(4096)
            k = len(head) + len(tail)
            if not k:
                spins += 1
                if not spins & 0x3FF and time.monotonic() > deadline:
                    raise TimeoutError(f"consumer got {got} of {messages}")
                continue
            for t in iu(fmt, head):
                total += t[0]
            if len(tail):
                for t in iu(fmt, tail):
                    total += t[0]
            commit(k)
            got += k
        end = time.monotonic_ns()
        return {"end_ns": end, "count": got, "sum": total}
    finally:
        ring.close()


def _ring_producer(name: str, messages: int, batch: int) -> dict:
    import numpy as np

    from ringex.ringbuffer.ring import Ring

    ring = Ring.attach(name, wait_s=10)
    try:
        prod = ring.producer()
        # wait for the consumer to attach (its heartbeat appears)
        deadline = time.monotonic() + 30
        while ring.consumer_info(0).pid == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("consumer never attached")
            time.sleep(0.001)
        msg = _message(1)
        sent = 0
        spins = 0
        deadline = time.monotonic() + _TIMEOUT_S
        if batch <= 1:
            offer = prod.offer
            start = time.monotonic_ns()
            while sent < messages:
                if offer(msg):
                    sent += 1
                else:
                    spins += 1
                    if not spins & 0xFFFF and time.monotonic() > deadline:
                        raise TimeoutError(f"producer stuck at {sent}")
        else:
            block = np.frombuffer(msg * batch, dtype=np.uint8).reshape(batch, MESSAGE_SIZE)
            claim, publish = prod.claim, prod.publish
            start = time.monotonic_ns()
            while sent < messages:
                n = messages - sent
                head, tail = claim(batch if n > batch else n)
                kh = len(head)
                if not kh:
                    spins += 1
                    if not spins & 0xFFFF and time.monotonic() > deadline:
                        raise TimeoutError(f"producer stuck at {sent}")
                    continue
                head[:] = block[:kh]
                kt = len(tail)
                if kt:
                    tail[:] = block[kh:kh + kt]
                publish(kh + kt)
                sent += kh + kt
        return {"start_ns": start, "count": sent}
    finally:
        ring.close()


def _ring_throughput(messages: int, batch: int, tag: str) -> float:
    from ringex.ringbuffer.ring import Ring

    cpu_p, cpu_c = _cpus()
    name = f"/rx-bench-{os.getpid()}-{tag}"
    kids = _Children()
    ring = Ring.create(name, slot_size=MESSAGE_SIZE, capacity=4096, reclaim=True)
    try:
        cproc, cconn = kids.start(_ring_consumer, (name, messages), cpu_c)
        pproc, pconn = kids.start(_ring_producer, (name, messages, batch), cpu_p)
        prod = kids.result(pproc, pconn)
        cons = kids.result(cproc, cconn)
        if cons["count"] != messages or cons["sum"] != messages:
            raise RuntimeError(f"ring benchmark lost messages: {cons}")
        return messages / ((cons["end_ns"] - prod["start_ns"]) / 1e9)
    finally:
        kids.close()
        ring.close()


# --- ping-pong ----------------------------------------------------------------------------

def _echo(ping: str, pong: str, deadline_s: float) -> dict:
    from ringex.ringbuffer.ring import Ring

    rin = Ring.attach(ping, wait_s=10)
    rout = Ring.attach(pong, wait_s=10)
    try:
        cons = rin.consumer(0)
        prod = rout.producer()
        read, commit, offer, available = cons.read, cons.commit, prod.offer, cons.available
        stop = time.monotonic() + deadline_s
        echoed = 0
        spins = 0
        while True:
            if not available():
                spins += 1
                if not spins & 0xFFFF and time.monotonic() > stop:
                    break
                continue
            head, _ = read(1)
            if head[0, 0] == 0xFF:  # stop marker
                commit(1)
                break
            while not offer(head[0]):
                pass
            commit(1)
            echoed += 1
        return {"echoed": echoed}
    finally:
        rin.close()
        rout.close()


def _pinger(ping: str, pong: str, roundtrips: int, warmup: int, deadline_s: float) -> dict:
    from hdrh.histogram import HdrHistogram

    from ringex.ringbuffer.ring import Ring

    rout = Ring.attach(ping, wait_s=10)
    rin = Ring.attach(pong, wait_s=10)
    try:
        prod = rout.producer()
        cons = rin.consumer(0)
        deadline = time.monotonic() + 30
        while rout.consumer_info(0).pid == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("echo never attached")
            time.sleep(0.001)
        hist = HdrHistogram(1, 60_000_000_000, 3)
        offer, available, read, commit = prod.offer, cons.available, cons.read, cons.commit
        clock = time.perf_counter_ns
        record = hist.record_value
        msg = _message(1)
        stop = time.monotonic() + deadline_s
        done = 0
        for i in range(warmup + roundtrips):
            t0 = clock()
            offer(msg)
            spins = 0
            while not available():
                spins += 1
                if not spins & 0xFFFFF and time.monotonic() > stop:
                    raise TimeoutError(f"ping-pong stalled after {i} round trips")
            read(1)
            commit(1)
            t1 = clock()
            if i >= warmup:
                record(t1 - t0)
                done += 1
        offer(b"\xff" * MESSAGE_SIZE)
        return {
            "p50_ns": hist.get_value_at_percentile(50),
            "p99_ns": hist.get_value_at_percentile(99),
            "p999_ns": hist.get_value_at_percentile(99.9),
            "count": done,
        }
    finally:
        rout.close()
        rin.close()


def _ping_pong(roundtrips: int, tag: str) -> dict:
    from ringex.ringbuffer.ring import Ring

    cpu_a, cpu_b = _cpus()
    base = f"/rx-bench-{os.getpid()}-{tag}"
    kids = _Children()
    ping = Ring.create(base + "-ping", slot_size=MESSAGE_SIZE, capacity=1024, reclaim=True)
    pong = Ring.create(base + "-pong", slot_size=MESSAGE_SIZE, capacity=1024, reclaim=True)
    try:
        eproc, econn = kids.start(_echo, (ping.name, pong.name, _TIMEOUT_S), cpu_b)
        pproc, pconn = kids.start(
            _pinger, (ping.name, pong.name, roundtrips, max(1000, roundtrips // 10), _TIMEOUT_S),
            cpu_a,
        )
        res = kids.result(pproc, pconn)
        kids.result(eproc, econn, 30)
        return res
    finally:
        kids.close()
        ping.close()
        pong.close()


# --- multiprocessing baselines ------------------------------------------------------------

def _mp_send(kind: str, endpoint, messages: int) -> dict:
    msg = _message(1)
    start = time.monotonic_ns()
    if kind == "queue":
        put = endpoint.put
        for _ in range(messages):
            put(msg)
    else:
        send = endpoint.send_bytes
        for _ in range(messages):
            send(msg)
    return {"start_ns": start}


def _mp_recv(kind: str, endpoint, messages: int) -> dict:
    unpack = _FMT.unpack
    total = 0
    if kind == "queue":
        get = endpoint.get
        for _ in range(messages):
            total += unpack(get(timeout=_TIMEOUT_S))[0]
    else:
        recv = endpoint.recv_bytes
        for _ in range(messages):
            if not endpoint.poll(_TIMEOUT_S):
                raise TimeoutError("pipe receive timed out")
            total += unpack(recv())[0]
    return {"end_ns": time.monotonic_ns(), "sum": total}


def _mp_throughput(kind: str, messages: int) -> float:
    cpu_p, cpu_c = _cpus()
    kids = _Children()
    try:
        if kind == "queue":
            q = kids.ctx.Queue()
            tx = rx = q
        else:
            rx, tx = kids.ctx.Pipe(duplex=False)
        cproc, cconn = kids.start(_mp_recv, (kind, rx, messages), cpu_c)
        pproc, pconn = kids.start(_mp_send, (kind, tx, messages), cpu_p)
        cons = kids.result(cproc, cconn)
        prod = kids.result(pproc, pconn)
        if cons["sum"] != messages:
            raise RuntimeError(f"{kind} baseline lost messages")
        return messages / ((cons["end_ns"] - prod["start_ns"]) / 1e9)
    finally:
        kids.close()


# --- driver -------------------------------------------------------------------------------

def run_bench(messages: int = 2_000_000, runs: int = 3, json_out: bool = False,
              *, roundtrips: int = 100_000, baseline_messages: int | None = None,
              quiet: bool = False) -> dict:
    """Run the ring benchmark and return the medians over ``runs``.

    Keys: ring_single_msgs_per_s, ring_batch_msgs_per_s, rtt_p50_us, rtt_p99_us,
    rtt_p999_us, mp_queue_msgs_per_s, mp_pipe_msgs_per_s, plus runs, messages,
    baseline_messages, roundtrips, cpus, batch_vs_queue, batch_vs_pipe.  Unless ``quiet``,
    prints the result (JSON with ``json_out``, else a table) to stdout and progress to stderr.
    """
    if messages < 1 or runs < 1:
        raise ValueError("messages and runs must be at least 1")
    if baseline_messages is None:
        baseline_messages = max(1000, min(messages // 10, 200_000))
    samples: dict[str, list[float]] = {k: [] for k in RESULT_KEYS}
    for run in range(runs):
        tag = f"{run}"
        samples["ring_single_msgs_per_s"].append(_ring_throughput(messages, 1, tag + "s"))
        samples["ring_batch_msgs_per_s"].append(_ring_throughput(messages, BATCH, tag + "b"))
        rtt = _ping_pong(roundtrips, tag + "p")
        samples["rtt_p50_us"].append(rtt["p50_ns"] / 1000)
        samples["rtt_p99_us"].append(rtt["p99_ns"] / 1000)
        samples["rtt_p999_us"].append(rtt["p999_ns"] / 1000)
        samples["mp_queue_msgs_per_s"].append(_mp_throughput("queue", baseline_messages))
        samples["mp_pipe_msgs_per_s"].append(_mp_throughput("pipe", baseline_messages))
        if not quiet:
            print(
                f"run {run + 1}/{runs}: "
                + ", ".join(f"{k}={samples[k][-1]:,.2f}" for k in RESULT_KEYS),
                file=sys.stderr,
            )
    result: dict[str, Any] = {k: round(statistics.median(v), 3) for k, v in samples.items()}
    result.update(
        runs=runs,
        messages=messages,
        baseline_messages=baseline_messages,
        roundtrips=roundtrips,
        cpus=len(os.sched_getaffinity(0)),
        pinned=_cpus()[0] is not None,
        batch_vs_queue=round(result["ring_batch_msgs_per_s"] / result["mp_queue_msgs_per_s"], 1),
        batch_vs_pipe=round(result["ring_batch_msgs_per_s"] / result["mp_pipe_msgs_per_s"], 1),
    )
    if not quiet:
        print(json.dumps(result, indent=2) if json_out else format_report(result))
    return result


def format_report(result: dict) -> str:
    m = lambda v: f"{v / 1e6:8.3f} M msg/s"  # noqa: E731
    return "\n".join(
        [
            f"ringex bench ring: {result['messages']:,} x {MESSAGE_SIZE}-byte messages, "
            f"median of {result['runs']} runs, {result['cpus']} CPUs"
            f"{' (pinned)' if result.get('pinned') else ''}",
            f"  ring, 1 per publish     {m(result['ring_single_msgs_per_s'])}",
            f"  ring, batch {BATCH:<3}        {m(result['ring_batch_msgs_per_s'])}",
            f"  ring ping-pong RTT      p50 {result['rtt_p50_us']:.2f} us, "
            f"p99 {result['rtt_p99_us']:.2f} us, p99.9 {result['rtt_p999_us']:.2f} us",
            f"  multiprocessing.Queue   {m(result['mp_queue_msgs_per_s'])}",
            f"  multiprocessing.Pipe    {m(result['mp_pipe_msgs_per_s'])}",
            f"  batch ring vs Queue / Pipe: {result['batch_vs_queue']}x / "
            f"{result['batch_vs_pipe']}x",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ringex bench ring", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--messages", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    run_bench(messages=args.messages, runs=args.runs, json_out=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
