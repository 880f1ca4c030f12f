"""The engine's cost per order while a forked child holds a copy-on-write image of its arena: 100,000 bench-pipeline orders alone, beside a child, and after (docs/benchmarks.md, issue 12). Run: .venv/bin/python docs/probes/cow_cost.py"""
import os, time, numpy as np, signal, sys
from ringex.tools.bench_pipeline import BENCH_TOML, order_stream
from ringex.tools.config import parse_config
from ringex.tools.launcher import admin_messages
from ringex.engine.engine import MatchingEngine, pack_slots, warm_up
warm_up()
cfg=parse_config(BENCH_TOML.format(data_dir='/tmp/x',prefix='x',durability='batch',snapshot_every=1,snapshot_writer='fork'),base_dir='/tmp')
e=MatchingEngine(cfg.engine)
e.process(pack_slots(admin_messages(cfg)))
st=order_stream(400000)
def run(a,b):
    t=time.perf_counter()
    for i in range(a,b,256): e.process(st[i:i+256])
    return (time.perf_counter()-t)
print("warm", run(0,100000))
print("plain", run(100000,200000))
pid=os.fork()
if pid==0:
    time.sleep(30); os._exit(0)
t=time.perf_counter(); 
print("with cow child", run(200000,300000))
os.kill(pid, 9); os.waitpid(pid, 0)
print("after", run(300000, 400000))
