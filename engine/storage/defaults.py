"""The journal and snapshot settings' defaults, each defined once.

The ``[journal]`` configuration section (:class:`ringex.tools.config.JournalSection`), the
engine agent, :class:`~ringex.engine.storage.journal_writer.JournalWriter` and
:func:`~ringex.engine.storage.snapshot.write_snapshot` take their defaults from here.
"""

from __future__ import annotations

from ringex.engine.storage.journal_format import DURABILITY_BATCH

#: When the journal is fdatasynced: after every appended batch (group commit).
DURABILITY = DURABILITY_BATCH
#: Under ``interval`` durability, the most milliseconds between syncs.
INTERVAL_MS = 10
#: A new segment is started once the current one would grow past this.
SEGMENT_BYTES = 64 << 20
#: Bytes the journal writer allocates ahead of its records at a time (journal_format,
#: "Reserved space"); 0 appends by growing the file.
RESERVE_BYTES = 4 << 20
#: Input messages between periodic snapshots.
SNAPSHOT_EVERY = 1_000_000
#: Snapshots kept (the newest ones); the journal is kept from the oldest of them on.
SNAPSHOTS_KEPT = 3
#: Who writes the periodic snapshots: ``shadow``, a second engine process that follows the
#: journal (the engine never stops for a snapshot); ``fork``, a child forked from the engine
#: writes a copy-on-write image beside it (the engine stops for the fork, 4-7 ms); ``inline``,
#: the engine's own thread (a stop of about half a second at the default arena).
SNAPSHOT_WRITERS = ("shadow", "fork", "inline")
SNAPSHOT_WRITER = "shadow"
