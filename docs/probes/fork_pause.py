"""How long fork() stops a process holding the default arena, and the copy-on-write cost of writing one word per page afterwards (docs/benchmarks.md, issue 12). Run: .venv/bin/python docs/probes/fork_pause.py"""
import os, time, numpy as np, gc
from ringex.engine.engine import MatchingEngine, warm_up
from ringex.tools.config import load_config
cfg = load_config(None)
warm_up()
e = MatchingEngine(cfg.engine)
a = e._arena
print("arena MB", a.nbytes/1e6)
a.view(np.uint8)[::4096] = a.view(np.uint8)[::4096]  # touch
ts=[]
for i in range(5):
    t=time.perf_counter_ns()
    pid=os.fork()
    if pid==0:
        os._exit(0)
    t1=time.perf_counter_ns()
    # parent writes across arena: COW faults
    v=a.view(np.uint8)
    t2=time.perf_counter_ns()
    v[::4096] += 0
    t3=time.perf_counter_ns()
    os.waitpid(pid,0)
    ts.append(((t1-t)/1e6,(t3-t2)/1e6))
print(ts)
t=time.perf_counter_ns(); c=a.copy(); print("copy ms",(time.perf_counter_ns()-t)/1e6)
