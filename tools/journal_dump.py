"""``ringex journal dump DIR``: print journaled messages decoded by the schema, one a line.

Segments retention archived are read from the archive the journal directory names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ringex.engine.wire import messages as m
from ringex.engine.wire.codec import CodecError
from ringex.engine.storage.journal_format import JournalError
from ringex.engine.storage.journal_reader import JournalReader
from ringex.tools.replay import locate


def format_message(seq: int, slot: bytes | memoryview) -> str:
    try:
        d = m.SCHEMA.decode(slot)
    except CodecError as exc:
        return f"{seq} <undecodable: {exc}>"
    fields = " ".join(
        f"{k}={v.name if hasattr(v, 'name') else v}"
        for k, v in d.fields.items() if k != "seq"
    )
    return f"{seq} {d.name} {fields}"


def dump(directory: Path, from_seq: int | None, to_seq: int | None, types: set[str] | None,
         out=sys.stdout) -> int:
    try:
        jdir, _ = locate(directory)
    except FileNotFoundError:
        jdir = directory
    wanted_ids = None
    if types:
        unknown = types - set(m.SCHEMA.by_name)
        if unknown:
            raise ValueError(f"unknown message type(s) {sorted(unknown)}; known: {sorted(m.SCHEMA.by_name)}")
        wanted_ids = {m.SCHEMA.by_name[t].template_id for t in types}
    n = 0
    stop = None if to_seq is None else to_seq + 1
    for seq, slot in JournalReader(jdir).iter_messages(from_seq, stop):
        if wanted_ids is not None and int.from_bytes(slot[2:4], "little") not in wanted_ids:
            continue
        print(format_message(seq, slot), file=out)
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ringex journal dump", description=__doc__)
    p.add_argument("directory", type=Path, help="data directory or journal directory")
    p.add_argument("--from", dest="from_seq", type=int, default=None, help="first sequence (inclusive)")
    p.add_argument("--to", dest="to_seq", type=int, default=None, help="last sequence (inclusive)")
    p.add_argument("--type", dest="types", action="append", default=None,
                   help="message type to show (repeatable), e.g. NewOrder")
    args = p.parse_args(argv)
    try:
        dump(args.directory, args.from_seq, args.to_seq, set(args.types) if args.types else None)
    except (ValueError, JournalError, FileNotFoundError) as exc:
        print(f"ringex journal dump: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
