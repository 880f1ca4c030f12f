"""Shared fixtures and child-process workers for the ring tests (no tests of its own).

Workers run in 'spawn' children; each sends one result dict through a Pipe.  Payloads are
derived from the sequence number (word 0 = sequence, word j = seq * MULT[j] + j), so both
sides can checksum and verify every byte without shipping data around.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import signal
import time
import traceback

import numpy as np
import pytest

from ringex.ringbuffer import descriptor as d
from ringex.ringbuffer.idle import BackoffIdleStrategy
from ringex.ringbuffer.mapping import SharedMapping, canonical_name, unlink_ring
from ringex.ringbuffer.ring import Ring

U64 = (1 << 64) - 1
MULT = np.array(
    [1, 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93,
     0xA0761D6478BD642F, 0xE7037ED1A0B428DB, 0x8EBC6AF09C88C6E3] * 16,
    dtype=np.uint64,
)
ADD = np.arange(len(MULT), dtype=np.uint64)

_counter = itertools.count()


def expected_words(first: int, k: int, words: int) -> np.ndarray:
    seqs = np.arange(first, first + k, dtype=np.uint64)
    return seqs[:, None] * MULT[None, :words] + ADD[None, :words]


def fill(block: np.ndarray, first: int) -> int:
    """Write the payload of sequences first.. into a (k, slot) uint8 block; its checksum."""
    if not len(block):
        return 0
    w = block.view(np.uint64)
    w[:] = expected_words(first, len(block), w.shape[1])
    return int(w.sum(dtype=np.uint64))


def verify(block: np.ndarray, first: int) -> int:
    """Check a received block holds exactly sequences first..; its checksum."""
    if not len(block):
        return 0
    w = block.view(np.uint64)
    exp = expected_words(first, len(block), w.shape[1])
    if not np.array_equal(w, exp):
        bad = int(np.nonzero((w != exp).any(axis=1))[0][0])
        raise AssertionError(
            f"slot for sequence {first + bad} holds sequence {int(w[bad, 0])} / wrong payload"
        )
    return int(w.sum(dtype=np.uint64))


class RingEnv:
    """Unique ring names and child processes for one test; cleans up everything."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.names: list[str] = []
        self.procs: list = []

    def name(self, tag: str = "r") -> str:
        n = f"/rx-test-{os.getpid()}-{next(_counter)}-{tag}"
        self.names.append(n)
        return n

    def spawn(self, target, *args):
        """Start target(*args, conn) in a spawn child; returns (process, receiving conn)."""
        recv, send = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_run_worker, args=(target, args, send), daemon=True)
        proc.start()
        send.close()
        self.procs.append(proc)
        return proc, recv

    @staticmethod
    def result(proc, conn, timeout: float = 60.0) -> dict:
        if not conn.poll(timeout):
            raise AssertionError(f"child {proc.pid} sent no result within {timeout} s")
        res = conn.recv()
        proc.join(10)
        if not res.get("ok"):
            raise AssertionError(f"child {proc.pid} failed:\n{res.get('error')}")
        return res

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                proc.kill()
            proc.join(10)
        for n in self.names:
            unlink_ring(n)


@pytest.fixture
def ring_env():
    env = RingEnv()
    try:
        yield env
    finally:
        env.cleanup()


def wait_until(predicate, timeout: float, what: str) -> None:
    idle = BackoffIdleStrategy(max_spins=0, max_yields=20, max_park_ns=5_000_000)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        idle.idle(0)


def _run_worker(target, args, conn) -> None:
    try:
        res = target(*args) or {}
        res.setdefault("ok", True)
    except BaseException:
        res = {"ok": False, "error": traceback.format_exc()}
    try:
        conn.send(res)
    finally:
        conn.close()


# --- workers ------------------------------------------------------------------------------

def stream_producer(name: str, total: int, batch: int, timeout_s: float = 60.0) -> dict:
    """Publish sequences [position, total) with claim/publish batches."""
    ring = Ring.attach(name, wait_s=5)
    try:
        prod = ring.producer()
        idle = BackoffIdleStrategy(max_spins=20, max_yields=20, max_park_ns=200_000)
        deadline = time.monotonic() + timeout_s
        seq = prod.position
        checksum = 0
        max_outstanding = 0
        cap = ring.capacity
        while seq < total:
            head, tail = prod.claim(min(batch, total - seq))
            k = len(head) + len(tail)
            if not k:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"producer stuck at {seq} of {total}")
                idle.idle(0)
                continue
            checksum += fill(head, seq) + fill(tail, seq + len(head))
            prod.publish(k)
            seq += k
            outstanding = seq - ring.min_consumer_position()
            if outstanding > max_outstanding:
                max_outstanding = outstanding
            idle.reset()
        assert max_outstanding <= cap, f"producer overran: {max_outstanding} > {cap}"
        return {"count": seq, "checksum": checksum & U64, "max_outstanding": max_outstanding}
    finally:
        ring.close()


def stream_consumer(name: str, index: int, total: int, limit: int, sleep_s: float = 0.0,
                    timeout_s: float = 60.0) -> dict:
    """Read and verify every sequence up to total as consumer ``index``."""
    ring = Ring.attach(name, wait_s=5)
    try:
        cons = ring.consumer(index)
        idle = BackoffIdleStrategy(max_spins=20, max_yields=20, max_park_ns=200_000)
        deadline = time.monotonic() + timeout_s
        checksum = 0
        batches = 0
        first = cons.position
        while cons.position < total:
            head, tail = cons.read(limit)
            k = len(head) + len(tail)
            if not k:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"consumer {index} stuck at {cons.position} of {total}")
                idle.idle(0)
                continue
            pos = cons.position
            checksum += verify(head, pos) + verify(tail, pos + len(head))
            cons.commit(k)
            batches += 1
            idle.reset()
            if sleep_s:
                time.sleep(sleep_s)
        return {"count": cons.position - first, "checksum": checksum & U64, "batches": batches,
                "first": first}
    finally:
        ring.close()


def recording_consumer(name: str, out_path: str, total: int, incarnation: int, limit: int,
                       sleep_s: float, timeout_s: float = 60.0) -> dict:
    """Consumer 0 that records out[seq] = incarnation for each message before committing."""
    ring = Ring.attach(name, wait_s=5)
    out = np.memmap(out_path, dtype=np.int8, mode="r+", shape=(total,))
    try:
        cons = ring.consumer(0)
        first = cons.position
        idle = BackoffIdleStrategy(max_spins=20, max_yields=20, max_park_ns=200_000)
        deadline = time.monotonic() + timeout_s
        while cons.position < total:
            head, tail = cons.read(limit)
            k = len(head) + len(tail)
            if not k:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"consumer stuck at {cons.position}")
                idle.idle(0)
                continue
            pos = cons.position
            for block, start in ((head, pos), (tail, pos + len(head))):
                if len(block):
                    verify(block, start)
                    out[block.view(np.uint64)[:, 0].astype(np.int64)] = incarnation
            time.sleep(sleep_s)  # "processing"; a SIGKILL lands here or above
            cons.commit(k)
            idle.reset()
        out.flush()
        return {"first": first, "count": cons.position - first}
    finally:
        del out
        ring.close()


def idle_consumer(name: str, index: int, total: int, timeout_s: float = 60.0) -> dict:
    """Poll one message at a time (handler form), collecting sequences; checks order."""
    ring = Ring.attach(name, wait_s=5)
    try:
        cons = ring.consumer(index)
        idle = BackoffIdleStrategy(max_spins=10, max_yields=10, max_park_ns=1_000_000)
        deadline = time.monotonic() + timeout_s
        seen: list[int] = []
        append = seen.append

        def handler(slot):
            append(int.from_bytes(slot[:8], "little"))

        while len(seen) < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumer {index} got {len(seen)} of {total}")
            idle.idle(cons.poll(handler, 256))
        assert seen == list(range(total)), "out of order, lost or duplicated"
        return {"count": len(seen)}
    finally:
        ring.close()


def slow_consumer(name: str, index: int, stop_at: int, per_poll_sleep_s: float,
                  timeout_s: float = 60.0) -> dict:
    """One message per poll, sleeping between polls: heartbeat stays fresh, lag grows."""
    ring = Ring.attach(name, wait_s=5)
    try:
        cons = ring.consumer(index)
        deadline = time.monotonic() + timeout_s
        while cons.position < stop_at:
            if time.monotonic() > deadline:
                raise TimeoutError("slow consumer timed out")
            cons.poll(lambda slot: None, 1)
            time.sleep(per_poll_sleep_s)
        return {"count": cons.position}
    finally:
        ring.close()


def cursor_writer(name: str, iterations: int) -> dict:
    """Publish cursor values whose high and low 32-bit halves are equal, with the store a
    Producer publishes with (one int64 through the mapping's ``cast('q')`` view)."""
    mapping = SharedMapping.open(canonical_name(name), read_only=False)
    try:
        q = mapping.q
        cursor = d.word(d.PRODUCER_CURSOR_OFFSET)
        for i in range(1, iterations + 1):
            q[cursor] = i * 0x1_0000_0001
        return {"last": iterations * 0x1_0000_0001}
    finally:
        mapping.close()


def cursor_reader(name: str, final: int, timeout_s: float = 60.0, ready=None) -> dict:
    """Read the cursor until it reaches ``final``: every value untorn and monotonic (read
    with the load a Consumer polls with). ``ready`` (an Event) is set after the first read."""
    mapping = SharedMapping.open(canonical_name(name), read_only=True)
    try:
        q = mapping.q
        cursor = d.word(d.PRODUCER_CURSOR_OFFSET)
        last = 0
        reads = changes = 0
        deadline = time.monotonic() + timeout_s
        while last != final:
            v = q[cursor]
            reads += 1
            if ready is not None and reads == 1:
                ready.set()
            if (v >> 32) != (v & 0xFFFFFFFF):
                raise AssertionError(f"torn cursor read {v:#018x}")
            if v < last:
                raise AssertionError(f"cursor went backwards: {v:#x} after {last:#x}")
            if v != last:
                changes += 1
                last = v
            if not reads & 0xFFFF and time.monotonic() > deadline:
                raise TimeoutError("writer did not finish")
        return {"reads": reads, "changes": changes}
    finally:
        mapping.close()


def flood_producer(name: str, seconds: float) -> dict:
    """Keep a ring as full as possible for ``seconds``."""
    ring = Ring.attach(name, wait_s=5)
    try:
        prod = ring.producer()
        idle = BackoffIdleStrategy(max_spins=10, max_yields=10, max_park_ns=100_000)
        end = time.monotonic() + seconds
        seq = prod.position
        while time.monotonic() < end:
            head, tail = prod.claim(256)
            k = len(head) + len(tail)
            if k:
                fill(head, seq)
                fill(tail, seq + len(head))
                prod.publish(k)
                seq += k
            idle.idle(k)
        return {"count": seq}
    finally:
        ring.close()


def create_and_die(name: str) -> dict:
    """Create a ring and exit without unlinking it (leaves a stale ring)."""
    ring = Ring.create(name, slot_size=64, capacity=64, unlink_on_close=False)
    ring.close()
    return {"pid": os.getpid()}


def attach_consumer_and_wait(name: str, index: int, seconds: float) -> dict:
    ring = Ring.attach(name, wait_s=5)
    try:
        ring.consumer(index)
        time.sleep(seconds)
        return {}
    finally:
        ring.close()
