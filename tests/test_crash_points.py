"""Every crash point, fired in the real exchange: killed there, restarted, nothing lost or repeated.

For each point of ``ringex.crash_points.POINTS``: an exchange (the launcher's real processes,
sequencer and engine apart) is started with the point armed in the environment, orders
flow in closed-loop chunks from a gateway ring, the armed process SIGKILLs itself at the
point, the supervisor restarts it, and the flow finishes. Then, from a subscriber's view:

* the point fired (its marker file exists) and the dead process was restarted once;
* every order was answered exactly once (accepted or rejected by the engine, or refused on
  the reject ring while the exchange was not accepting), none twice, none never;
* the output has no gap and no duplicate: the live stream's hash equals the hash of a
  replay of the journal, and the sequence numbers it carries never go back;
* the journal holds sequences 1..n once each, and each order the engine answered once
  (``pipeline_kit.assert_exactly_once``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline_kit import OutputReader, assert_exactly_once, attached, make_config, order_bytes, pump, quiet_for
from ringex import crash_points
from ringex.ringbuffer.control import REASON_PROCESS_DIED
from ringex.tools.launcher import Exchange

ORDERS = 800  # > one 64 KiB journal segment of 128-byte slots, so a roll falls mid-flow
CHUNK = 20  # closed loop: each chunk answered before the next, so batches stay small and many


@dataclass(frozen=True)
class Case:
    point: str
    hit: int  # which pass through the point kills: past the admin start-up, inside the flow
    process: str  # which process dies: "seq" or "eng" (the split topology's), or "none" (the snapshot writer, a child of the engine)
    refuse_from_chunk: int | None = None  # withdraw acceptance from this chunk on


CASES = {
    "sequencer.before_publish": Case("sequencer.before_publish", 10, "seq"),
    "sequencer.after_publish": Case("sequencer.after_publish", 10, "seq"),
    "sequencer.refused_after_publish": Case("sequencer.refused_after_publish", 3, "seq", refuse_from_chunk=10),
    "engine.after_journal": Case("engine.after_journal", 10, "eng"),
    "engine.mid_publish": Case("engine.mid_publish", 10, "eng"),
    "engine.after_publish": Case("engine.after_publish", 10, "eng"),
    "journal.segment_created": Case("journal.segment_created", 2, "eng"),
    "journal.mid_record": Case("journal.mid_record", 10, "eng"),
    "engine.snapshot_forked": Case("engine.snapshot_forked", 1, "eng"),
    "snapshot.before_rename": Case("snapshot.before_rename", 1, "none"),
    "snapshot.after_rename": Case("snapshot.after_rename", 1, "none"),
}


def test_every_crash_point_has_a_case() -> None:
    """The gateway's points have theirs in tests/test_gateway_supervision.py (clients over TCP),
    the market-data publisher's in tests/test_feed.py (subscribers over UDP)."""
    assert sorted(CASES) == sorted(p for p in crash_points.POINTS if not p.startswith(("gateway.", "feed.")))


def _run_flow(exchange: Exchange, reader: OutputReader, producer, case: Case, marker: Path) -> None:
    msgs = order_bytes(1, ORDERS)
    for c, first in enumerate(range(0, ORDERS, CHUNK)):
        refusing = case.refuse_from_chunk is not None and c >= case.refuse_from_chunk and not marker.exists()
        if refusing:
            exchange._control.refuse(REASON_PROCESS_DIED)  # as the supervisor would
        pending = msgs[first:first + CHUNK]
        want = set(range(first + 1, first + 1 + len(pending)))

        def step() -> bool:
            while pending and producer.offer(pending[0]):
                pending.pop(0)
            return not pending and want <= reader.answers.keys()

        if refusing:
            # the supervisor must not re-accept until the point has fired; then it runs
            # again, restarts the dead process and accepts when all is well
            pump(exchange, reader, lambda: step() or marker.exists(), timeout=120, supervise=False)
        pump(exchange, reader, step, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(CASES))
def test_killed_at_a_crash_point_the_exchange_loses_and_repeats_nothing(tmp_path: Path, monkeypatch, point: str) -> None:
    case = CASES[point]
    markers = tmp_path / "fired"
    markers.mkdir()
    monkeypatch.setenv(crash_points.ENV_AT, f"{case.point}@{case.hit}")
    monkeypatch.setenv(crash_points.ENV_ONCE, str(markers))
    cfg = make_config(tmp_path, processes="split", snapshot_every=300, gateways=("t1",))
    exchange = Exchange(cfg)
    exchange.start()
    try:
        with attached(exchange, cfg) as (reader, producer):
            _run_flow(exchange, reader, producer, case, markers / case.point)
            # everything answered; let the restarted process settle and acceptance return
            pump(exchange, reader, lambda: exchange._control.accepting, timeout=60)
            pump(exchange, reader, quiet_for(reader, 0.2), timeout=30)  # the last events read too
            restarts = {c.name: c.restarts for c in exchange._children}
    finally:
        exchange.stop()
    assert (markers / case.point).exists(), f"{case.point}@{case.hit} never fired"
    assert restarts == {"seq": int(case.process == "seq"), "eng": int(case.process == "eng")}
    # Orders that arrive while the dead process restarts are refused on the reject ring:
    # answered, never journaled (assert_exactly_once checks both).
    if case.refuse_from_chunk is not None:
        assert reader.rejected_not_accepting, "the exchange never refused while armed to"
    assert_exactly_once(reader, cfg.data_path(), range(1, ORDERS + 1))


# -- the arming itself ---------------------------------------------------------------------

def test_arming_refuses_unknown_points_and_bad_hits() -> None:
    assert crash_points.parse("engine.after_journal@3, sequencer.after_publish") == {
        "engine.after_journal": 3, "sequencer.after_publish": 1}
    assert crash_points.parse("") == {}
    with pytest.raises(crash_points.CrashPointError, match="unknown crash point 'engine.after_jornal'"):
        crash_points.parse("engine.after_jornal")
    with pytest.raises(crash_points.CrashPointError, match="must be an integer"):
        crash_points.parse("engine.after_journal@x")
    with pytest.raises(crash_points.CrashPointError, match="at least 1"):
        crash_points.parse("engine.after_journal@0")
    with pytest.raises(crash_points.CrashPointError, match="not declared"):
        crash_points.hit("nowhere.at_all")


_FIRE = """
import sys
from ringex import crash_points
for i in range(3):
    print(i, flush=True)
    crash_points.hit("engine.after_journal")
print("survived", flush=True)
"""


def test_a_point_kills_at_its_hit_once_and_then_lets_the_successor_run(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    env = dict(os.environ, **{crash_points.ENV_AT: "engine.after_journal@2", crash_points.ENV_ONCE: str(tmp_path)})
    first = subprocess.run([sys.executable, "-c", _FIRE], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == -signal.SIGKILL
    assert first.stdout.split() == ["0", "1"]
    assert (tmp_path / "engine.after_journal").exists()
    second = subprocess.run([sys.executable, "-c", _FIRE], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and second.stdout.split() == ["0", "1", "2", "survived"]
    unarmed = dict(os.environ)
    unarmed.pop(crash_points.ENV_AT, None)
    third = subprocess.run([sys.executable, "-c", "from ringex import crash_points; print(crash_points.ARMED)"],
                           env=unarmed, capture_output=True, text=True, timeout=60)
    assert third.stdout.strip() == "False"
