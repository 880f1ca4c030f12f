"""Probe: what one durable journal append costs, with and without reserved space.

    python docs/probes/journal_append.py [DIRECTORY] [APPENDS] [SLOTS] [ROUNDS]

Appends APPENDS (2,000) batches of SLOTS (4) engine slots to a ``JournalWriter`` with
``durability = "batch"`` (each append written and fdatasynced before it returns, as the
engine does before it publishes a batch's events) in a fresh journal in DIRECTORY (the
current one), once with the writer's reserved space (``reserve_bytes``, the default) and
once growing the file with each record (``reserve_bytes = 0``), alternating for ROUNDS (3)
rounds. Prints the percentiles of each append's time, per round and the medians over rounds.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import numpy as np

from ringex.engine.storage import defaults
from ringex.engine.storage.journal_writer import JournalWriter
from ringex.engine.wire import messages as m

PERCENTILES = (50, 90, 99, 99.9)


def one_run(directory: str, appends: int, slots: int, reserve_bytes: int) -> dict[float, float]:
    payload = np.zeros((slots, m.SLOT_SIZE), np.uint8)
    took = np.empty(appends)
    with tempfile.TemporaryDirectory(dir=directory) as journal:
        with JournalWriter(journal, durability="batch", slot_size=m.SLOT_SIZE, reserve_bytes=reserve_bytes) as w:
            seq = 0
            for i in range(appends):
                payload[:, 0] = i & 0xFF  # each batch its own bytes
                start = time.perf_counter()
                w.append(seq, payload, slots)
                took[i] = time.perf_counter() - start
                seq += slots
    return {p: float(np.percentile(took, p)) * 1e6 for p in PERCENTILES}


def main() -> int:
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    appends = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000
    slots = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    modes = {"reserved": defaults.RESERVE_BYTES, "growing": 0}
    results: dict[str, list[dict[float, float]]] = {name: [] for name in modes}
    print(f"{appends:,} appends of {slots} slots ({slots * m.SLOT_SIZE} bytes), durability batch, in {directory}")
    for r in range(rounds):
        for name, reserve in modes.items():
            got = one_run(directory, appends, slots, reserve)
            results[name].append(got)
            print(f"  round {r + 1} {name:<9} " + "  ".join(f"p{p} {v:7.0f} µs" for p, v in got.items()))
    for name in modes:
        med = {p: statistics.median(run[p] for run in results[name]) for p in PERCENTILES}
        print(f"median {name:<9} " + "  ".join(f"p{p} {v:7.0f} µs" for p, v in med.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
