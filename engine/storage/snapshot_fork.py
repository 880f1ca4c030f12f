"""Snapshots off the engine's thread: a forked child writes the arena as of the fork.

The engine's state is one int64 arena (107 MB at the embedded default). Copying it in place
took about 330-540 ms and writing it 120-420 ms more, all of it a stop of the duty cycle. A
``fork()`` instead gives a child process the arena as it is at that instant, copy-on-write:
the child writes the snapshot file while the engine goes on matching, and only the pages the
engine writes meanwhile are copied, one page fault each (a few microseconds), spread over
the whole write. The engine's pause is the fork itself: duplicating the page tables, about
3-7 ms for the engine process here (docs/benchmarks.md, "Snapshots off the hot path").

The child's whole life: die with the parent (``PR_SET_PDEATHSIG``: an engine SIGKILLed
mid-snapshot takes its writer with it, so no orphan renames a file under a restarted
engine), sync the journal (the snapshot must never be ahead of a durable journal: the fd
is the engine's current segment, inherited; earlier segments were synced when they were
rolled), write the snapshot with :func:`~ringex.engine.storage.snapshot.write_snapshot`
(the oldest kept snapshot's file recycled where ``snapshots_kept`` exist already, so that
only the blocks that changed since it are written; the arena's pages with O_DIRECT so that
nothing is left dirty for the journal's fdatasync to wait on; fsync, rename, directory
fsync, prune), then ``os._exit``: no ``atexit``,
no finalizer, no flush of anything the engine owns. Only this thread survives a fork, so
the child touches no lock another thread of the engine might hold (it does not log).

Crash semantics are those of ``write_snapshot``, whoever dies: a child killed before its
rename leaves a temporary file named with its pid, removed at the next start; after it, the
snapshot is complete. Recovery is unchanged: newest valid snapshot plus the journal after it.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ringex import crash_points
from ringex.engine.storage import defaults
from ringex.engine.storage.background import die_with_parent, yield_to_the_engine
from ringex.engine.storage.fsync import fdatasync
from ringex.engine.storage.snapshot import write_snapshot

_CRASH = crash_points.ARMED


@dataclass(frozen=True)
class SnapshotDone:
    """A background snapshot that finished: ``ok`` or not (then ``detail`` says why)."""

    seq: int
    ok: bool
    detail: str
    fork_ms: float  # how long the engine's thread stood still for it
    elapsed_s: float  # from the fork to the child's exit


class ForkedSnapshots:
    """At most one snapshot child at a time; :meth:`poll` reaps it without blocking."""

    def __init__(self, directory: Path | str, keep: int = defaults.SNAPSHOTS_KEPT) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self._pid = 0
        self._seq = 0
        self._started = 0.0
        self._fork_ms = 0.0
        self.taken = 0
        self.failed = 0

    @property
    def in_flight(self) -> bool:
        return self._pid != 0

    def start(self, seq: int, arena: np.ndarray, meta: Mapping[str, Any], journal_fd: int = -1) -> bool:
        """Fork a child that writes ``arena`` (as of now) as the snapshot at ``seq``;
        False (nothing started) while the previous one still runs."""
        if self._pid:
            return False
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            self._child(seq, arena, meta, journal_fd)
        self._fork_ms = (time.perf_counter() - t0) * 1e3
        self._pid, self._seq, self._started = pid, seq, time.monotonic()
        if _CRASH:
            crash_points.hit("engine.snapshot_forked")
        return True

    def _child(self, seq: int, arena: np.ndarray, meta: Mapping[str, Any], journal_fd: int) -> None:
        code = 1
        try:
            gc.disable()  # collect nothing the parent owns (a finalizer could unlink a ring)
            die_with_parent()
            yield_to_the_engine()
            if journal_fd >= 0:
                fdatasync(journal_fd)
            write_snapshot(self.directory, seq, {"arena": arena}, meta, keep=self.keep, direct=True,
                           recycle=True)
            code = 0
        except BaseException:
            try:
                sys.stderr.write(f"snapshot {seq}: background writer failed:\n{traceback.format_exc()}")
                sys.stderr.flush()
            except BaseException:
                pass
        finally:
            os._exit(code)

    def poll(self) -> SnapshotDone | None:
        """The finished snapshot, once (None while it runs, or when none was started)."""
        if not self._pid:
            return None
        pid, status = os.waitpid(self._pid, os.WNOHANG)
        if pid == 0:
            return None
        return self._reaped(status)

    def wait(self, timeout: float) -> SnapshotDone | None:
        """Block (bounded) until the running snapshot ends; None if none runs or it is late."""
        deadline = time.monotonic() + timeout
        while self._pid:
            done = self.poll()
            if done is not None:
                return done
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
        return None

    def kill(self) -> None:
        """Stop a running child (its temporary file is removed at the next start)."""
        if self._pid:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _pid, status = os.waitpid(self._pid, 0)
            self._reaped(status)

    def _reaped(self, status: int) -> SnapshotDone:
        code = os.waitstatus_to_exitcode(status)
        done = SnapshotDone(
            seq=self._seq, ok=code == 0,
            detail="written" if code == 0 else (f"writer exited with {code}" if code > 0 else f"writer killed by signal {-code}"),
            fork_ms=self._fork_ms, elapsed_s=time.monotonic() - self._started,
        )
        self._pid = 0
        if done.ok:
            self.taken += 1
        else:
            self.failed += 1
        return done
