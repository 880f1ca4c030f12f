"""Named crash points: a test arms one to SIGKILL a process exactly there.

Random SIGKILLs rarely land in a two-line window, so every hand-off that has to survive a
crash (publish then commit, journal then publish, write then rename) names the instant
between its steps here, and a test kills the process at that instant, restarts it, and
checks that nothing was lost or repeated. In the spirit of FoundationDB's simulated faults
and the ``fail`` crates of TiKV, minus the randomness: one point, one hit, one kill.

Arming, through the environment (children inherit it, so it reaches the agent processes
the supervisor spawns and respawns):

``RINGEX_CRASH_AT=<point>[@<hit>][,<point>[@<hit>]...]``
    kill the process the ``hit``-th time (default 1) it reaches ``point`` (counted per
    process, from its start);
``RINGEX_CRASH_ONCE=<directory>``
    a kill at ``point`` first creates the file ``<directory>/<point>`` (O_EXCL); while it
    exists that point no longer fires, so the process the supervisor restarts runs on, and
    a test knows the point was reached. Without it, every incarnation dies at the same hit,
    which is how a test exhausts restarts.

The kill is ``SIGKILL`` to itself: no ``finally``, no ``atexit``, no flush, exactly a crash.

Zero cost when not armed: call sites read one module constant,
``if crash_points.ARMED: crash_points.hit("...")``, bound at import (a global load and a
branch per batch; ``bench`` figures in docs/benchmarks.md). An unknown point name in the
environment is refused at import, so a typo cannot make a test pass by never firing.
"""

from __future__ import annotations

import os
import signal
from typing import Mapping

ENV_AT = "RINGEX_CRASH_AT"
ENV_ONCE = "RINGEX_CRASH_ONCE"

#: Every crash point, and the instant it names. docs/architecture.md ("Crash windows")
#: says what recovery does for each; tests/test_crash_points.py kills at each of the
#: pipeline's, tests/test_gateway_supervision.py at each of the gateway's, tests/test_feed.py
#: at each of the publisher's.
POINTS: Mapping[str, str] = {
    "sequencer.before_publish":
        "engine-ring batch claimed, stamped and its provenance noted, not yet published",
    "sequencer.after_publish":
        "engine-ring batch published, inbound consumer not yet committed",
    "sequencer.refused_after_publish":
        "not accepting: a rejection (or an admin message) published, its inbound slot not yet committed",
    "engine.after_journal":
        "batch appended to the journal, not yet run through the engine",
    "engine.mid_publish":
        "batch run; the first part of its events published on the output ring, not the rest",
    "engine.after_publish":
        "batch's events all published, input consumer not yet committed",
    "journal.segment_created":
        "a new journal segment renamed into place (header only), no record in it yet",
    "journal.mid_record":
        "half of a journal record's bytes written (a torn tail after the crash)",
    "engine.snapshot_forked":
        "the engine forked its snapshot writer, which is still writing",
    "snapshot.before_rename":
        "snapshot written and fsynced under its temporary name, not yet renamed",
    "snapshot.after_rename":
        "snapshot renamed into place, older snapshots not yet pruned",
    "gateway.before_publish":
        "a gateway staged a session's orders and answered a later message of it itself, nothing published yet",
    "gateway.after_publish":
        "a gateway published orders on its inbound ring, not yet counted in their sessions' stores",
    "gateway.after_store":
        "a gateway wrote a batch's events to its sessions' flows, its output cursor not yet committed",
    "feed.after_store":
        "the market-data publisher stored a batch's ITCH messages, not yet sent",
    "feed.after_send":
        "the market-data publisher sent a batch's packets, its output cursor not yet committed",
}


class CrashPointError(ValueError):
    """``RINGEX_CRASH_AT`` names no crash point, or names one badly."""


def parse(spec: str) -> dict[str, int]:
    """``"a@2,b"`` -> ``{"a": 2, "b": 1}``; refuses unknown points and bad hit counts."""
    armed: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition("@")
        if name not in POINTS:
            raise CrashPointError(f"{ENV_AT}: unknown crash point {name!r}; known: {', '.join(POINTS)}")
        try:
            hit_no = int(count) if count else 1
        except ValueError:
            raise CrashPointError(f"{ENV_AT}: {part!r}: the hit after '@' must be an integer") from None
        if hit_no < 1:
            raise CrashPointError(f"{ENV_AT}: {part!r}: the hit must be at least 1")
        armed[name] = hit_no
    return armed


_armed: dict[str, int] = parse(os.environ.get(ENV_AT, ""))
_once: str | None = os.environ.get(ENV_ONCE) or None
_hits: dict[str, int] = {}

#: True when this process has a crash point armed. Call sites test it before calling ``hit``.
ARMED: bool = bool(_armed)


def hit(name: str) -> None:
    """Count a pass through ``name``; SIGKILL this process if it is the armed hit."""
    want = _armed.get(name)
    if want is None:
        if name not in POINTS:
            raise CrashPointError(f"crash point {name!r} is not declared in POINTS")
        return
    n = _hits.get(name, 0) + 1
    _hits[name] = n
    if n != want:
        return
    if _once is not None:
        try:
            os.close(os.open(os.path.join(_once, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return  # an earlier incarnation already died here: run on
    os.kill(os.getpid(), signal.SIGKILL)
