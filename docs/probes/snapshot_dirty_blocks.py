"""How much of the arena changes between snapshots, in blocks of 64 KiB, 256 KiB and 1 MiB: runs one `ringex bench pipeline` exchange with snapshots on, keeps its snapshot files and compares the first and the last kept (docs/benchmarks.md, "Snapshots by a shadow engine"). Run: .venv/bin/python docs/probes/snapshot_dirty_blocks.py"""
import shutil, glob, os
import numpy as np
from ringex.tools import bench_pipeline as bp
from ringex.engine.storage.snapshot import read_snapshot
real = shutil.rmtree
def keep(p, ignore_errors=False):
    snaps = sorted(glob.glob(os.path.join(str(p), "**", "*.snap"), recursive=True))
    for i, s in enumerate(snaps):
        shutil.copy(s, f"/tmp/probe-{i}.snap")
    print("kept", len(snaps))
    real(p, ignore_errors=True)
if __name__ == "__main__":
    bp.shutil.rmtree = keep
    r = bp.run_once(1_000_000, "none", snapshots=True)
    a = read_snapshot("/tmp/probe-0.snap"); b = read_snapshot("/tmp/probe-2.snap")
    print("seqs", a.seq, b.seq)
    x = a.arrays["arena"].view(np.uint8); y = b.arrays["arena"].view(np.uint8)
    for blk in (65536, 262144, 1 << 20):
        n = -(-x.size // blk)
        d = sum(not np.array_equal(x[i*blk:(i+1)*blk], y[i*blk:(i+1)*blk]) for i in range(n))
        print(blk, n, d, f"{d*blk/1e6:.0f} MB")
