"""The hiccup meter: its buckets, its shared-memory record, the runner feeding it, `ringex stat`.

Bucket expectations are worked from the layout's definition (4 significant bits, buckets
1/16 of an octave wide), not read back from the encoder. The runner tests give lower
bounds only (a sleep lasts at least what it asks), never an upper bound on time.
"""

from __future__ import annotations

import io
import time

import pytest

from test_agent_kit import unique_name
from ringex.ringbuffer import hiccup as hc
from ringex.ringbuffer import log_buckets as lb
from ringex.ringbuffer.agent import Agent, AgentTermination
from ringex.ringbuffer.counters import CountersManager
from ringex.ringbuffer.runner import AgentRunner, RunnerConfig
from ringex.tools.stat import StatView


@pytest.mark.parametrize("value, index, low", [
    (0, 0, 0), (31, 31, 31),            # below 32 ns: one bucket per value
    (32, 32, 32), (33, 32, 32),         # 32..63: buckets 2 ns wide, 16 of them
    (63, 47, 62), (64, 48, 64),         # 64..127: 4 ns wide
    (1000, 111, 992),                   # 1000 = 0b1111101000: shift 5, 1000 >> 5 = 31
    (1_000_000, 32 + 14 * 16 + 14, 30 << 15),  # bit length 20: shift 15, 1e6 >> 15 = 30
])
def test_buckets_follow_the_layout(value: int, index: int, low: int) -> None:
    assert lb.bucket_of(value) == index
    assert lb.bucket_low(index) == low


def test_every_bucket_is_at_most_a_sixteenth_of_its_values_wide() -> None:
    for i in range(hc.LINEAR, hc.BUCKETS - 1):
        lo, hi = lb.bucket_low(i), lb.bucket_low(i + 1)
        assert lb.bucket_of(lo) == i and lb.bucket_of(hi - 1) == i and lb.bucket_of(hi) == i + 1
        assert (hi - lo) * 16 <= lo
    assert lb.bucket_of(-5) == 0
    assert lb.bucket_of(1 << 60) == hc.BUCKETS - 1  # clamped, never out of range


def test_recorded_values_read_back_as_percentiles() -> None:
    name = hc.hiccup_name(unique_name("hic"))
    rec = hc.HiccupRecorder(name)
    try:
        for v in [10] * 90 + [1000] * 9 + [5_000_000]:
            rec.record(v, 7)
        rec.record(10, 20_000_000)
        snap = hc.read_hiccups(name)
        assert snap.cycles == 101
        assert (snap.max_ns, snap.longest_cycle_ns) == (5_000_000, 20_000_000)
        assert snap.percentile(50) == 10
        assert snap.percentile(99) == 992  # the 100th of 101 values: 1000, its bucket's low edge
        assert snap.percentile(100) == 5_000_000 - 5_000_000 % (1 << 18)  # low edge, within 1/16
        assert hc.read_hiccups(name) == snap  # reading changes nothing
    finally:
        rec.close()
    with pytest.raises(hc.HiccupError, match="no hiccup meter"):
        hc.read_hiccups(name)


def test_the_meter_is_named_beside_the_counters_and_outside_their_prefix() -> None:
    assert hc.hiccup_name("ringex-counters-rx1-core") == "ringex-hiccup-rx1-core"
    assert hc.hiccup_name("/custom") == "ringex-hiccup-custom"


class _OversleepingIdle:
    """Says it parks for 0 ns and then sleeps: everything it sleeps is a hiccup."""

    name = "oversleep"
    parked_ns = 0

    def __init__(self, sleep_s: float) -> None:
        self.sleep_s = sleep_s

    def idle(self, work_count: int) -> None:
        time.sleep(self.sleep_s)

    def reset(self) -> None:
        pass


class _SlowOnce(Agent):
    """Its second duty cycle is slow; the last one reads the meter (the runner removes it
    when the run ends), when ``meter`` names one."""

    role_name = "slow-once"

    def __init__(self, cycles: int, slow_s: float, meter: str | None = None) -> None:
        self.cycles, self.slow_s, self.n, self.meter = cycles, slow_s, 0, meter
        self.seen: hc.HiccupSnapshot | None = None

    def do_work(self) -> int:
        self.n += 1
        if self.n == 2:
            time.sleep(self.slow_s)  # one long duty cycle
        if self.n > self.cycles:
            if self.meter is not None:
                self.seen = hc.read_hiccups(self.meter)
            raise AgentTermination()
        return 1


def test_the_runner_records_what_the_park_did_not_ask_for_and_the_longest_cycle() -> None:
    name = unique_name("hicrun")
    agent = _SlowOnce(cycles=5, slow_s=0.03, meter=hc.hiccup_name(name))
    with CountersManager(name, capacity=16) as mgr:
        runner = AgentRunner(agent, RunnerConfig(idle_strategy=_OversleepingIdle(0.01)), counters=mgr)
        assert runner.run() == 0
    with pytest.raises(hc.HiccupError):
        hc.read_hiccups(hc.hiccup_name(name))  # gone with the run
    snap = agent.seen
    assert snap is not None and snap.cycles == 5  # every cycle but the first (no gap before it)
    assert snap.percentile(0.1) >= 0.01e9 * 15 // 16  # each gap slept 10 ms unasked
    assert snap.longest_cycle_ns >= 0.03e9
    assert snap.work_cycles == 5  # each did work (the last one, read before its end, not yet)
    assert snap.work_percentile(100) >= 0.03e9 * 15 // 16  # the slow one, within its bucket


class _Idle(_SlowOnce):
    """``_SlowOnce`` that never reports work: its cycles are idle ones, however long."""

    def do_work(self) -> int:
        super().do_work()
        return 0


def test_only_working_cycles_count_as_working() -> None:
    name = unique_name("hicidle")
    agent = _Idle(cycles=4, slow_s=0.02, meter=hc.hiccup_name(name))
    with CountersManager(name, capacity=16) as mgr:
        assert AgentRunner(agent, RunnerConfig(idle_strategy=_OversleepingIdle(0)), counters=mgr).run() == 0
    snap = agent.seen
    assert snap is not None and snap.cycles == 4 and snap.longest_cycle_ns >= 0.02e9
    assert snap.work_cycles == 0 and snap.work_percentile(99) == 0


def test_working_cycles_read_back_as_percentiles_and_since() -> None:
    name = hc.hiccup_name(unique_name("hicwork"))
    rec = hc.HiccupRecorder(name)
    try:
        for cycle in [20] * 50 + [3000] * 49:
            rec.record(0, cycle, worked=True)
        rec.record(0, 1_000_000, worked=False)  # an idle cycle: longest, not a working one
        rec.record(0, 100_000, worked=True)
        first = hc.read_hiccups(name)
        assert (first.cycles, first.work_cycles) == (101, 100)
        assert first.work_percentile(50) == 20  # below 32 ns: exact
        assert first.work_percentile(99) == 2944  # 3000: shift 7, 3000 >> 7 = 23, 23 << 7
        assert first.work_percentile(100) == 98_304  # 100,000: shift 12, 24 << 12
        for cycle in (64, 64, 64):
            rec.record(0, cycle, worked=True)
        later = hc.read_hiccups(name).since(first)
        assert (later.cycles, later.work_cycles) == (3, 3) and later.work_percentile(50) == 64
    finally:
        rec.close()


def test_no_meter_without_counters_or_when_switched_off() -> None:
    name = unique_name("hicoff")
    with CountersManager(name, capacity=16) as mgr:
        runner = AgentRunner(_SlowOnce(cycles=2, slow_s=0), RunnerConfig(idle_strategy=_OversleepingIdle(0),
                                                                        hiccups=False), counters=mgr)
        assert runner.run() == 0
    with pytest.raises(hc.HiccupError):
        hc.read_hiccups(hc.hiccup_name(name))


def test_stat_shows_a_process_hiccups(monkeypatch) -> None:
    name = unique_name("hicstat")
    with CountersManager(name, capacity=4) as mgr:
        mgr.allocate("x: ticks")
        rec = hc.HiccupRecorder(hc.hiccup_name(name))
        try:
            for v in (2_000, 2_000, 9_000_000):
                rec.record(v, 1_500_000, worked=v == 2_000)
            out, err = io.StringIO(), io.StringIO()
            view = StatView([name], out, err)
            view.refresh()
            view.close()
        finally:
            rec.close()
    line = next(x for x in out.getvalue().splitlines() if "hiccups" in x)
    assert "over 3 duty cycles" in line
    assert "p50 2.0" in line  # 2000 ns: its bucket's low edge, 1984 ns
    assert "max 9,000.0" in line and "longest duty cycle 1.50 ms" in line
    work = next(x for x in out.getvalue().splitlines() if "working duty cycles" in x)
    assert "working duty cycles, 2 " in work and "p50 1,441.8" in work  # 1.5 ms: 22 << 16 ns


def test_a_later_reading_since_an_earlier_one_holds_only_the_cycles_between() -> None:
    name = hc.hiccup_name(unique_name("hicsince"))
    rec = hc.HiccupRecorder(name)
    try:
        for v in (1000, 50_000_000):
            rec.record(v, 0)
        first = hc.read_hiccups(name)
        for v in (3000, 3000, 70_000):
            rec.record(v, 0)
        later = hc.read_hiccups(name).since(first)
        assert later.cycles == 3
        assert later.percentile(50) == 2944  # 3000: shift 7, 3000 >> 7 = 23, 23 << 7
        assert later.max_ns == 69_632  # 70,000's bucket (the 50 ms before it is not in range)
        rec.record(60_000_000, 0)
        assert hc.read_hiccups(name).since(first).max_ns == 60_000_000  # a new maximum: exact
    finally:
        rec.close()
