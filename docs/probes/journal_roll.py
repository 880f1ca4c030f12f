"""How long a journal append takes when it rolls to a new segment, against ordinary appends (1 MiB segments, batch durability; docs/benchmarks.md, issue 12). Run from a directory on the journal's file system: .venv/bin/python docs/probes/journal_roll.py"""
import time, tempfile, os, numpy as np
from ringex.engine.storage.journal_writer import JournalWriter
d = tempfile.mkdtemp(dir=".")
w = JournalWriter(d, 1 << 20, "batch", slot_size=128)
slots = np.zeros((256, 128), np.uint8)
seq = 1
worst = []
for i in range(200):
    t = time.perf_counter_ns()
    w.append(seq, slots, 256); seq += 256
    worst.append((time.perf_counter_ns() - t) / 1e6)
w.close()
a = np.array(worst)
print("append ms p50 %.2f max %.2f" % (np.median(a), a.max())); print("over 1 ms at", [(i, round(x,2)) for i, x in enumerate(a) if x > 1])
