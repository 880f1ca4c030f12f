"""The exchange's own per-stage latency, read from outside (``ringbuffer/latency.py``).

``stage_snapshot(prefix)`` reads every stage histogram of one running exchange; the
difference of two snapshots is what was recorded between them, per stage (the gateways'
histograms of one stage merged), as count and percentiles in microseconds. ``ringex stat``
prints the totals; ``ringex bench e2e`` takes a snapshot before and after its measured
window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ringex.ringbuffer.latency import EMPTY, STAGES, LatencyError, LatencySnapshot, list_latency, read_latency

__all__ = ["StageSnapshot", "stage_snapshot"]


@dataclass(frozen=True)
class StageSnapshot:
    """Every stage histogram of one exchange at one moment, by object name."""

    histograms: dict[str, tuple[str, LatencySnapshot]] = field(default_factory=dict)  # name: (stage, snapshot)

    def since(self, earlier: "StageSnapshot") -> dict[str, dict[str, float]]:
        """Per stage: what was recorded after ``earlier`` (``count``, ``p50_us``, ``p99_us``,
        ``p999_us``, ``max_us``); a stage with no histogram yet shows a count of 0."""
        merged = {stage: EMPTY for stage in STAGES}
        for name, (stage, now) in self.histograms.items():
            before = earlier.histograms.get(name)
            delta = now.since(before[1]) if before is not None else now
            merged[stage] = merged[stage].merged(delta)
        return {stage: snap.summary() for stage, snap in merged.items()}

    def totals(self) -> dict[str, dict[str, float]]:
        return self.since(StageSnapshot())


def stage_snapshot(prefix: str) -> StageSnapshot:
    """Read every stage histogram of exchange ``prefix`` (``[exchange] shm_prefix``)."""
    out: dict[str, tuple[str, LatencySnapshot]] = {}
    for _prefix, stage, name in list_latency(prefix):
        try:
            out[name] = (stage, read_latency(name))
        except LatencyError:
            continue  # being created or removed right now
    return StageSnapshot(out)
