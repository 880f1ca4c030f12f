"""Journal retention: segments the oldest kept snapshot covers leave the live directory.

:func:`retire_segments` takes, oldest first, every segment whose messages all have a
sequence below ``before_seq`` (the next segment starts at or before it), never the last
segment (the writer appends to it).  Without an archive directory such a segment is
deleted; with one it is moved there gzip-compressed, as ``journal-<first seq>.log.gz``
(:func:`~ringex.engine.storage.journal_format.archived_name`).  The engine agent, which
holds the journal's lock, calls it once at start-up and, through :class:`RetentionWorker`
(a thread of its own: compressing must not stop the engine), after each periodic snapshot
(once the snapshots beyond ``snapshots_kept`` are pruned) with the oldest kept snapshot's
sequence: the live journal then holds about ``snapshots_kept * snapshot_every`` messages
plus a segment, and recovery can still fall back to any kept snapshot.  A reader
(:class:`~ringex.engine.storage.journal_reader.JournalReader`) reads the archive and the
live directory as one journal, so a whole day still replays, to the same output hash.

Why gzip (level 1) and not lzma: the engine waits while a segment is compressed, so speed
comes first.  Measured on the test venue's segments (one loaded 2-core host): gzip level 1
compresses at ~75 MB/s to 1/10, level 6 at ~28 MB/s to 1/15, lzma's fastest preset at
~29 MB/s to 1/35 and its default at ~2 MB/s; gzip also decompresses faster (a replay reads
the archive), its trailer (CRC-32 and length) detects a damaged file by itself, and
``zcat`` reads one anywhere.  ``mtime`` is 0, so a segment always compresses to the same
bytes.

Crash points
------------
Each step is durable before the next starts, and segments go oldest first, so at every point
the live directory holds a suffix of the journal and the archive a prefix, overlapping in at
most one segment: no message is ever missing.  Archiving segment ``S`` (``journal-N.log``):

1. Its compressed copy is written to ``<archive>/journal-N.log.gz.tmp`` and fsynced.  A kill
   here leaves a temporary, partial or complete, that no reader looks at: the next pass
   (the next start at the latest) removes every such temporary first, then archives ``S``
   again from its live copy.
2. The temporary is renamed to ``journal-N.log.gz`` and the archive directory fsynced.  A
   kill before the fsync leaves either the temporary (point 1) or the archived copy (3).
3. ``S`` is renamed to ``.retiring-journal-N.log`` (no longer a segment to any reader) and
   the journal directory fsynced, then shrunk a few MiB at a time and unlinked
   (:func:`_delete_gently`).  A kill before the rename, or before the fsync made it
   durable, leaves ``S`` both archived and live.  Readers take the live
   copy (the same bytes); the next pass checks that the archived copy decompresses to
   exactly ``S``'s bytes and only then unlinks ``S`` (if it does not, it archives ``S`` again
   from point 1, with a warning).

Deleting (no archive): ``S`` is renamed, the directory fsynced, and the file deleted gently
as in step 3; a kill before the rename leaves ``S`` live, and the next pass deletes it; a
kill after it leaves a ``.retiring-`` file, which the next pass deletes.

Why gently: one unlink of a 64 MiB segment frees all its blocks in one file-system
transaction, and the engine's next journal fdatasync, which commits that transaction, took
15-19 ms beside it here (docs/benchmarks.md).  Shrunk a few MiB at a time with a pause
between (:mod:`~ringex.engine.storage.gentle_unlink`), each commit carries only a little of it.

Where the archive is: the journal directory names it in ``.archive`` (relative to the
journal directory when the archive is inside the data directory, so a copied data directory
stays readable; absolute otherwise), written atomically when the engine starts with an
archive configured and removed when it starts without one.  ``ringex replay``, ``ringex
journal dump`` and recovery find it there.
"""

from __future__ import annotations

import gzip
import logging
import os
import threading
from pathlib import Path

from ringex.engine.storage.fsync import fsync_directory
from ringex.engine.storage.gentle_unlink import shrink_and_unlink
from ringex.engine.storage.journal_format import (
    ARCHIVE_SUFFIX,
    TEMP_SUFFIX,
    JournalCorruptError,
    archived_name,
    list_segments,
)
from ringex.engine.storage.journal_scan import read_segment

log = logging.getLogger(__name__)

#: In the journal directory: the path of its archive directory.
ARCHIVE_POINTER = ".archive"
#: Deflate level: the fastest (see the module notes); a 64 MiB segment takes about a second.
COMPRESS_LEVEL = 1
_ARCHIVE_TEMP_SUFFIX = ARCHIVE_SUFFIX + TEMP_SUFFIX
#: A retired segment's name while it is being deleted.
RETIRING_PREFIX = ".retiring-"


def covered_segments(journal_dir: Path | str, before_seq: int) -> list[tuple[int, Path]]:
    """The live segments whose messages all have sequence ``< before_seq``, oldest first;
    never the last segment."""
    segs = list_segments(journal_dir)
    out = []
    for i in range(len(segs) - 1):
        if segs[i + 1][0] > before_seq:
            break
        out.append(segs[i])
    return out


def retire_segments(
    journal_dir: Path | str, before_seq: int, archive_dir: Path | str | None = None
) -> list[Path]:
    """Delete, or with ``archive_dir`` archive, every segment ``before_seq`` covers (see the
    module notes); finishes what a crash interrupted first.  Returns the live paths that
    left the journal directory.  The caller holds the journal's lock."""
    journal_dir = Path(journal_dir)
    archive = None if archive_dir is None else Path(archive_dir)
    if archive is not None:
        if archive.resolve() == journal_dir.resolve():
            raise ValueError(f"the journal archive {archive} is the journal directory itself")
        _prepare_archive(archive)
    for entry in os.scandir(journal_dir):  # deletions a crash interrupted
        if entry.name.startswith(RETIRING_PREFIX) and entry.is_file():
            shrink_and_unlink(Path(entry.path))
    retired = []
    for first, path in covered_segments(journal_dir, before_seq):
        if archive is not None:
            _archive_segment(first, path, archive)
        _delete_gently(path)
        retired.append(path)
    return retired


def _delete_gently(path: Path) -> None:
    """Take a segment out of the journal at once (a durable rename), then free its blocks a
    little at a time (see the module notes)."""
    doomed = path.with_name(RETIRING_PREFIX + path.name)
    os.replace(path, doomed)
    fsync_directory(path.parent)
    shrink_and_unlink(doomed)


class RetentionWorker:
    """Runs :func:`retire_segments` on a thread of its own, so that compressing a segment
    (about a second for 64 MiB at gzip level 1) never stops the engine's duty cycle.

    :meth:`request` asks for every segment before ``before_seq`` to be retired and returns
    at once; requests that arrive while a pass runs are merged into the next pass (only the
    highest ``before_seq`` matters). zlib and the file system calls release the GIL, so the
    pass runs beside the engine on a second core. The crash points are those of the module
    notes, whichever thread is killed: a pass does the same steps in the same order.
    :meth:`close` lets the pending pass finish (bounded) before the caller gives up the
    journal's lock. A pass that fails (a full disk, say) is logged and tried again at the
    next request; nothing is lost, the segments stay live.
    """

    def __init__(self, journal_dir: Path | str, archive_dir: Path | str | None) -> None:
        self.journal_dir = Path(journal_dir)
        self.archive_dir = None if archive_dir is None else Path(archive_dir)
        self._cond = threading.Condition()
        self._wanted = 0  # retire everything before this sequence
        self._done = 0  # the last pass covered everything before this one
        self._stopping = False
        self.passes = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="journal-retention", daemon=True)
        self._thread.start()

    def request(self, before_seq: int) -> None:
        with self._cond:
            if before_seq > self._wanted:
                self._wanted = before_seq
                self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        """Until every request so far is done; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._done >= self._wanted, timeout)

    def close(self, timeout: float = 120.0) -> bool:
        """Finish the pending pass, then stop; False when it did not finish in ``timeout``
        (the next start completes it: see the module's crash points)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._wanted > self._done)
                if self._wanted <= self._done:
                    return  # stopping, nothing pending
                before_seq = self._wanted
            try:
                retired = retire_segments(self.journal_dir, before_seq, self.archive_dir)
            except Exception:  # a failed pass must not end the thread: the next request retries
                log.exception("journal: retiring segments before seq %d failed; they stay live",
                              before_seq)
                with self._cond:
                    self.failures += 1
                    self._done = before_seq  # retried at the next request, not in a loop
                    self._cond.notify_all()
                continue
            if retired:
                log.info("journal: %s %d segment(s) before seq %d",
                         "archived" if self.archive_dir is not None else "deleted", len(retired),
                         before_seq)
            with self._cond:
                self.passes += 1
                self._done = before_seq
                self._cond.notify_all()


def _prepare_archive(archive: Path) -> None:
    """Create the archive directory (durably) and remove temporaries a crash left there."""
    if not archive.is_dir():
        archive.mkdir(parents=True, exist_ok=True)
        fsync_directory(archive.parent)
    removed = False
    for entry in os.scandir(archive):
        if entry.name.endswith(_ARCHIVE_TEMP_SUFFIX):
            log.warning("journal: removing leftover archive temporary %s", entry.path)
            os.unlink(entry.path)
            removed = True
    if removed:
        fsync_directory(archive)


def _archive_segment(first_seq: int, path: Path, archive: Path) -> None:
    """Put a durable, complete compressed copy of segment ``path`` in ``archive``."""
    data = read_segment(path)
    final = archive / archived_name(first_seq)
    if final.exists():
        # A kill between the rename and the unlink of the live segment (crash point 3).
        try:
            if read_segment(final) == data:
                return
        except JournalCorruptError:
            pass
        log.warning("journal: archived %s differs from live %s; archiving it again", final, path)
    tmp = final.with_name(final.name + TEMP_SUFFIX)
    blob = gzip.compress(data, compresslevel=COMPRESS_LEVEL, mtime=0)
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_directory(archive)


# --- where the archive is ----------------------------------------------------------------


def record_archive_dir(journal_dir: Path | str, archive_dir: Path | str | None) -> None:
    """Name ``archive_dir`` in the journal directory (atomically) for readers to find; with
    ``None`` (segments are deleted now) stop naming one: an archive that no longer continues
    would leave a gap before the live journal."""
    journal_dir = Path(journal_dir)
    pointer = journal_dir / ARCHIVE_POINTER
    if archive_dir is None:
        if pointer.exists():
            log.info("journal: no archive configured; %s no longer names %s",
                     journal_dir, archive_dir_of(journal_dir))
            pointer.unlink()
            fsync_directory(journal_dir)
        return
    archive = Path(archive_dir).resolve()
    data_dir = journal_dir.resolve().parent
    if archive.is_relative_to(data_dir):
        text = os.path.relpath(archive, journal_dir.resolve())
    else:
        text = str(archive)
    if pointer.exists() and pointer.read_text(encoding="utf-8") == text:
        return
    tmp = pointer.with_name(pointer.name + TEMP_SUFFIX)  # a kill leaves it: rewritten next time
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, pointer)
    fsync_directory(journal_dir)


def archive_dir_of(journal_dir: Path | str) -> Path | None:
    """The archive directory the journal directory names, ``None`` when it names none."""
    try:
        text = (Path(journal_dir) / ARCHIVE_POINTER).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    # (an absolute text replaces the journal directory; a relative one was made from the
    # resolved journal directory, so ".." is resolved the same way)
    return (Path(journal_dir).resolve() / text).resolve()
