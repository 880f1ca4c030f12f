"""Probe: how long one ``os.fdatasync`` of a 4 KiB append takes on this host's disk.

    python docs/probes/fsync_latency.py [DIRECTORY] [COUNT]

The engine's journal, with ``durability = "batch"`` (the embedded default), syncs once per
sequenced batch before any of its events is published: no acknowledgement can come back
sooner than one sync, and under load an order waits for the sync in flight and then its own.
Prints the percentiles of COUNT (500) syncs of a file in DIRECTORY (the current one).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time


def main() -> int:
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    took: list[float] = []
    with tempfile.NamedTemporaryFile(dir=directory) as f:
        fd = f.fileno()
        for _ in range(count):
            os.write(fd, b"x" * 4096)
            start = time.perf_counter()
            os.fdatasync(fd)
            took.append((time.perf_counter() - start) * 1e6)
    took.sort()
    pick = {p: took[min(len(took) - 1, int(len(took) * p / 100))] for p in (50, 90, 99, 99.9)}
    print(f"fdatasync of a 4 KiB append, {count} times in {directory}: " +
          ", ".join(f"p{p} {v:,.0f} µs" for p, v in pick.items()) + f", max {took[-1]:,.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
