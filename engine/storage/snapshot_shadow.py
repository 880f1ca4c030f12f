"""Snapshots by a shadow engine: a second engine, in a process of its own, follows the journal
and writes the periodic snapshots, so the engine itself never stops for one.

Why not the fork (``snapshot_fork``): the fork stops the engine while the kernel copies its
page tables, 4-7 ms for the bench's engine process (2.4 ms of it numba's and LLVM's memory,
the rest the arena, more after each snapshot as copy-on-write splits its huge pages), and
the first write to each page afterwards faults (3.3 us a page). With three snapshots in the
bench's paced phase those stops alone were its p99.9 (docs/benchmarks.md). The shadow costs
the engine nothing: it reads the journal files, not the rings, so it gates no producer and
may fall behind under a flood (it runs at the lowest CPU and I/O priority) and catch up
after. The price is a second arena's memory and the CPU to apply every message twice; on a
host with cores to spare it is also a warm copy of the state (the LMAX way).

The shadow's whole life (:func:`main`, run as ``python -m ringex.engine.storage.snapshot_shadow``
by :class:`ShadowSnapshots` in the engine's process):

1. Die with the engine (``PR_SET_PDEATHSIG``), lowest CPU and I/O priority.
2. Recover as the engine does: newest valid snapshot, then the journal after it.
3. Follow the journal (:class:`~ringex.engine.storage.journal_follower.JournalFollower`),
   applying each record; after every ``snapshot_every`` messages, make the journal durable
   up to there (a snapshot is never ahead of a durable journal), write the snapshot
   (``write_snapshot(..., recycle=True, direct=True)``) and report ``written <seq>`` on its
   standard output, which the engine reads to count it and to retire journal segments.

Its snapshot at a sequence is the engine's state at that sequence byte for byte: the engine
is deterministic and the journal holds every message it applied (tests prove it against a
snapshot taken in place). A shadow that dies is started again by the engine after
``RESTART_DELAY_S``; one killed while writing leaves a temporary file, removed at the next
start. The engine stops it before writing its own final snapshot at close.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from ringex.engine.config import EngineConfig
from ringex.engine.storage import defaults
from ringex.engine.storage.background import die_with_parent, yield_to_the_engine
from ringex.engine.storage.data_dir import journal_dir, snapshot_dir
from ringex.engine.storage.journal_follower import JournalFollower
from ringex.engine.storage.snapshot import clean_temporaries

log = logging.getLogger(__name__)

#: How long the shadow sleeps when the journal has nothing new (it never spins).
IDLE_S = 0.002
#: A shadow that died is started again this long after (its error is in the engine's log).
RESTART_DELAY_S = 1.0
#: How long :meth:`ShadowSnapshots.close` waits for the shadow to exit after SIGTERM.
STOP_TIMEOUT_S = 5.0


class ShadowSnapshots:
    """The engine's side: starts the shadow, reads its reports, restarts it when it dies."""

    def __init__(self, data_dir: Path | str, config: EngineConfig, snapshot_every: int,
                 keep: int = defaults.SNAPSHOTS_KEPT) -> None:
        self.data_dir = Path(data_dir)
        self.config = config
        self.snapshot_every = snapshot_every
        self.keep = keep
        self._proc: subprocess.Popen | None = None
        self._pending = b""
        self._restart_at = 0.0
        self.taken = 0
        self.failed = 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        spec = {
            "data_dir": str(self.data_dir), "engine": msgspec.to_builtins(self.config),
            "snapshot_every": self.snapshot_every, "keep": self.keep, "parent": os.getpid(),
            "log_level": logging.getLogger().getEffectiveLevel(),
        }
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", __name__, json.dumps(spec)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, close_fds=True,
            )
        except OSError as exc:  # no memory or process slot: the journal still holds everything
            self.failed += 1
            self._restart_at = time.monotonic() + RESTART_DELAY_S
            log.error("engine: cannot start the snapshot shadow (%s); trying again in %.0f s",
                      exc, RESTART_DELAY_S)
            return
        assert self._proc.stdout is not None
        os.set_blocking(self._proc.stdout.fileno(), False)
        self._pending = b""

    def poll(self) -> list[int]:
        """The sequences of the snapshots written since the last call (never blocks); starts
        the shadow again once ``RESTART_DELAY_S`` has passed since it died."""
        proc = self._proc
        if proc is None:
            if time.monotonic() >= self._restart_at:
                self.start()
            return []
        written = self._read_reports(proc)
        code = proc.poll()
        if code is not None:
            written += self._read_reports(proc)
            proc.stdout.close()  # type: ignore[union-attr]
            self._proc = None
            self.failed += 1
            self._restart_at = time.monotonic() + RESTART_DELAY_S
            log.error("engine: the snapshot shadow (pid %d) exited with %d; starting another in %.0f s",
                      proc.pid, code, RESTART_DELAY_S)
        return written

    def _read_reports(self, proc: subprocess.Popen) -> list[int]:
        try:
            chunk = os.read(proc.stdout.fileno(), 65536)  # type: ignore[union-attr]
        except BlockingIOError:
            return []
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        out = []
        for line in lines:
            word, _, seq = line.decode(errors="replace").partition(" ")
            if word == "written" and seq.isdigit():
                out.append(int(seq))
                self.taken += 1
        return out

    def close(self) -> None:
        """Stop the shadow (bounded: SIGTERM, then SIGKILL)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
        proc.stdout.close()  # type: ignore[union-attr]
        # one stopped while writing left its temporary file; it is not coming back for it
        clean_temporaries(snapshot_dir(self.data_dir))


# ---------------------------------------------------------------------- the shadow process


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    die_with_parent()
    parent = int(spec["parent"])
    if os.getppid() != parent:
        return 0  # the engine died before we could ask to die with it
    yield_to_the_engine()
    logging.basicConfig(level=int(spec.get("log_level", logging.INFO)), stream=sys.stderr,
                        format="%(asctime)s snapshot-shadow[%(process)d] %(levelname)s %(message)s")
    # imported here: the engine's side of this module needs none of it
    from ringex.engine.engine import warm_up
    from ringex.engine.storage.recovery import record_slots, recover_engine
    from ringex.engine.storage.snapshot import write_snapshot
    from ringex.engine.wire import messages as m

    config = msgspec.convert(spec["engine"], EngineConfig)
    data_dir = Path(spec["data_dir"])
    every, keep = int(spec["snapshot_every"]), int(spec["keep"])
    warm_up()
    engine, seq, events_total, replay = recover_engine(config, data_dir)
    snapped = seq  # the snapshot recovered from (or 0)
    for rec, events in replay:
        events_total += len(events)
        seq = rec.next_seq
    follower = JournalFollower(journal_dir(data_dir), seq, m.SLOT_SIZE)
    meta = {"schema": m.SCHEMA.fingerprint, "engine": spec["engine"]}
    log.info("following the journal from seq %d (last snapshot at %d)", seq, snapped)
    out = sys.stdout.buffer
    while True:
        # Due after a whole read, not after each record: a shadow catching up with a flood
        # reads 8 MiB at a time and snapshots as it goes, not every snapshot_every behind.
        if seq - snapped >= every:
            t0 = time.monotonic()
            follower.sync()
            write_snapshot(snapshot_dir(data_dir), seq, {"arena": engine.state.arena},
                           {**meta, "events_total": events_total}, keep=keep, direct=True,
                           recycle=True)
            snapped = seq
            out.write(f"written {seq}\n".encode())
            out.flush()
            log.debug("snapshot at seq %d written in %.2f s", seq, time.monotonic() - t0)
        records = follower.read()
        if not records:
            if os.getppid() != parent:
                return 0
            time.sleep(IDLE_S)
            continue
        for rec in records:
            events_total += len(engine.process(record_slots(rec)))
            seq = rec.next_seq


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(0)
