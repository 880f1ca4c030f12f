"""Probe: one order at a time through the binary gateway, and where its round trip goes.

    python docs/probes/gateway_rtt.py [ORDERS] [DURABILITY]

Starts the embedded default as ``ringex bench e2e`` does (tools/bench_e2e.py: its own data
directory, prefix and port; ``durability`` as given, ``batch`` by default), logs on as demo
session 1, and sends ORDERS (1,000) IOC buys that rest nowhere, each after the previous
one's two answers and a 2 ms pause, so that every process has gone idle (parked) before the
next order arrives. Prints the percentiles of the round trip to the first answer and of its
parts, from the answer's own stamps (wall clock, one host): client send to the gateway's
receive, the gateway's receive to the sequencer's stamp, the stamp to the answer read.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import ringex.tools.bench_e2e as e2e
from ringex.gateways.client import Client


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    durability = sys.argv[2] if len(sys.argv) > 2 else "batch"
    with e2e.Exchange(durability) as ex:
        c = Client.connect(ex.host, ex.port, 1, "demo-1", keepalive_ms=10_000)
        rows = []
        for i in range(n):
            sent = time.time_ns()
            c.new_order(clOrdId=i + 1, account=1, instrument=1, side="Buy", ordType="Limit",
                        price=49_990, qty=1, timeInForce="IOC")
            first = c.receive(timeout=5.0)
            read = time.time_ns()
            c.receive(timeout=5.0)  # the remainder's cancel
            f = first.fields
            rows.append((f["ingressNs"] - sent, f["timestampNs"] - f["ingressNs"], read - f["timestampNs"], read - sent))
            time.sleep(0.002)
        c.terminate()
    parts = np.array(rows[n // 10:]) / 1000  # the first tenth warms every path
    print(f"{len(parts)} orders, durability {durability}, µs:")
    for name, col in zip(("client to gateway", "gateway to sequencer", "sequencer to client", "round trip"), parts.T):
        p50, p90, p99 = np.percentile(col, [50, 90, 99])
        print(f"  {name:<22} p50 {p50:>7,.0f}  p90 {p90:>7,.0f}  p99 {p99:>7,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
