"""Best-of-N timings of the engine benchmark's stream in one process, for A/B runs between
two checkouts on a noisy host: a run can only be slowed by others, so the fastest of several
says more than their median (docs/benchmarks.md, "Two attempts at the NRT reference counts").
Run from a checkout: .venv/bin/python docs/probes/engine_best_of.py [RUNS] [plain|risk]
Prints the three best, in M orders/s."""
import sys

from ringex.tools import bench_engine as b

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
risk = len(sys.argv) > 2 and sys.argv[2] == "risk"
b._jit_warm_up()
if risk:
    stream, _ = b.make_risk_stream(1_000_000, 1, b.RISK_ACCOUNTS, b.INDEX_EVERY)
    cfg, admin = b.risk_config(b.RISK_ACCOUNTS), b.risk_admin_slots(b.RISK_ACCOUNTS)
    def run():
        return b._run_once(stream, 1024, cfg, admin)
else:
    stream = b.make_stream(1_000_000, 1)
    def run():
        return b._run_once(stream, 1024)
best = sorted(run()["elapsed_s"] for _ in range(runs))[:3]
print(" ".join(f"{1_000_000 / t / 1e6:.2f}" for t in best))
