"""The options of ``ringex load`` and ``ringex bench e2e``, and their defaults, in one place.

Light on purpose (argparse only): ``ringex --help`` and ``ringex load --help`` build their
parsers from here without importing numpy or numba; ``tools/load.py`` and
``tools/bench_e2e.py`` read the same defaults.
"""

from __future__ import annotations

import argparse

__all__ = ["DEFAULT_SESSIONS", "DURATION_S", "FIXED_RATE", "P99_LIMIT_US", "SEARCH_S", "START_RATE",
           "add_e2e_args", "add_load_args", "session_triples"]

DEFAULT_SESSIONS = "1:demo-1:1,2:demo-2:2,3:demo-3:3"  # the embedded default's demo sessions
START_RATE = 20_000.0  # orders/s: where bench e2e's search begins
FIXED_RATE = 20_000.0  # orders/s of its latency and stage figures
DURATION_S = 10.0  # seconds a rate must be sustained
P99_LIMIT_US = 10_000.0  # the ack p99 a sustained rate stays under
SEARCH_S = 240.0  # the search's time budget


def session_triples(text: str, shape: str, *, numbered: bool, credentials_required: bool
                    ) -> list[tuple[str, str, int]]:
    """``"a:secret:1,b:other:2"``: comma-separated ``who:credentials:account`` items as
    (who, credentials, account), each checked (``shape`` names the fields in errors, e.g.
    ``"CompID:password:account"``; ``numbered``: who must be a number), none listed twice,
    at least one (ValueError)."""
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        parts = item.split(":")
        if (len(parts) != 3 or not parts[0] or (numbered and not parts[0].isdigit()) or not parts[2].isdigit()
                or (credentials_required and not parts[1])):
            raise ValueError(f"{item!r} is not {shape}")
        out.append((parts[0], parts[1], int(parts[2])))
    if not out:
        raise ValueError("no sessions")
    if len({x[0] for x in out}) != len(out):
        raise ValueError("a session is listed twice")
    return out


def add_load_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="the binary gateway's host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9100, help="its port (default 9100)")
    parser.add_argument("--sessions", default=DEFAULT_SESSIONS,
                        help=f"sessionId:credentials:account, comma-separated (default {DEFAULT_SESSIONS})")
    parser.add_argument("--instrument", type=int, default=1, help="instrument id (default 1)")
    parser.add_argument("--price", type=int, default=50_000,
                        help="reference price to quote around, in price units (default 50000)")
    parser.add_argument("--rate", type=float, default=1000.0, help="orders/s offered, all sessions (default 1000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the order flow (default 1)")
    parser.add_argument("--hgrm", metavar="DIR", default=None, help="write ack/fill latency .hgrm files here")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument("--progress", action="store_true",
                        help="a progress line a second on stderr even when it is not a terminal")


def add_e2e_args(parser: argparse.ArgumentParser, fixed_rate: float = FIXED_RATE, start_rate: float = START_RATE,
                 fixed_figures: str = "the latency and stage figures") -> None:
    """The options of a benchmark over TCP (``bench e2e``, ``bench fix``), with its defaults."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--duration", type=float, default=DURATION_S, help=f"seconds per run (default {DURATION_S:g})")
    parser.add_argument("--fixed-rate", type=float, default=fixed_rate,
                        help=f"orders/s of {fixed_figures} (default {fixed_rate:.0f})")
    parser.add_argument("--start-rate", type=float, default=start_rate,
                        help=f"first rate of the search (default {start_rate:.0f})")
    parser.add_argument("--search-s", type=float, default=SEARCH_S,
                        help=f"time budget of the search (default {SEARCH_S:g})")
    parser.add_argument("--p99-limit-ms", type=float, default=P99_LIMIT_US / 1000,
                        help=f"the ack p99 a sustained rate must stay under (default {P99_LIMIT_US / 1000:g})")
    parser.add_argument("--no-search", action="store_true", help="only the fixed-rate figures")
    parser.add_argument("--durability", choices=("batch", "none", "interval"), default=None,
                        help="the journal's durability (default: the embedded default's, batch); "
                             "none shows what the disk's sync costs")
    parser.add_argument("--gateways-in-core", action="store_true",
                        help="the gateways in the pipeline's process instead of their own edge process: "
                             "shows what the process hops cost (and gives up the edge's isolation)")
