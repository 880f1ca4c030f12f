"""Probe: what waking a parked process costs the process that wakes it.

    python docs/probes/wake_cost.py [sock|eventfd] [--pin] [WAKES]

A doorbell (ringbuffer/doorbell.py) is one ``sendto`` on a Unix datagram socket, made by a
producer in the middle of its duty cycle to a consumer parked in ``select``. Here a parent
does the same: WAKES (2,000) times it sends one wake, then works 100 µs (its duty cycle
going on) and sleeps 0.5 ms; a forked child parks in ``select``, drains the wake and works
~20 µs. Prints the percentiles of the waking call's own duration, as the waker sees it.
``eventfd``: an eventfd write instead (a wake-up without the socket layer's synchronous
hint); ``--pin``: parent on CPU 0, child on CPU 1, so the child cannot be run on the
waker's CPU.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time


def main() -> int:
    args = sys.argv[1:]
    mode = args[0] if args and not args[0].startswith("-") else "sock"
    pin = "--pin" in args
    wakes = int(args[-1]) if args and args[-1].isdigit() else 2000
    if mode == "sock":
        tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        tx.setblocking(False)
        rx.setblocking(False)
        readable = rx.fileno()

        def ring() -> None:
            tx.send(b"x")

        def drain() -> None:
            try:
                while True:
                    rx.recv(16)
            except BlockingIOError:
                pass
    elif mode == "eventfd":
        efd = os.eventfd(0, os.EFD_NONBLOCK)
        readable = efd

        def ring() -> None:
            os.eventfd_write(efd, 1)

        def drain() -> None:
            try:
                os.eventfd_read(efd)
            except BlockingIOError:
                pass
    else:
        print(f"unknown mode {mode!r}: sock or eventfd", file=sys.stderr)
        return 2
    stop = os.eventfd(0, os.EFD_NONBLOCK)
    child = os.fork()
    if child == 0:
        if pin:
            os.sched_setaffinity(0, {1})
        while True:
            ready, _, _ = select.select([readable, stop], [], [], 0.5)
            if stop in ready:
                os._exit(0)
            drain()
            x = 0
            for i in range(300):  # the woken agent's duty cycle
                x += i
    if pin:
        os.sched_setaffinity(0, {0})
    time.sleep(0.1)
    took: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(wakes):
        t = clock()
        ring()
        took.append(clock() - t)
        until = clock() + 100_000
        while clock() < until:  # the waker's duty cycle goes on
            pass
        time.sleep(0.0005)
    os.eventfd_write(stop, 1)
    os.waitpid(child, 0)
    took.sort()
    pick = [took[min(len(took) - 1, int(len(took) * p))] / 1000 for p in (0.5, 0.9, 0.99)]
    print(f"{mode}{' pinned' if pin else ''}: the waking call, {wakes} wakes: p50 {pick[0]:.1f} µs, "
          f"p90 {pick[1]:.1f} µs, p99 {pick[2]:.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
