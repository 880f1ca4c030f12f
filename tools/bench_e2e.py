"""``ringex bench e2e``: the whole exchange over TCP, driven by the open-loop load generator.

The exchange is the embedded default (``ringex.tools.config.DEFAULT_TOML``: the pipeline in
one process, the binary gateway in another, backoff idle, journal fsync per batch) started
as users start it, ``python -m ringex.tools.cli run --config FILE`` in a child process, with
only these changed: its data directory (a temporary one), its shared-memory prefix (unique),
the gateway's port (0: the system picks one, read back from the gateway's address file) and
the demo sessions' throttle (off, so that what is measured is the exchange, not the token
bucket); given ``--durability``, the journal's durability (``none`` measures the exchange
without the disk's sync, which every acknowledgement waits for under ``batch``); and given
``--gateways-in-core``, the layout: the gateways composed into the pipeline's process (no
process hop on the way in or out, at the price of the isolation the default's ``edge``
process gives: a gateway that dies or hangs takes the engine with it). ``ringex load``
(tools/load.py) drives it from the same host, and every latency is
measured from each order's *intended* send time (the coordinated-omission rule: a stall
counts against every order that should have gone out during it).

Figures:

* ``orders_per_s``: the highest offered rate sustained for ``duration`` s (10) with every
  order acknowledged, no refusal but a cancel's ``UnknownOrder``, and acknowledgement p99
  under 10 ms (``--p99-limit-ms``). Found by climbing a ladder (20k, 40k, 80k, 150k, 200k,
  300k; halving below 20k if that fails) and bisecting between the last pass and the first
  failure, within a time budget (``search_s``, 240 s by default). Each run has an exchange
  of its own, warmed by a second at 2,000 orders/s before it is measured, so a run never
  inherits another's book, balances or backlog, nor pays the first-touch costs of a process
  that has just started.
* ``orders_per_s_p99_under_100ms``: the same search under a looser bound, sharing the runs
  of the first (a rate is run once). A run stops early once more than 1% of its orders are
  known to have taken longer than this bound (it can pass neither search then).
* ``ack_p50_us``, ``ack_p99_us``, ``ack_p999_us``: at a fixed 20,000 orders/s for 10 s.
* ``stage_p99_us`` (and ``stages``, with counts and the other percentiles): the exchange's
  own per-stage histograms (``ringex.tools.stages``) over that same fixed-rate window, one
  snapshot before it and one after: how the time splits between gateway to sequencer,
  sequencer to the engine's output, and the engine's output to the socket.
* ``host``: CPU count and model, and the load average before the first run: on a small
  host everything here shares the cores with the generator and with whatever else runs.

Every child is stopped (SIGTERM, a bounded wait, then SIGKILL) and every temporary
directory removed, on error and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

from ringex.tools.load import DEFAULT_SESSIONS, LoadError, run_load
from ringex.tools.load_args import DURATION_S, FIXED_RATE, P99_LIMIT_US, SEARCH_S, START_RATE, add_e2e_args

LADDER = (1.0, 2.0, 4.0, 7.5, 10.0, 15.0)  # multiples of the start rate: 20k, 40k, 80k, 150k, 200k, 300k
# A second search, under a looser bound: on a small shared host the exchange's p99 at rest
# is already near 10 ms, and the throughput it sustains is then the figure that says more.
RELAXED_P99_LIMIT_US = 100_000.0
WARM_RATE = 2_000.0
FLOOR_RATE = 1_000.0
PRECISION = 1.1  # bisect until the failing rate is within 10% of the passing one
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
PRICE = 50_000  # the embedded default's BTC-USD reference price
INSTRUMENT = 1


# ---------------------------------------------------------------------------- the exchange


def bench_toml(data_dir: str, shm_prefix: str, durability: str | None = None, gateways_in_core: bool = False) -> str:
    """The embedded default with only the data directory, the prefix, the gateway's port and
    the demo sessions' throttle changed (each substitution checked, so a reworded default
    fails loudly here rather than benchmarking something else); the journal's
    ``durability`` when one is given (to measure what the disk's sync costs); and with
    ``gateways_in_core``, the gateways moved from their ``edge`` process into the pipeline's
    (to measure what the process hops cost)."""
    from ringex.tools.config import DEFAULT_TOML

    text = DEFAULT_TOML
    changes = [
        (r'^data_dir = "[^"]*"', f"data_dir = {json.dumps(data_dir)}", 1),
        (r'^shm_prefix = "[^"]*"', f"shm_prefix = {json.dumps(shm_prefix)}", 1),
        (r'^listen = "[^"]*"', 'listen = "127.0.0.1:0"', None),  # every gateway: the SBE one is measured
        (r"^max_msgs_per_s = \d+", "max_msgs_per_s = 0", None),
    ]
    if durability is not None:
        changes.append((r'^durability = "[^"]*"', f"durability = {json.dumps(durability)}", 1))
    if gateways_in_core:
        changes += [(r'^(agents = \[)("sequencer", "engine"\])$', r'\1"sbe-gateway", "fix-gateway", \2', 1),
                    (r'^\[\[process\]\]\nname = "edge"\nagents = \["sbe-gateway", "fix-gateway"\]\n(idle = "[^"]*"\n)?\n',
                     "", 1)]
    for pattern, value, expect in changes:
        text, n = re.subn(pattern, value, text, flags=re.M)
        if n == 0 or (expect is not None and n != expect):
            raise RuntimeError(f"the embedded default changed: {pattern!r} matched {n} times")
    return text


class Exchange:
    """``ringex run`` on the bench configuration in a temporary directory of its own."""

    def __init__(self, durability: str | None = None, gateways_in_core: bool = False) -> None:
        """``durability``: the journal's, when not the embedded default's; ``gateways_in_core``:
        the gateways in the pipeline's process (``bench_toml``)."""
        self.durability = durability
        self.gateways_in_core = gateways_in_core
        self.directory = Path(tempfile.mkdtemp(prefix="ringex-e2e-"))
        self.prefix = f"rxe2e{os.getpid()}{uuid.uuid4().hex[:6]}"
        self.proc: subprocess.Popen | None = None
        self.output: deque[str] = deque(maxlen=200)
        self.pids: dict[str, int] = {}  # the launcher's [[process]] children, by name
        self.gateway_starts = 0  # more than one: the supervisor restarted the gateway
        self._address: Path | None = None
        self.host, self.port = "", 0

    def start(self, timeout: float = START_TIMEOUT_S) -> "Exchange":
        """Start it and wait until its gateway listens; on any failure (or an interrupt)
        everything is stopped and removed before the exception goes on. Once: a second
        ``ringex run`` on the same directory would be refused, and this object would then
        stop that one and remove the directory under the first, which ran on unsupervised
        and wrote its final snapshot into a directory nobody removes."""
        if self.proc is not None:
            raise RuntimeError(f"this exchange ({self.directory}) was started already")
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> "Exchange":
        from ringex.gateways.sbe_gateway import ADDRESS_FILE
        from ringex.tools.config import parse_config

        data = self.directory / "data"
        toml = bench_toml(str(data), self.prefix, self.durability, self.gateways_in_core)
        conf = self.directory / "exchange.toml"
        conf.write_text(toml)
        gateway = parse_config(toml, base_dir=self.directory).gateway[0].name
        address = data / "gateways" / gateway / ADDRESS_FILE
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "ringex.tools.cli", "run", "--config", str(conf)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=self.directory, env=env)
        started = threading.Event()
        proc = self.proc

        def pump() -> None:  # never let the pipe fill and block the launcher
            assert proc.stdout is not None
            for line in proc.stdout:
                self.output.append(line)
                found = re.match(r"\s*process (\S+) \(pid (\d+)\)", line)
                if found:
                    self.pids[found.group(1)] = int(found.group(2))
                if " listening on " in line:
                    self.gateway_starts += 1
                if line.startswith("seq "):  # the first status line: running
                    started.set()
            started.set()

        threading.Thread(target=pump, daemon=True).start()
        self._address = address
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("ringex run exited while starting:\n" + "".join(self.output))
            if started.wait(0.05) and self.refresh_address():
                return self
        raise TimeoutError("ringex run did not start listening in time:\n" + "".join(self.output))

    def refresh_address(self) -> bool:
        """Read where the gateway listens now: a gateway the supervisor restarted listens on
        a new port (the bench asks for port 0)."""
        try:
            text = self._address.read_text().strip() if self._address is not None else ""
        except OSError:
            return False
        if not text:
            return False
        host, port = text.rsplit(":", 1)
        self.host, self.port = host, int(port)
        return True

    def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL; the directory and any shared memory left
        under this run's prefix are removed. An interrupt meanwhile shortens the wait but
        not the clean-up (and is raised again after it)."""
        interrupted = False
        proc = self.proc
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()  # its agents die with it (ringbuffer/parent_death.py)
                proc.wait(10)
            try:
                for name in os.listdir("/dev/shm"):  # rings and stage histograms carry the prefix
                    if self.prefix in name:
                        os.unlink(os.path.join("/dev/shm", name))
            except OSError:
                pass
            shutil.rmtree(self.directory, ignore_errors=True)
        if interrupted:
            raise KeyboardInterrupt

    def __enter__(self) -> "Exchange":
        return self if self.proc is not None else self.start()  # (``with Exchange().start()`` too)

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------- the figures


def passed(result: dict[str, Any], p99_limit_us: float = P99_LIMIT_US) -> bool:
    """A run sustained its rate: it ran to the end, every order was acknowledged, nothing was
    refused but cancels whose target had gone, and the ack p99 is under the limit."""
    return (bool(result.get("completed")) and not result.get("error") and result["unacked"] == 0
            and set(result["rejected"]) <= {"UnknownOrder"}
            and result["ack_p99_us"] is not None and result["ack_p99_us"] < p99_limit_us)


def search_rate(measure: Callable[[float], bool | None], start: float = START_RATE, budget: int = 12,
                precision: float = PRECISION, floor: float = FLOOR_RATE) -> float:
    """The highest rate ``measure`` passes: climb ``start * LADDER`` (or halve below
    ``start`` when it fails) to the first failure, then bisect (geometrically, to the
    nearest 500/s) until the failing rate is within ``precision`` of the passing one. At
    most ``budget`` measurements; ``measure`` returning None (out of time) ends the search.
    0 when none passed."""
    tries = 0
    best, worst = 0.0, float("inf")

    def attempt(rate: float) -> bool | None:
        nonlocal tries, best, worst
        if tries >= budget:
            return None
        tries += 1
        ok = measure(rate)
        if ok is None:
            tries = budget  # no more measurements
            return None
        if ok:
            best = max(best, rate)
        else:
            worst = min(worst, rate)
        return ok

    first = attempt(start)
    if first is None:
        return 0.0
    if first:
        for k in LADDER[1:]:
            ok = attempt(start * k)
            if not ok:  # a failure, or out of budget
                break
    else:
        rate = start / 2
        while rate >= floor:
            ok = attempt(rate)
            if ok is None or ok:
                break
            rate /= 2
    while best and worst < float("inf") and worst / best > precision:
        mid = round((best * worst) ** 0.5 / 500) * 500
        if not best < mid < worst:
            break
        if attempt(mid) is None:
            break
    return best


def _process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def cpu_by_process(ex: "Exchange") -> dict[str, int]:
    """CPU ticks used so far by each of the exchange's processes, by the launcher's names:
    ``launcher``, its ``[[process]]`` names, ``snapshot`` for the shadow snapshot writer."""
    out: dict[str, int] = {}
    if ex.proc is not None:
        names = {ex.proc.pid: "launcher", **{pid: name for name, pid in ex.pids.items()}}
        for pid in _process_tree(ex.proc.pid):
            name = names.get(pid)
            if name is None:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read()
                except OSError:
                    continue
                name = "snapshot" if b"snapshot_shadow" in cmd else "other"
            out[name] = out.get(name, 0) + _cpu_ticks(pid)
    return out


def cpu_percent(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, float]:
    """Per process, the share of one CPU used between two ``cpu_by_process`` readings."""
    tick = os.sysconf("SC_CLK_TCK")
    return {k: round(100.0 * (after[k] - before.get(k, 0)) / tick / seconds, 1) for k in sorted(after)}


def host_info() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "model": model, "loadavg_1m": round(os.getloadavg()[0], 2)}


def _summary(rate: float, r: dict[str, Any], limits_us: Sequence[float]) -> dict[str, Any]:
    keys = ("achieved_rate", "unacked", "rejected", "ack_p50_us", "ack_p99_us", "ack_max_us", "send_lag_p50_us",
            "send_lag_p99_us",
            "generator_cpu_percent", "completed", "gateway_restarts", "error")
    return {"rate": rate, **{f"passed_p99_{limit / 1000:g}ms": passed(r, limit) for limit in limits_us},
            **{k: r.get(k) for k in keys}}


def _load(ex: Exchange, rate: float, duration: float, **kw: Any) -> dict[str, Any]:
    """``run_load`` against ``ex``; a session the gateway ended or dropped is a failed run
    (its ``error`` says how, with the exchange's last lines), not the end of the bench."""
    ex.refresh_address()
    starts = ex.gateway_starts
    try:
        r = run_load(ex.host, ex.port, DEFAULT_SESSIONS, INSTRUMENT, PRICE, rate, duration, **kw)
    except LoadError as exc:
        tail = "".join(list(ex.output)[-10:])
        r = {"error": f"{exc}\n{tail}", "completed": False, "unacked": None, "rejected": {},
             "ack_p50_us": None, "ack_p99_us": None, "ack_p999_us": None, "achieved_rate": None,
             "run_s": 0.0, "generator_cpu_percent": None}
    r["gateway_restarts"] = ex.gateway_starts - starts
    return r


def _warm(ex: Exchange) -> None:
    """A second of light load on a fresh exchange first: the first orders a process ever
    handles pay for page faults and first calls, which a running venue paid long ago."""
    _load(ex, WARM_RATE, 1.0, seed=99, drain_s=2.0)


def run_bench(duration: float = DURATION_S, fixed_rate: float = FIXED_RATE, start_rate: float = START_RATE,
              search_s: float = SEARCH_S, p99_limit_us: float = P99_LIMIT_US,
              relaxed_p99_limit_us: float = RELAXED_P99_LIMIT_US, search: bool = True,
              durability: str | None = None, log: Callable[[str], None] | None = None,
              gateways_in_core: bool = False) -> dict[str, Any]:
    """The figures in the module docstring, as one dict; ``durability``: the journal's, when
    not the embedded default's (``batch``); ``gateways_in_core``: the layout (``bench_toml``)."""
    from ringex.tools.stages import stage_snapshot

    say = log or (lambda line: None)
    result: dict[str, Any] = {"host": host_info(), "duration_s": duration, "durability": durability or "batch",
                              "gateways": "core" if gateways_in_core else "edge"}
    limits = (p99_limit_us, relaxed_p99_limit_us)

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that every finally below stops its exchange

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminated) if main_thread else None
    try:
        # (b) and (c): a fixed rate, and the exchange's own stage histograms over that window
        with Exchange(durability, gateways_in_core) as ex:
            say(f"fixed rate {fixed_rate:,.0f}/s for {duration:g} s")
            _warm(ex)
            before, cpu_before, t = stage_snapshot(ex.prefix), cpu_by_process(ex), time.monotonic()
            r = _load(ex, fixed_rate, duration)
            stages = stage_snapshot(ex.prefix).since(before)
            # over the run itself (the exchange idles while the flow is generated), and the
            # generator's own figure from inside the run
            cpu = cpu_percent(cpu_before, cpu_by_process(ex), r["run_s"] or time.monotonic() - t)
            cpu["generator"] = r["generator_cpu_percent"]
        result.update({
            "fixed_rate": fixed_rate,
            "ack_p50_us": r["ack_p50_us"], "ack_p99_us": r["ack_p99_us"], "ack_p999_us": r["ack_p999_us"],
            "fixed_run": _summary(fixed_rate, r, limits),
            "stage_p99_us": {name: s["p99_us"] for name, s in stages.items()},
            "stages": stages,
            "cpu_percent": cpu,
        })
        say(f"  error: {r['error']}" if r.get("error") else
            f"  ack p50 {r['ack_p50_us']} µs, p99 {r['ack_p99_us']} µs, p99.9 {r['ack_p999_us']} µs; "
            f"stage p99 (µs) {result['stage_p99_us']}; CPU % {cpu}")

        # (a): the highest rate sustained, under the p99 limit and under the relaxed one; the
        # two searches share their runs (a rate is run once), and a run stops early only
        # once it cannot pass even the relaxed limit
        if search:
            results: dict[float, dict[str, Any]] = {}
            t0 = time.monotonic()
            per_run = duration + 12.0  # a run's cost: its duration, then flow, start, warm-up, drain, stop

            def measure(rate: float, limit_us: float) -> bool | None:
                if rate not in results:
                    if time.monotonic() - t0 + per_run > search_s:
                        return None  # none begun that could not end within the budget
                    with Exchange(durability, gateways_in_core) as ex:
                        _warm(ex)
                        r = results[rate] = _load(ex, rate, duration, fail_fast=(relaxed_p99_limit_us, 0.01))
                    say(f"  {rate:>9,.0f}/s: " + (f"error: {r['error']}" if r.get("error") else
                        f"ack p50 {r['ack_p50_us']} µs, p99 {r['ack_p99_us']} µs, unacked {r['unacked']}, "
                        f"achieved {r['achieved_rate']:,.0f}/s{'' if r['completed'] else ' (stopped early)'}"))
                return passed(results[rate], limit_us)

            for key, limit in (("orders_per_s", p99_limit_us),
                               (f"orders_per_s_p99_under_{relaxed_p99_limit_us / 1000:g}ms", relaxed_p99_limit_us)):
                result[key] = search_rate(lambda rate, limit=limit: measure(rate, limit), start=start_rate, budget=20)
                say(f"  {key}: {result[key]:,.0f}")
            result.update({"p99_limit_us": p99_limit_us, "search_s": round(time.monotonic() - t0, 1),
                           "search": [_summary(rate, results[rate], limits) for rate in sorted(results)]})
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return result


# ---------------------------------------------------------------------------- command line


add_args = add_e2e_args


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return run_bench(duration=args.duration, fixed_rate=args.fixed_rate, start_rate=args.start_rate,
                     search_s=args.search_s, p99_limit_us=args.p99_limit_ms * 1000, search=not args.no_search,
                     durability=args.durability, gateways_in_core=args.gateways_in_core, log=None if args.json else (lambda line: print(line, file=sys.stderr, flush=True)))


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"


def print_result(result: dict[str, Any]) -> None:
    """The figures as a short report (``--json`` gives everything)."""
    host = result["host"]
    print(f"ringex bench e2e: embedded default over TCP, {result['duration_s']:g} s runs "
          f"({host['cpus']} CPUs, {host['model']}, load {host['loadavg_1m']} before)")
    for key in sorted(k for k in result if k.startswith("orders_per_s")):
        print(f"  {key:<32} {_num(result[key])}")
    print(f"  at {result['fixed_rate']:,.0f} orders/s: ack p50 {_num(result['ack_p50_us'])} µs, "
          f"p99 {_num(result['ack_p99_us'])} µs, p99.9 {_num(result['ack_p999_us'])} µs")
    if result["fixed_run"].get("error"):
        print(f"    error: {result['fixed_run']['error']}")
    print(f"  {'stage':<28} {'count':>9} {'p50 µs':>9} {'p99 µs':>9} {'p99.9 µs':>9}")
    for name, st in result["stages"].items():
        print(f"  {name:<28} {st['count']:>9,} {_num(st['p50_us']):>9} {_num(st['p99_us']):>9} "
              f"{_num(st['p999_us']):>9}")
    print("  CPU, % of one core: " + ", ".join(f"{k} {_num(v)}" for k, v in result["cpu_percent"].items()))
    if result.get("search"):
        flags = [k for k in result["search"][0] if k.startswith("passed_")]
        print(f"  {'rate':>9} {'achieved':>9} {'unacked':>9} {'p50 µs':>9} {'p99 µs':>9}  " + "  ".join(flags))
        for run in result["search"]:
            print(f"  {_num(run['rate']):>9} {_num(run['achieved_rate']):>9} {_num(run['unacked']):>9} "
                  f"{_num(run['ack_p50_us']):>9} {_num(run['ack_p99_us']):>9}  "
                  + "  ".join(f"{'yes' if run[f] else 'no':<{len(f)}}" for f in flags))
        for run in result["search"]:
            if run.get("error"):
                print(f"  {_num(run['rate'])}/s: error: {run['error']}")
        print(f"  search took {result['search_s']:g} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ringex bench e2e", description=__doc__.split("\n\n")[0])
    add_args(parser)
    args = parser.parse_args(argv)
    try:
        result = run_from_args(args)
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
