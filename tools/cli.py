"""The ``ringex`` command: one entry point, one subcommand per operator task.

Subcommands import their modules lazily so that ``ringex --help`` and ``ringex stat`` start
in milliseconds without loading numba.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Callable, Sequence

from ringex.engine.storage import defaults
from ringex.tools.load_args import add_e2e_args, add_load_args


# Subcommands that own their options: ``ringex WORD [WORD2] ...`` hands the rest to
# ``module.main(argv)``. (word, second word or None, module, help)
PASSTHROUGH: tuple[tuple[str, str | None, str, str], ...] = (
    ("stat", None, "ringex.tools.stat",
     "show the live counters of running ringex processes (read-only)"),
    ("replay", None, "ringex.tools.replay",
     "run the engine over a journal; print message count, throughput and output hash"),
    ("journal", "dump", "ringex.tools.journal_dump",
     "print journaled messages decoded by the schema, with filters"),
    ("tune", "check", "ringex.tuning.check",
     "report the host's latency-relevant settings and check a topology's pinning"),
)


def _passthrough(argv: list[str]) -> int | None:
    import importlib

    for word, second, module, _help in PASSTHROUGH:
        if not argv or argv[0] != word:
            continue
        rest = argv[1:]
        if second is not None:
            if not rest or rest[0] != second:
                print(f"usage: ringex {word} {second} ... (see ringex {word} {second} --help)",
                      file=sys.stderr)
                return 2
            rest = rest[1:]
        return int(importlib.import_module(module).main(rest) or 0)
    return None


def _cmd_run(args: argparse.Namespace, rest: list[str]) -> int:
    from ringex.tools.launcher import main as run_main

    return run_main(args.config)


def _print_result(result: dict, as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True))
        return
    print(title)
    width = max(len(k) for k in result)
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
        print(f"  {key:<{width}}  {value}")


def _cmd_bench_ring(args: argparse.Namespace, rest: list[str]) -> int:
    from ringex.tools.bench_ring import run_bench

    result = run_bench(messages=args.messages, runs=args.runs, quiet=True)
    _print_result(result, args.json, "ringex bench ring (medians)")
    return 0


def _cmd_bench_engine(args: argparse.Namespace, rest: list[str]) -> int:
    from ringex.tools.bench_engine import run_from_args

    result = run_from_args(args)
    title = "ringex bench engine --risk (medians)" if args.risk else "ringex bench engine (medians)"
    _print_result(result, args.json, title)
    return 0


def _cmd_bench_pipeline(args: argparse.Namespace, rest: list[str]) -> int:
    from ringex.tools.bench_pipeline import run_bench

    result = run_bench(messages=args.messages, runs=args.runs, durability=args.durability,
                       snapshot_writer=args.snapshot_writer)
    _print_result(result, args.json, "ringex bench pipeline (medians)")
    return 0


def _cmd_load(args: argparse.Namespace, rest: list[str]) -> int:
    from ringex.tools.load import run_from_args

    return run_from_args(args)


def _bench_json_or_text(module: str, args: argparse.Namespace) -> int:
    """``ringex bench e2e``, ``bench fix`` and ``bench feed``: a module's ``run_from_args``,
    its figures as JSON or as its ``print_result`` writes them."""
    bench = importlib.import_module(f"ringex.tools.{module}")
    result = bench.run_from_args(args)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        bench.print_result(result)
    return 0


def _cmd_bench_e2e(args: argparse.Namespace, rest: list[str]) -> int:
    return _bench_json_or_text("bench_e2e", args)


def _cmd_bench_fix(args: argparse.Namespace, rest: list[str]) -> int:
    return _bench_json_or_text("bench_fix", args)


def _cmd_fix_client(args: argparse.Namespace, rest: list[str]) -> int:
    from ringex.tools.fix_client import run

    return run(args)


def _cmd_bench_feed(args: argparse.Namespace, rest: list[str]) -> int:
    return _bench_json_or_text("bench_feed", args)


def _cmd_feed(args: argparse.Namespace, rest: list[str]) -> int:
    from ringex.tools.feed import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringex",
        description="ringex: an exchange core on shared-memory rings.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="start the exchange (embedded default unless --config)")
    run.add_argument("--config", default=None, help="TOML configuration file")
    run.set_defaults(func=_cmd_run)
    for word, second, _module, help_text in PASSTHROUGH:
        sub.add_parser(word if second is None else f"{word} {second}", help=help_text, add_help=False)

    load = sub.add_parser("load", help="offer an open-loop order flow to a binary gateway; latency from each "
                                       "order's intended send time")
    add_load_args(load)
    load.set_defaults(func=_cmd_load)

    fix = sub.add_parser("fix-client", help="a FIX 4.4 client for people: log on, send orders, cancels and replaces "
                                            "(given or typed), print each report readably")
    # declared here, not in ringex.tools.fix_client, so that --help does not import it
    fix.add_argument("--host", default="127.0.0.1", help="the FIX gateway's host (default 127.0.0.1)")
    fix.add_argument("--port", type=int, default=9878, help="its port (default 9878, the embedded default's)")
    fix.add_argument("--sender", default="DEMO1", help="SenderCompID, ours (default DEMO1)")
    fix.add_argument("--target", default="RINGEX", help="TargetCompID, the gateway's (default RINGEX)")
    fix.add_argument("--password", default="demo-1", help="Password (554) (default demo-1; '' sends none)")
    fix.add_argument("--heartbeat", type=int, default=30, help="HeartBtInt in seconds (default 30)")
    fix.add_argument("--reset", action="store_true", help="ResetSeqNumFlag=Y: both sides number from 1 again")
    fix.add_argument("--account", type=int, default=None,
                     help="the account orders name (default: N for DEMO<N>, else 1; a command's 'account N' wins)")
    fix.add_argument("--prefix", default=None, help="ClOrdIDs are PREFIX-1, PREFIX-2, ... (default: fc and the time)")
    fix.add_argument("--wait", type=float, default=2.0,
                     help="with COMMANDs: seconds to wait for their answers before logging out (default 2)")
    fix.add_argument("--raw", action="store_true", help="print every message sent and received as tag=value|...")
    fix.add_argument("commands", nargs="*", metavar="COMMAND",
                     help="commands sent in order, e.g. 'buy 2 DEMO @ 1000' 'cancel last'; none: read them from "
                          "standard input, one a line ('help' lists their forms)")
    fix.set_defaults(func=_cmd_fix_client)

    from ringex.tools.feed import add_args as add_feed_args  # argparse and the feed's modules: light

    feed = sub.add_parser("feed", help="follow the ITCH 5.0 market-data feed: join by snapshot, show the book and "
                                       "trades live, or record the messages (--write)")
    add_feed_args(feed)
    feed.set_defaults(func=_cmd_feed)

    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    bsub = bench.add_subparsers(dest="bench", metavar="BENCHMARK")
    bsub.required = True

    ring = bsub.add_parser("ring", help="ring throughput and round-trip latency vs multiprocessing")
    ring.add_argument("--json", action="store_true", help="print one JSON object")
    ring.add_argument("--messages", type=int, default=2_000_000, help="messages per throughput run")
    ring.add_argument("--runs", type=int, default=3, help="runs; figures are medians")
    ring.set_defaults(func=_cmd_bench_ring)

    engine = bsub.add_parser("engine", help="matching engine throughput on the standard order stream")
    engine.add_argument("--json", action="store_true", help="print one JSON object")
    engine.add_argument("--orders", type=int, default=1_000_000, help="orders in the stream")
    engine.add_argument("--runs", type=int, default=3, help="runs; figures are medians")
    engine.add_argument("--seed", type=int, default=1, help="seed of the generated stream")
    engine.add_argument("--batch", type=int, default=1024, help="slots per process() call (default 1024)")
    engine.add_argument("--python-orders", type=int, default=100_000,
                        help="orders for the NUMBA_DISABLE_JIT comparison (0 skips it; not with --risk)")
    # the same options as ringex.tools.bench_engine.add_risk_args (not imported: --help stays fast)
    engine.add_argument("--risk", action="store_true",
                        help="perpetual futures: the stream over --accounts margin-checked accounts with an "
                             "IndexPrice every --index-every orders, then the liquidation check")
    engine.add_argument("--accounts", type=int, default=10_000, help="--risk: accounts (default 10000)")
    engine.add_argument("--index-every", type=int, default=1_000,
                        help="--risk: orders between IndexPrice messages (default 1000; 0: none)")
    engine.add_argument("--liq-reps", type=int, default=500,
                        help="--risk: repetitions of each liquidation-check case (default 500)")
    engine.add_argument("--liq-fraction", type=float, default=0.01,
                        help="--risk: fraction of the accounts the liquidating move puts at risk (default 0.01)")
    engine.add_argument("--no-baseline", action="store_true",
                        help="--risk: skip the baseline runs (plain bench, same accounts on spot)")
    engine.set_defaults(func=_cmd_bench_engine)

    pipeline = bsub.add_parser("pipeline", help="producer -> sequencer -> journaling engine -> consumer")
    pipeline.add_argument("--json", action="store_true", help="print one JSON object")
    pipeline.add_argument("--messages", type=int, default=1_000_000, help="messages per run")
    pipeline.add_argument("--runs", type=int, default=3, help="runs; figures are medians")
    pipeline.add_argument("--durability", default="batch", choices=["none", "batch", "interval"])
    pipeline.add_argument("--snapshot-writer", default=defaults.SNAPSHOT_WRITER, choices=list(defaults.SNAPSHOT_WRITERS),
                          help="who writes the periodic snapshots (see [journal] snapshot_writer)")
    pipeline.set_defaults(func=_cmd_bench_pipeline)

    e2e = bsub.add_parser("e2e", help="the embedded default over TCP under the open-loop load generator")
    add_e2e_args(e2e)
    e2e.set_defaults(func=_cmd_bench_e2e)

    from ringex.tools.bench_fix import add_args as add_bench_fix_args  # argparse only: light

    bench_fix = bsub.add_parser("fix", help="FIX 4.4 sessions over TCP into the embedded default, open loop")
    add_bench_fix_args(bench_fix)
    bench_fix.set_defaults(func=_cmd_bench_fix)

    from ringex.tools.bench_feed import add_args as add_bench_feed_args  # argparse only: light

    bench_feed = bsub.add_parser("feed", help="engine events -> ITCH over MoldUDP64/UDP -> a subscriber's book: "
                                              "messages/s, latency")
    add_bench_feed_args(bench_feed)
    bench_feed.set_defaults(func=_cmd_bench_feed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    handled = _passthrough(argv)
    if handled is not None:
        return handled
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace, list[str]], int] = args.func
    try:
        return func(args, [])
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
