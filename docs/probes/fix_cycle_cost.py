"""Probe: what one duty cycle of the FIX gateway costs, by sessions and orders a cycle.

    python docs/probes/fix_cycle_cost.py [CYCLES] [--profile S K | --idle]

One ``FixGatewayAgent`` in this process, on real rings (this process plays the sequencer
and the engine: it reads the gateway's inbound ring and publishes an OrderAccepted for each
order on the output ring) and real loopback sockets (one counterparty a session, logged on
with fix_codec's Logon). A cycle here is what a busy gateway's duty cycles do for an order:
every session sends K NewOrderSingles in one write, one ``do_work`` takes them (read, scan,
map, stage, publish), the engine's answers go on the output ring, one ``do_work`` reports
them (route, ExecutionReports framed and stored, the book's records, the sends). Prints the
median µs of each of the two ``do_work`` calls for S sessions and K orders a session, and
what a cycle costs with nothing in it. ``--profile S K``: cProfile of those cycles, by own
time. ``--idle``: one session sending one order a cycle among S logged on (what each idle
session adds to a busy cycle). The garbage collector is off, as in the exchange's agents.
"""

from __future__ import annotations

import cProfile
import gc
import os
import pstats
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ringex.engine.wire import messages as m
from ringex.gateways.fix_codec import encode, utc_timestamp
from ringex.gateways.fix_gateway import FixGatewayAgent
from ringex.gateways.fix_instrument import FixInstrument
from ringex.gateways.gateway_config import GatewayConfig, SessionConfig
from ringex.ringbuffer.ring import Ring

_CL, _SESSION = m.NewOrder.offset("clOrdId"), m.NewOrder.offset("sessionId")
_ACCOUNT = m.NewOrder.offset("account")


class Bench:
    """A logged-on FIX gateway with ``sessions`` counterparties, and the engine's side."""

    def __init__(self, directory: Path, sessions: int) -> None:
        tag = f"/rx-fixcycle-{os.getpid()}-{sessions}"
        self.rings = [Ring.create(f"{tag}-{x}", slot_size=m.SLOT_SIZE, capacity=1 << 14, consumers=1)
                      for x in ("in", "out", "rej")]
        self.clients: list[socket.socket] = []
        self.agent: FixGatewayAgent | None = None
        try:
            self._start(directory, sessions)
        except BaseException:
            self.close()  # no rings left behind in /dev/shm
            raise

    def _start(self, directory: Path, sessions: int) -> None:
        self.sequencer = self.rings[0].consumer(0)
        self.engine = self.rings[1].producer()
        cfgs = [SessionConfig(id=i + 1, credentials="pw", accounts=[i + 1], target_comp_id=f"C{i + 1}",
                              max_msgs_per_s=0) for i in range(sessions)]
        gw = GatewayConfig(name="fix", protocol="fix", listen="127.0.0.1:0", session=cfgs,
                           max_connections=max(64, sessions))
        inst = FixInstrument(id=1, symbol=b"BTC-USD", price_decimals=0, qty_decimals=0, tick_size=1, lot_size=1,
                             min_qty=1, max_qty=10**9)
        self.agent = FixGatewayAgent(gw, *(r.name for r in self.rings), 0, directory, [inst])
        self.agent.on_start()
        self.seq = [2] * sessions
        self.orders = 0
        ts = utc_timestamp(time.time_ns())
        for i in range(sessions):
            c = socket.create_connection(self.agent.address, timeout=5.0)
            c.sendall(encode(b"A", b"C%d" % (i + 1), b"RINGEX", 1, ts, [(98, 0), (108, 30), (141, b"Y"), (554, b"pw")]))
            self.clients.append(c)
        deadline = time.monotonic() + 10.0
        answered = 0
        while answered < sessions:  # every Logon answered
            assert time.monotonic() < deadline, "a Logon was not answered"
            self.agent.do_work()
            answered = 0
            for c in self.clients:
                c.setblocking(False)
                try:
                    answered += bool(c.recv(1 << 16))
                except BlockingIOError:
                    pass
        self.ts = ts

    def send(self, k: int) -> None:
        """K NewOrderSingles from every session, each session's in one write."""
        for i, c in enumerate(self.clients):
            batch = b""
            for _ in range(k):
                self.orders += 1
                batch += encode(b"D", b"C%d" % (i + 1), b"RINGEX", self.seq[i], self.ts, [
                    (11, b"O%d" % self.orders), (1, b"%d" % (i + 1)), (55, b"BTC-USD"), (54, b"1"), (60, self.ts),
                    (38, b"1"), (40, b"2"), (44, b"49990"), (59, b"1")])
                self.seq[i] += 1
            c.sendall(batch)

    def answer(self) -> int:
        """What the engine says to every order the gateway published: OrderAccepted."""
        head, tail = self.sequencer.read()
        rows = [r for part in (head, tail) for r in part]
        self.sequencer.commit(len(rows))
        events = np.zeros((len(rows), m.SLOT_SIZE), np.uint8)
        for j, row in enumerate(rows):
            body = m.OrderAccepted.encode(
                seq=self.orders + j, timestampNs=time.time_ns(), orderId=10**6 + self.orders + j,
                clOrdId=int.from_bytes(bytes(row[_CL:_CL + 8]), "little"),
                sessionId=int.from_bytes(bytes(row[_SESSION:_SESSION + 4]), "little"),
                account=int.from_bytes(bytes(row[_ACCOUNT:_ACCOUNT + 4]), "little"), instrument=1)
            events[j, :len(body)] = np.frombuffer(body, np.uint8)
        if len(rows):
            assert self.engine.offer_batch(events) == len(rows)
        return len(rows)

    def drain(self) -> None:
        for c in self.clients:
            try:
                while c.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        for c in self.clients:
            c.close()
        if self.agent is not None:
            self.agent.on_close()
        for r in self.rings:
            r.close()


def measure(directory: Path, sessions: int, k: int, cycles: int, profile: cProfile.Profile | None = None,
            trading: int | None = None) -> tuple[float, float, float]:
    """Median µs of the receiving ``do_work``, of the reporting one, and of an empty one;
    ``trading``: only the first that many sessions send (the others logged on, idle)."""
    b = Bench(directory, sessions)
    everyone = b.clients
    b.clients = everyone[:trading]  # the ones that send (and are drained)
    clock = time.perf_counter_ns
    took_in, took_out, took_idle = [], [], []
    try:
        for cycle in range(cycles + 20):  # the first 20: warming up
            b.send(k)
            if profile is not None and cycle >= 20:
                profile.enable()
            t0 = clock()
            b.agent.do_work()
            t1 = clock()
            if profile is not None:
                profile.disable()
            assert b.answer() == len(b.clients) * k, "not every order was published in one cycle"
            if profile is not None and cycle >= 20:
                profile.enable()
            t2 = clock()
            b.agent.do_work()
            t3 = clock()
            b.agent.do_work()
            t4 = clock()
            if profile is not None:
                profile.disable()
            b.drain()
            if cycle >= 20:
                took_in.append(t1 - t0)
                took_out.append(t3 - t2)
                took_idle.append(t4 - t3)
    finally:
        b.clients = everyone
        b.close()
    return tuple(float(np.median(x)) / 1000 for x in (took_in, took_out, took_idle))  # type: ignore[return-value]


def main() -> int:
    args = sys.argv[1:]
    cycles = int(args[0]) if args and args[0].isdigit() else 300
    gc.disable()
    with tempfile.TemporaryDirectory() as directory:
        if "--profile" in args:
            at = args.index("--profile")
            sessions, k = int(args[at + 1]), int(args[at + 2])
            profile = cProfile.Profile()
            measure(Path(directory) / "p", sessions, k, cycles, profile)
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
            return 0
        if "--idle" in args:
            print(f"FIX gateway duty cycles, median µs ({cycles} cycles each): one session of S logged on sends one "
                  f"order a cycle, the others are idle; receiving it; reporting its acceptance; an empty cycle")
            print(f"{'S':>3} {'receive':>9} {'report':>9} {'empty':>7}")
            for sessions in (1, 10, 50):
                rin, rout, idle = measure(Path(directory) / f"idle-{sessions}", sessions, 1, cycles, trading=1)
                print(f"{sessions:>3} {rin:>9.1f} {rout:>9.1f} {idle:>7.1f}")
            return 0
        print(f"FIX gateway duty cycles, median µs ({cycles} cycles each): receiving K orders from each of S "
              f"sessions; reporting their acceptances; an empty cycle")
        print(f"{'S':>3} {'K':>3} {'receive':>9} {'per order':>10} {'report':>9} {'per order':>10} {'empty':>7}")
        for sessions in (1, 3, 10):
            for k in (1, 4, 16):
                rin, rout, idle = measure(Path(directory) / f"{sessions}-{k}", sessions, k, cycles)
                n = sessions * k
                print(f"{sessions:>3} {k:>3} {rin:>9.1f} {rin / n:>10.1f} {rout:>9.1f} {rout / n:>10.1f} {idle:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
