"""Probe: one session pipelining IOC orders through the binary gateway as fast as it takes them.

    python docs/probes/gateway_flood.py PORT SESSION CREDENTIALS ACCOUNT [ORDERS] [PRICE]

Against a running exchange whose session has no throttle (``max_msgs_per_s = 0``) and
whose book has nothing at ``PRICE`` (each IOC order is accepted, then its remainder
canceled: two answers). Every order is encoded and framed before the session logs on, then
written as fast as the socket takes it while every answer is read; prints orders/s from
the first byte sent to the last answer read. The figure behind docs/benchmarks.md's
"compiled gateway paths" paragraph.
"""

from __future__ import annotations

import select
import sys
import time

from ringex.engine.wire import messages as m
from ringex.gateways.client import Client
from ringex.gateways.sofh import FrameReader, header


def main() -> int:
    port, session, credentials, account = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 100_000
    price = int(sys.argv[6]) if len(sys.argv) > 6 else 990
    frames = b"".join(
        header(m.NewOrder.size) + m.NewOrder.encode(clOrdId=i + 1, account=account, instrument=1, side="Buy",
                                                   ordType="Limit", price=price, qty=1, timeInForce="IOC",
                                                   sessionId=session)
        for i in range(n))
    c = Client.connect("127.0.0.1", port, session, credentials, keepalive_ms=10_000)
    sock = c._sock
    sock.setblocking(False)
    reader = FrameReader(1 << 16)
    view = memoryview(frames)
    sent = got = 0
    start = time.perf_counter()
    while got < 2 * n and time.perf_counter() - start < 120:
        select.select([sock], [sock] if sent < len(frames) else [], [], 0.01)
        if sent < len(frames):
            try:
                sent += sock.send(view[sent:sent + 65536])
            except BlockingIOError:
                pass
        try:
            got += len(reader.receive(sock))
        except BlockingIOError:
            pass
    took = time.perf_counter() - start
    print(f"{n} orders, {got} answers in {took:.2f} s: {n / took:,.0f} orders/s")
    c.terminate()
    return 0 if got >= 2 * n else 1


if __name__ == "__main__":
    sys.exit(main())
