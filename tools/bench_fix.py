"""``ringex bench fix``: FIX 4.4 sessions over TCP driving the running exchange, open loop.

The exchange is the embedded default as ``ringex bench e2e`` starts it (``bench_e2e.Exchange``:
a temporary data directory, every gateway on a port the system picks, the sessions' throttle
off); the FIX gateway's address is read from its own address file
(``<data_dir>/gateways/fix-gateway/listening``). Three FIX sessions (DEMO1..DEMO3, passwords
demo-1..demo-3, accounts 1..3) trade BTC-USD around its reference price (50,000), driven by
tools/fix_load.py's open-loop generator (``run_fix_load``).

Figures (``run_bench``):

* ``orders_per_s``: the highest offered rate sustained for ``duration`` s (10) with every
  order acknowledged, nothing refused but cancels whose target had gone, and ack p99 under
  ``--p99-limit-ms`` (10 ms, as bench e2e), found with ``bench_e2e.search_rate`` (a ladder
  from ``--start-rate`` up, or halving down to ``FLOOR_RATE`` when it fails, then
  bisection) within ``--search-s``; each run on an exchange of its own, warmed first by a
  second at a low rate; a run stops early once more than 1% of its orders took over ten
  times the limit. 0 when no rate passed.
* ``ack_p50_us``, ``ack_p99_us``, ``ack_p999_us``: at ``fixed_rate`` (5,000 orders/s) for
  ``duration`` s, after the warm-up, on one exchange.
* ``cpu_percent``: each exchange process's share of one core over the fixed-rate run, and
  the generator's. ``host``: bench_e2e's ``host_info``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

from ringex.tools.fix_load import DEFAULT_SESSIONS, PRICE, SYMBOL, LoadError, run_fix_load
from ringex.tools.load_args import DURATION_S, P99_LIMIT_US, SEARCH_S, add_e2e_args

__all__ = ["build_result", "run_bench", "add_args"]

GATEWAY = "fix-gateway"
FIXED_RATE = 5_000.0
START_RATE = 10_000.0
WARM_RATE = 1_000.0
# the search halves below --start-rate down to this (bench e2e stops at 1,000/s; a FIX
# gateway that sustains less still gets a figure)
FLOOR_RATE = 100.0
WARM_S = 1.0
# cancels refused because their target had gone: the flow's own races, not failures
BENIGN = frozenset({"UnknownOrder", "TooLateToCancel"})


# ---------------------------------------------------------------------------- the benchmark


def passed(result: dict[str, Any], p99_limit_us: float = P99_LIMIT_US) -> bool:
    """Ran to its end, every order acknowledged, nothing refused but cancels whose target had
    gone, ack p99 under the limit."""
    return (bool(result.get("completed")) and not result.get("error") and result.get("unacked") == 0
            and set(result.get("rejected") or {}) <= BENIGN
            and result.get("ack_p99_us") is not None and result["ack_p99_us"] < p99_limit_us)


def _summary(rate: float, r: dict[str, Any], p99_limit_us: float) -> dict[str, Any]:
    keys = ("achieved_rate", "unacked", "rejected", "ack_p50_us", "ack_p99_us", "ack_p999_us", "ack_max_us",
            "send_lag_p99_us", "generator_cpu_percent", "completed", "error")
    return {"rate": rate, "passed": passed(r, p99_limit_us), **{k: r.get(k) for k in keys}}


def build_result(host: dict[str, Any], fixed_rate: float, duration: float, fixed: dict[str, Any],
                 cpu: dict[str, Any] | None, p99_limit_us: float, orders_per_s: float | None = None,
                 search: dict[float, dict[str, Any]] | None = None, search_s: float | None = None) -> dict[str, Any]:
    """The bench's figures as one dict (keys: ``orders_per_s``, ``ack_p50_us``, ``ack_p99_us``,
    ``ack_p999_us``, ``fixed_rate``, ``host``, ``cpu_percent``, and the runs behind them)."""
    out: dict[str, Any] = {
        "host": host, "duration_s": duration, "fixed_rate": fixed_rate, "p99_limit_us": p99_limit_us,
        "ack_p50_us": fixed.get("ack_p50_us"), "ack_p99_us": fixed.get("ack_p99_us"),
        "ack_p999_us": fixed.get("ack_p999_us"), "fixed_run": _summary(fixed_rate, fixed, p99_limit_us),
        "cpu_percent": cpu or {}, "orders_per_s": orders_per_s,
    }
    if search is not None:
        out["search"] = [_summary(rate, search[rate], p99_limit_us) for rate in sorted(search)]
        out["search_s"] = search_s
    return out


def fix_address(ex: Any, timeout: float = 30.0) -> tuple[str, int]:
    """Where the exchange's FIX gateway listens (its address file, once written)."""
    from ringex.gateways.gateway_agent import ADDRESS_FILE

    path = ex.directory / "data" / "gateways" / GATEWAY / ADDRESS_FILE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = path.read_text().strip()
            if text:
                host, port = text.rsplit(":", 1)
                return host, int(port)
        except (OSError, ValueError):
            pass
        if ex.proc is not None and ex.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"the FIX gateway did not write {path}:\n" + "".join(ex.output))


def _load(ex: Any, rate: float, duration: float, **kw: Any) -> dict[str, Any]:
    """``run_fix_load`` against ``ex``'s FIX gateway; a lost session is a failed run."""
    try:
        host, port = fix_address(ex)
        return run_fix_load(host, port, DEFAULT_SESSIONS, SYMBOL, PRICE, rate, duration, **kw)
    except (LoadError, RuntimeError) as exc:
        tail = "".join(list(ex.output)[-10:])
        return {"error": f"{exc}\n{tail}", "completed": False, "unacked": None, "rejected": {},
                "ack_p50_us": None, "ack_p99_us": None, "ack_p999_us": None, "achieved_rate": None,
                "run_s": 0.0, "generator_cpu_percent": None}


def run_bench(duration: float = DURATION_S, fixed_rate: float = FIXED_RATE, start_rate: float = START_RATE,
              search_s: float = SEARCH_S, p99_limit_us: float = P99_LIMIT_US, search: bool = True,
              durability: str | None = None, warm_rate: float = WARM_RATE,
              log: Callable[[str], None] | None = None, gateways_in_core: bool = False) -> dict[str, Any]:
    """The figures in the module docstring, as one dict (``build_result``); ``durability`` and
    ``gateways_in_core`` as ``bench e2e``'s."""
    import signal
    import threading

    from ringex.tools.bench_e2e import Exchange, cpu_by_process, cpu_percent, host_info, search_rate

    say = log or (lambda line: None)
    host = host_info()

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminated) if main_thread else None
    try:
        with Exchange(durability, gateways_in_core) as ex:
            say(f"fixed rate {fixed_rate:,.0f}/s for {duration:g} s over FIX")
            _load(ex, warm_rate, WARM_S, seed=99, drain_s=2.0)
            before, t = cpu_by_process(ex), time.monotonic()
            fixed = _load(ex, fixed_rate, duration)
            cpu: dict[str, Any] = cpu_percent(before, cpu_by_process(ex), fixed["run_s"] or time.monotonic() - t)
            cpu["generator"] = fixed.get("generator_cpu_percent")
        say(f"  error: {fixed['error']}" if fixed.get("error") else
            f"  ack p50 {fixed['ack_p50_us']} µs, p99 {fixed['ack_p99_us']} µs, p99.9 {fixed['ack_p999_us']} µs, "
            f"unacked {fixed['unacked']}; CPU % {cpu}")
        results: dict[float, dict[str, Any]] | None = None
        best: float | None = None
        spent: float | None = None
        if search:
            results = {}
            t0 = time.monotonic()
            per_run = duration + 12.0

            def measure(rate: float) -> bool | None:
                assert results is not None
                if rate not in results:
                    if time.monotonic() - t0 + per_run > search_s:
                        return None
                    with Exchange(durability, gateways_in_core) as ex2:
                        _load(ex2, warm_rate, WARM_S, seed=99, drain_s=2.0)
                        r = results[rate] = _load(ex2, rate, duration, fail_fast=(p99_limit_us * 10, 0.01))
                    say(f"  {rate:>9,.0f}/s: " + (f"error: {r['error']}" if r.get("error") else
                        f"ack p50 {r['ack_p50_us']} µs, p99 {r['ack_p99_us']} µs, unacked {r['unacked']}, "
                        f"achieved {r['achieved_rate']:,.0f}/s, rejected {r['rejected']}"
                        f"{'' if r['completed'] else ' (stopped early)'}"))
                return passed(results[rate], p99_limit_us)

            best = search_rate(measure, start=start_rate, budget=20, floor=FLOOR_RATE)
            spent = round(time.monotonic() - t0, 1)
            say(f"  orders_per_s: {best:,.0f}")
        return {**build_result(host, fixed_rate, duration, fixed, cpu, p99_limit_us, best, results, spent),
                "durability": durability or "batch", "gateways": "core" if gateways_in_core else "edge"}
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------- command line


def add_args(parser: argparse.ArgumentParser) -> None:
    """``ringex bench fix``'s options: ``bench e2e``'s with this bench's rates, and the warm-up's."""
    add_e2e_args(parser, fixed_rate=FIXED_RATE, start_rate=START_RATE, fixed_figures="the latency figures")
    parser.add_argument("--warm-rate", type=float, default=WARM_RATE,
                        help=f"orders/s of the one-second warm-up before each run (default {WARM_RATE:.0f})")

def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return run_bench(duration=args.duration, fixed_rate=args.fixed_rate, start_rate=args.start_rate,
                     search_s=args.search_s, p99_limit_us=args.p99_limit_ms * 1000, search=not args.no_search,
                     durability=args.durability, warm_rate=args.warm_rate, gateways_in_core=args.gateways_in_core,
                     log=None if args.json else (lambda line: print(line, file=sys.stderr, flush=True)))


def print_result(result: dict[str, Any]) -> None:
    from ringex.tools.bench_e2e import _num

    host = result["host"]
    print(f"ringex bench fix: FIX 4.4 over TCP into the embedded default, {result['duration_s']:g} s runs "
          f"({host['cpus']} CPUs, {host['model']}, load {host['loadavg_1m']} before)")
    print(f"  orders_per_s                     {_num(result.get('orders_per_s'))}")
    print(f"  at {result['fixed_rate']:,.0f} orders/s: ack p50 {_num(result['ack_p50_us'])} µs, "
          f"p99 {_num(result['ack_p99_us'])} µs, p99.9 {_num(result['ack_p999_us'])} µs")
    if result["fixed_run"].get("error"):
        print(f"    error: {result['fixed_run']['error']}")
    print("  CPU, % of one core: " + ", ".join(f"{k} {_num(v)}" for k, v in result["cpu_percent"].items()))
    if result.get("search"):
        print(f"  {'rate':>9} {'achieved':>9} {'unacked':>9} {'p50 µs':>9} {'p99 µs':>9}  passed")
        for run in result["search"]:
            print(f"  {_num(run['rate']):>9} {_num(run['achieved_rate']):>9} {_num(run['unacked']):>9} "
                  f"{_num(run['ack_p50_us']):>9} {_num(run['ack_p99_us']):>9}  {'yes' if run['passed'] else 'no'}")
        for run in result["search"]:
            if run.get("error"):
                print(f"  {_num(run['rate'])}/s: error: {run['error']}")
        print(f"  search took {result['search_s']:g} s")
