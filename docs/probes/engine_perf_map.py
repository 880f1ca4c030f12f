"""Profile the compiled engine with perf: writes /tmp/perf-PID.map naming every kernel
function, then runs the benchmark stream for SECONDS while you record it
(docs/benchmarks.md, "Two attempts at the NRT reference counts").

A kernel loaded from numba's cache keeps no LLVM module to list its functions from, so the
names come from the object code numba stored in ``dispatch.process_batch``'s ``.nbc`` file
(every kernel function is linked into it), placed at the address the JIT gave its one
exported symbol. Run:
  .venv/bin/python docs/probes/engine_perf_map.py 30 [risk] &   # prints "pid N" when ready
  perf record -F 4000 -e cpu-clock -p N -- sleep 15; perf report --sort sym
"""
import glob
import os
import pickle
import subprocess
import sys
import time

from ringex.tools import bench_engine as b

b._jit_warm_up()
from ringex.engine.kernel import dispatch  # noqa: E402  (after the warm-up loaded it)


def elf_objects(x):
    if isinstance(x, bytes) and x[:4] == b"\x7fELF":
        return [x]
    if isinstance(x, (tuple, list)):
        return [o for y in x for o in elf_objects(y)]
    return []


nbc = sorted(glob.glob(os.path.join(os.path.dirname(dispatch.__file__), "__pycache__",
                                    "dispatch.process_batch-*.nbc")))[-1]
obj = elf_objects(pickle.loads(open(nbc, "rb").read()))[0]
path = f"/tmp/kernel-{os.getpid()}.o"
open(path, "wb").write(obj)
syms = [line.split() for line in subprocess.run(["nm", "-S", "--defined-only", path], capture_output=True,
                                                text=True, check=True).stdout.splitlines()]
syms = [s for s in syms if len(s) == 4 and s[2] in "tTW"]
engine = next(iter(dispatch.process_batch.overloads.values())).library._codegen._engine
base = next(engine.get_function_address(s[3]) - int(s[0], 16) for s in syms
            if s[2] == "T" and engine.get_function_address(s[3]))
with open(f"/tmp/perf-{os.getpid()}.map", "w") as f:
    for s in syms:
        f.write(f"{base + int(s[0], 16):x} {int(s[1], 16):x} {s[3]}\n")
if len(sys.argv) > 2 and sys.argv[2] == "risk":
    stream, _ = b.make_risk_stream(1_000_000, 1, b.RISK_ACCOUNTS, b.INDEX_EVERY)
    cfg, admin = b.risk_config(b.RISK_ACCOUNTS), b.risk_admin_slots(b.RISK_ACCOUNTS)
    def run():
        return b._run_once(stream, 1024, cfg, admin)
else:
    stream = b.make_stream(1_000_000, 1)
    def run():
        return b._run_once(stream, 1024)
run()
print("pid", os.getpid(), "functions", len(syms), "object", path, flush=True)
t = time.time()
while time.time() - t < float(sys.argv[1] if len(sys.argv) > 1 else 30):
    run()
