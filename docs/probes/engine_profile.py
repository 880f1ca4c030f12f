"""Two probes of the compiled engine on the benchmark's stream (docs/benchmarks.md, "Two
attempts at the NRT reference counts"). Run from a checkout:

  .venv/bin/python docs/probes/engine_profile.py best [RUNS] [risk]
      the three best of RUNS timed runs in one process, in M orders/s: for A/B runs between
      two checkouts on a noisy host (a run can only be slowed by others, so the fastest of
      several says more than their median);
  .venv/bin/python docs/probes/engine_profile.py perf-map [SECONDS] [risk] &
      writes /tmp/perf-PID.map naming every kernel function, prints "pid N", then runs the
      stream for SECONDS while you record it:
      perf record -F 4000 -e cpu-clock -p N -- sleep 15; perf report --sort sym

A kernel loaded from numba's cache keeps no LLVM module to list its functions from, so the
perf map's names come from the object code numba stored in ``dispatch.process_batch``'s
``.nbc`` file (every kernel function is linked into it), placed at the address the JIT gave
its one exported symbol.
"""
import glob
import os
import pickle
import subprocess
import sys
import time

from ringex.tools import bench_engine as b


def stream_run(risk: bool):
    """A function that runs the 1 M-order stream once on a fresh engine (plain or risk)."""
    if risk:
        stream, _ = b.make_risk_stream(1_000_000, 1, b.RISK_ACCOUNTS, b.INDEX_EVERY)
        cfg, admin = b.risk_config(b.RISK_ACCOUNTS), b.risk_admin_slots(b.RISK_ACCOUNTS)
        return lambda: b._run_once(stream, 1024, cfg, admin)
    stream = b.make_stream(1_000_000, 1)
    return lambda: b._run_once(stream, 1024)


def elf_objects(x):
    if isinstance(x, bytes) and x[:4] == b"\x7fELF":
        return [x]
    if isinstance(x, (tuple, list)):
        return [o for y in x for o in elf_objects(y)]
    return []


def write_perf_map() -> int:
    from ringex.engine.kernel import dispatch

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
    return len(syms)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "best"
    amount = float(sys.argv[2]) if len(sys.argv) > 2 else (7 if mode == "best" else 30)
    run = stream_run(len(sys.argv) > 3 and sys.argv[3] == "risk")
    b._jit_warm_up()
    if mode == "best":
        best = sorted(run()["elapsed_s"] for _ in range(int(amount)))[:3]
        print(" ".join(f"{1_000_000 / t / 1e6:.2f}" for t in best))
        return
    n = write_perf_map()
    run()
    print("pid", os.getpid(), "functions", n, flush=True)
    end = time.time() + amount
    while time.time() < end:
        run()


main()
