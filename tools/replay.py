"""``ringex replay DIR``: run the engine over a journal and hash its output stream.

The hash covers every event's message bytes in order; a live run's output (as a consumer of
the output ring saw it) hashes to the same value, which is what makes the journal the
source of truth. DIR is an exchange data directory (holding ``journal/`` and
``engine.json``) or the journal directory itself (``engine.json`` one level up). Segments
retention archived are read from the archive the journal directory names.

When the journal no longer starts at the first message (retention deleted the segments
before the oldest kept snapshot: no ``[journal] archive_dir``), the replay starts from the
snapshot recovery would use (:mod:`ringex.engine.storage.recovery`); ``from_snapshot``
says at which sequence, and the hash covers the events after it only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ringex.engine.pipeline.engine_agent import (
    ENGINE_FILE,
    EngineStateError,
    read_engine_file,
    stream_hash,
    update_stream_hash,
)
from ringex.engine.storage.journal_format import JournalError
from ringex.engine.storage.journal_reader import JournalReader
from ringex.engine.storage.recovery import FIRST_SEQ, record_slots, recover_engine


def locate(path: Path) -> tuple[Path, Path]:
    """(journal directory, data directory) for a path naming either."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such directory")
    if (path / "journal").is_dir():
        return path / "journal", path
    if (path.parent / ENGINE_FILE).exists():
        return path, path.parent
    raise FileNotFoundError(f"{path}: no journal/ here and no {ENGINE_FILE} beside it")


def replay(path: Path | str) -> dict:
    """Replay the whole journal (from a snapshot when its start is gone, see the module
    notes); returns the figures and the hash."""
    from ringex.engine.engine import MatchingEngine

    jdir, ddir = locate(Path(path))
    cfg = read_engine_file(ddir)
    if cfg is None:
        raise FileNotFoundError(f"{ddir / ENGINE_FILE} is missing: cannot know the engine configuration")
    h = stream_hash()
    messages = events = 0
    first = last = None
    start = time.perf_counter()
    journal_first = JournalReader(jdir).first_seq
    from_snapshot = None
    if journal_first is None or journal_first <= FIRST_SEQ:
        engine = MatchingEngine(cfg)
        batches = ((rec, engine.process(record_slots(rec))) for rec in JournalReader(jdir).records())
    else:
        _engine, from_snapshot, _events, batches = recover_engine(cfg, ddir)
    for rec, out in batches:
        update_stream_hash(h, out)
        messages += rec.count
        events += len(out)
        first = rec.first_seq if first is None else first
        last = rec.first_seq + rec.count - 1
    elapsed = time.perf_counter() - start
    return {
        "messages": messages,
        "events": events,
        "first_seq": first,
        "last_seq": last,
        "from_snapshot": from_snapshot,
        "seconds": round(elapsed, 6),
        "msgs_per_s": messages / elapsed if elapsed > 0 else 0.0,
        "output_sha256": h.hexdigest(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ringex replay", description=__doc__.splitlines()[0])
    p.add_argument("directory", type=Path, help="data directory or journal directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:
        result = replay(args.directory)
    except (FileNotFoundError, JournalError, EngineStateError) as exc:
        print(f"ringex replay: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        if result["from_snapshot"] is not None:
            print(f"from the snapshot at seq {result['from_snapshot']} (the journal before it "
                  "was deleted; [journal] archive_dir keeps it)")
        print(f"messages {result['messages']} (seq {result['first_seq']}..{result['last_seq']}), "
              f"events {result['events']}, {result['msgs_per_s']:,.0f} msg/s")
        print(f"output sha256 {result['output_sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
