"""``OutputPosition`` (engine/storage/output_replay.py): where an output-ring subscriber has
read to, in memory at every commit and on disk at most every ``WRITE_EVERY_NS`` and at close;
what a restarted subscriber reads back is a position it had reached, never one beyond it."""

from __future__ import annotations

import numpy as np

from ringex.engine.storage.output_replay import OUTPUT_POSITION, OutputPosition
from ringex.engine.wire import messages as m

RING = 1_700_000_000_000_000_000


def events(*seqs: int) -> np.ndarray:
    """Ring slots whose stamp seq words are ``seqs`` (all the position needs of an event)."""
    rows = np.zeros((len(seqs), m.SLOT_SIZE), np.uint8)
    at = m.OrderAccepted.offset("seq")
    for i, seq in enumerate(seqs):
        rows[i, at:at + 8] = np.frombuffer(int(seq).to_bytes(8, "little"), np.uint8)
    return rows


def test_the_file_lags_at_most_the_write_interval_and_close_writes_the_last(tmp_path) -> None:
    p = OutputPosition(tmp_path, RING)
    p.advance(events(7, 7, 8), 3)  # the first commit is written
    p.WRITE_EVERY_NS = 10**15  # (for the test: nothing more until close)
    p.advance(events(8, 9), 5)
    assert (p.position, p.seq, p.rank) == (5, 9, 0)  # in memory: current
    again = OutputPosition(tmp_path, RING)
    assert (again.position, again.seq, again.rank) == (3, 8, 0)  # on disk: a position it had reached
    again.close()
    p.close()
    last = OutputPosition(tmp_path, RING)
    assert (last.position, last.seq, last.rank) == (5, 9, 0)
    last.close()
    assert (tmp_path / OUTPUT_POSITION).stat().st_size == 32


def test_another_ring_incarnation_starts_from_nothing(tmp_path) -> None:
    p = OutputPosition(tmp_path, RING)
    p.advance(events(1), 1)
    p.close()
    other = OutputPosition(tmp_path, RING + 1)
    assert (other.position, other.seq, other.rank) == (-1, 0, -1)
    other.close()


def test_the_last_inputs_rank_is_counted_across_batches_whatever_the_run(tmp_path) -> None:
    """Each input's events are contiguous: after every commit, ``seq`` is the last event's
    input and ``rank`` its index among that input's events, for runs short and long (the
    position walks the short ones event by event), in a batch and across batches."""
    rng = np.random.default_rng(11)
    runs = [int(x) for x in rng.choice([1, 1, 2, 3, 7, 8, 9, 20, 300], 400)]
    stream = np.concatenate([np.full(r, 1000 + i, np.int64) for i, r in enumerate(runs)])
    p = OutputPosition(tmp_path, RING)
    at = 0
    while at < len(stream):
        k = int(rng.choice([1, 2, 5, 8, 9, 16, 64, 700]))
        batch = stream[at:at + k]
        at += len(batch)
        p.advance(events(*batch.tolist()), at)
        last = int(stream[at - 1])
        assert (p.position, p.seq, p.rank) == (at, last, int(np.count_nonzero(stream[:at] == last)) - 1)
    p.close()
