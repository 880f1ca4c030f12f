"""``ringex stat``: print live counters of running ringex processes, with rates.

Attaches read-only (PROT_READ) to counters objects in /dev/shm, so it can never disturb
the processes it watches.  By default it discovers every ``ringex-counters-*`` object on
each refresh, so processes that start or stop while it runs come and go from the view.

    python -m ringex.tools.stat [NAME ...] [--interval SECONDS] [--count N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from ringex.ringbuffer.counters import (
    COUNTERS_PREFIX,
    SHM_DIR,
    CountersError,
    CountersReader,
    discover_counters,
)
from ringex.ringbuffer.hiccup import HiccupError, hiccup_name, read_hiccups
from ringex.ringbuffer.latency import list_latency
from ringex.ringbuffer.liveness import pid_alive
from ringex.tools.stages import stage_snapshot

__all__ = ["main", "StatView"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ringex stat",
        description="Print the counters of running ringex agents, refreshed live (read-only).",
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME",
        help=f"counters object(s) to read (in {SHM_DIR}); default: every {COUNTERS_PREFIX}*",
    )
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between refreshes (default 1.0)")
    p.add_argument("--count", type=int, default=None, metavar="N",
                   help="number of refreshes, then exit (default: until Ctrl-C)")
    return p


class StatView:
    """Keeps readers attached across refreshes and remembers values to compute rates."""

    def __init__(self, names: Sequence[str], out: TextIO, err: TextIO) -> None:
        self.explicit = [n.rsplit("/", 1)[-1] for n in names]
        self.out = out
        self.err = err
        self.readers: dict[str, CountersReader] = {}
        self.previous: dict[tuple[str, int, str], int] = {}
        self.previous_time: float | None = None
        self._warned: set[str] = set()

    def _names(self) -> list[str]:
        return self.explicit or discover_counters()

    def _attach(self, name: str) -> CountersReader | None:
        reader = self.readers.get(name)
        if reader is not None:
            return reader
        try:
            reader = CountersReader(name)
        except CountersError as e:
            # Warn once per name: a half-created or foreign object is not fatal to the view.
            if name not in self._warned:
                self._warned.add(name)
                print(f"ringex stat: skipping {name}: {e}", file=self.err)
            return None
        self.readers[name] = reader
        return reader

    def _drop(self, name: str) -> None:
        reader = self.readers.pop(name, None)
        if reader is not None:
            reader.close()

    def refresh(self) -> None:
        now = time.monotonic()
        dt = None if self.previous_time is None else now - self.previous_time
        names = self._names()
        for gone in set(self.readers) - set(names):
            self._drop(gone)
        current: dict[tuple[str, int, str], int] = {}
        lines = [f"ringex stat  {time.strftime('%Y-%m-%d %H:%M:%S')}"]
        if not names:
            lines.append(f"  no ringex counters objects in {SHM_DIR} ({COUNTERS_PREFIX}*)")
        for name in names:
            reader = self._attach(name)
            if reader is None:
                continue
            alive = pid_alive(reader.owner_pid, started_before_ns=reader.created_ns)
            lines.append(f"== {name}  pid {reader.owner_pid}{'' if alive else ' (exited)'}")
            lines.append(f"  {'id':>4}  {'label':<48} {'value':>16} {'rate/s':>14}")
            for r in reader.records():
                key = (name, r.id, r.label)
                current[key] = r.value
                before = self.previous.get(key)
                rate = "-" if before is None or not dt else f"{(r.value - before) / dt:,.1f}"
                lines.append(f"  {r.id:>4}  {r.label:<48} {r.value:>16,} {rate:>14}")
            hiccups = _hiccup_line(name)
            if hiccups:
                lines.append(hiccups)
        lines += _stage_lines()
        self.previous = current
        self.previous_time = now
        print("\n".join(lines) + "\n", file=self.out, flush=True)

    def close(self) -> None:
        for name in list(self.readers):
            self._drop(name)


def _hiccup_line(counters_name: str) -> str | None:
    """The process's hiccup meter, summarised (None when it has none)."""
    try:
        h = read_hiccups(hiccup_name(counters_name))
    except HiccupError:
        return None
    us = [f"{h.percentile(p) / 1e3:,.1f}" for p in (50, 99, 99.9)]
    work = [f"{h.work_percentile(p) / 1e3:,.1f}" for p in (50, 99, 99.9)]
    return (f"  hiccups over {h.cycles:,} duty cycles (µs beyond the park): p50 {us[0]}  p99 {us[1]}  "
            f"p99.9 {us[2]}  max {h.max_ns / 1e3:,.1f}; longest duty cycle {h.longest_cycle_ns / 1e6:,.2f} ms\n"
            f"  working duty cycles, {h.work_cycles:,} (µs each): p50 {work[0]}  p99 {work[1]}  p99.9 {work[2]}")


def _stage_lines() -> list[str]:
    """Each running exchange's per-stage latency since its processes started."""
    lines: list[str] = []
    for prefix in sorted({p for p, _, _ in list_latency()}):
        lines.append(f"== stage latency of exchange {prefix!r} (µs since start)")
        for stage, t in stage_snapshot(prefix).totals().items():
            if t["count"]:
                lines.append(f"  {stage:<28} {t['count']:>12,}  p50 {t['p50_us']:>9,.1f}  p99 {t['p99_us']:>9,.1f}  "
                             f"p99.9 {t['p999_us']:>9,.1f}  max {t['max_us']:>9,.1f}")
            else:
                lines.append(f"  {stage:<28} {0:>12}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.interval <= 0:
        print("ringex stat: --interval must be positive", file=sys.stderr)
        return 2
    if args.count is not None and args.count < 1:
        print("ringex stat: --count must be at least 1", file=sys.stderr)
        return 2
    view = StatView(args.names, sys.stdout, sys.stderr)
    try:
        if args.names:
            # Explicitly named objects must exist at start; later disappearance is shown.
            for name in view.explicit:
                try:
                    view.readers[name] = CountersReader(name)
                except CountersError as e:
                    print(f"ringex stat: {e}", file=sys.stderr)
                    return 1
        done = 0
        while True:
            view.refresh()
            done += 1
            if args.count is not None and done >= args.count:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        view.close()


if __name__ == "__main__":
    sys.exit(main())
