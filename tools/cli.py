"""The ``ringex`` command: one entry point, one subcommand per operator task.

Subcommands import their modules lazily so that ``ringex --help`` and ``ringex stat`` start
in milliseconds without loading numba.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence


def _cmd_stat(args: argparse.Namespace, rest: list[str]) -> int:
    from ringex.tools import stat

    return stat.main(rest)


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

    result = run_bench(messages=args.messages, runs=args.runs)
    _print_result(result, args.json, "ringex bench ring (medians)")
    return 0


def _cmd_bench_engine(args: argparse.Namespace, rest: list[str]) -> int:
    from ringex.tools.bench_engine import run_bench

    result = run_bench(orders=args.orders, runs=args.runs, seed=args.seed)
    _print_result(result, args.json, "ringex bench engine (medians)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringex",
        description="ringex: an exchange core on shared-memory rings.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    stat = sub.add_parser(
        "stat",
        help="show the live counters of running ringex processes (read-only)",
        add_help=False,
    )
    stat.set_defaults(func=_cmd_stat, passthrough=True)

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
    engine.set_defaults(func=_cmd_bench_engine)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `ringex stat` owns its own options (and --help): hand it everything after the word.
    if argv and argv[0] == "stat":
        return _cmd_stat(argparse.Namespace(), argv[1:])
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace, list[str]], int] = args.func
    try:
        return func(args, [])
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
