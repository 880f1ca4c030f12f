"""How fork() cost grows with the process and its arena, and how copy-on-write splits the arena's huge pages (docs/benchmarks.md, "Snapshots by a shadow engine"). Run: .venv/bin/python docs/probes/fork_split.py"""
import os, time, numpy as np, re
from ringex.engine.kernel.memory import zeroed_words
from ringex.engine.engine import warm_up
warm_up()
def huge_kb(addr):
    cur = None; tot = {}
    for line in open("/proc/self/smaps"):
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if m:
            cur = (int(m.group(1), 16) <= addr < int(m.group(2), 16))
        elif cur and line.startswith(("AnonHugePages", "Rss")):
            k, v = line.split()[:2]; tot[k] = int(v)
    return tot
def rss():
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS", "RssAnon")): print(" ", line.strip())
def fork_ms():
    t = time.perf_counter_ns(); pid = os.fork()
    if pid == 0: time.sleep(0.2); os._exit(0)
    return (time.perf_counter_ns() - t) / 1e6, pid
rss()
a0 = []
for i in range(3):
    ms, pid = fork_ms(); os.waitpid(pid, 0); a0.append(round(ms, 2))
print("no arena fork ms", a0)
a = zeroed_words(321_000_000 // 8)
print("arena", huge_kb(a.ctypes.data)); rss()
for rnd in range(4):
    ms, pid = fork_ms()
    # parent writes 30% of the pages while the child lives (COW)
    v = a.view(np.uint8)
    t = time.perf_counter_ns(); v[:len(v)*3//10:4096] += 1; w = (time.perf_counter_ns() - t) / 1e6
    os.waitpid(pid, 0)
    print(f"round {rnd}: fork {ms:.2f} ms, COW writes of {len(v)*3//10//4096} pages {w:.0f} ms", huge_kb(a.ctypes.data))
