"""``ringex run``: build the rings, start the agents' processes, supervise, shut down cleanly.

The topology is configuration: each ``[[process]]`` names the agents it composes, its CPUs
and its idle strategy. The launcher owns every shared-memory object it creates and removes
them all on shutdown; it also owns the admin ring (the configured instruments and accounts
enter the journal through it on a fresh start, like any operator action).

The supervisor fails safe. A child process that dies or stops heartbeating, or an inbound
producer that dies, withdraws acceptance in the control block: from then on the sequencer
answers every order-entry message with ``ExchangeNotAccepting`` instead of running half a
pipeline. A dead child is restarted (its agents recover from their journal and rings); once
everything is healthy again the exchange accepts again. SIGTERM or Ctrl-C drains in-flight
work, stops the agents (the engine writes its final snapshot) and unlinks every object.

Restarts are a rate (``[supervisor] max_restarts`` within ``restart_window_ms``): a process
that dies once more than that within the window is given up, not restarted again. The
exchange then stays up (subscribers drain, ``ringex stat`` works) but refuses every order
until the operator restarts it: half a pipeline must never accept.

A process is judged by its heartbeats only once it has started (its agents' ``on_start``
returned). Until then it is "starting": acceptance stays off and the rings it will take over
are not judged, since its predecessor's dead cells are still in them. Compiling the matching
engine (minutes on a cold numba cache) is reported by the engine process in its counters and
does not count against the start-up time; the launcher logs progress while it waits.

A data directory written with another schema or ``[engine]`` configuration is refused before
any process or shared-memory object exists (``EngineStateError``, naming the file and the
difference), rather than as an engine that dies on every restart; so is one whose newest
snapshot is ahead of its journal (``JournalBehindSnapshotError``: docs/architecture.md,
"Crash windows").
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable

from ringex.engine.wire import messages as m
from ringex.engine.pipeline.engine_agent import EngineAgent, EngineStateError, check_engine_file
from ringex.engine.storage.recovery import JournalBehindSnapshotError, check_journal_reaches_snapshots
from ringex.engine.pipeline.warm_start import COMPILING_LABEL
from ringex.engine.storage.data_dir import journal_dir, journal_last_seq, journal_last_stamp
from ringex.engine.storage.journal_lock import describe, journal_holder
from ringex.engine.pipeline.sequencer import SequencerAgent, last_sequence
from ringex.ringbuffer.agent import Agent, CompositeAgent
from ringex.ringbuffer.consumer import Consumer
from ringex.ringbuffer.control import (
    REASON_GIVEN_UP,
    REASON_HEARTBEAT_LOST,
    REASON_PROCESS_DIED,
    REASON_SHUTTING_DOWN,
    REASON_STARTING,
    REASON_TEXT,
    ControlBlock,
)
from ringex.ringbuffer.counters import CountersError, CountersReader
from ringex.ringbuffer.errors import RingError, StaleRingError
from ringex.ringbuffer.idle import BackoffIdleStrategy
from ringex.ringbuffer.latency import list_latency, unlink_latency
from ringex.ringbuffer.liveness import ConsumerState, pid_alive
from ringex.ringbuffer.mapping import canonical_name
from ringex.ringbuffer.process_spec import AGENT_NAMES
from ringex.feeds.itch_instrument import itch_instruments
from ringex.feeds.md_publisher import MdPublisherAgent
from ringex.gateways.fix_gateway import FixGatewayAgent, instruments_for
from ringex.gateways.sbe_gateway import SbeGatewayAgent
from ringex.ringbuffer.producer import Offer, Producer
from ringex.ringbuffer.ring import Ring
from ringex.ringbuffer.runner import AgentRunner, RunnerConfig
from ringex.tools.config import ExchangeConfig
from ringex.tools.ring_record import hold_launcher_lock, record, recorded
from ringex.tools.supervision import Clock, RestartBudget, StartDeadline

log = logging.getLogger("ringex.launcher")

MONITOR_CONSUMER = 0  # the launcher's own consumer of the output and reject rings
PROGRESS_EVERY_S = 30.0  # how often a long start-up (a compile) logs that it is still going

# When several things are wrong at once, the control block names the gravest: a process
# given up (permanent until the operator acts) over a death (being restarted) over a lost
# heartbeat over a process still starting.
_SEVERITY = {REASON_STARTING: 1, REASON_HEARTBEAT_LOST: 2, REASON_PROCESS_DIED: 3, REASON_GIVEN_UP: 4}


class StartError(RuntimeError):
    """A process of the exchange did not start (it exited, or took too long), or the data
    directory is another live process's."""


@dataclass(frozen=True)
class RingNames:
    """Every shared-memory name of one exchange, derived from its prefix."""

    prefix: str
    gateways: tuple[str, ...]

    @property
    def admin(self) -> str:
        return f"{self.prefix}-admin"

    def gateway(self, name: str) -> str:
        return f"{self.prefix}-in-{name}"

    @property
    def inbound(self) -> list[str]:
        return [self.admin, *(self.gateway(g) for g in self.gateways)]

    @property
    def engine_in(self) -> str:
        return f"{self.prefix}-seq"

    @property
    def output(self) -> str:
        return f"{self.prefix}-out"

    @property
    def reject(self) -> str:
        return f"{self.prefix}-rej"

    @property
    def control(self) -> str:
        return f"{self.prefix}-ctl"


def ring_names(cfg: ExchangeConfig) -> RingNames:
    return RingNames(cfg.exchange.shm_prefix, tuple(cfg.inbound_names()))


def output_consumer_index(cfg: ExchangeConfig, subscriber: str) -> int:
    """The consumer index a named subscriber (one in ``[rings] subscribers``, a gateway or a
    feed) uses on the output and reject rings."""
    names = cfg.subscriber_names()
    try:
        return 1 + names.index(subscriber)
    except ValueError:
        raise KeyError(f"{subscriber!r} is neither in rings.subscribers nor a gateway or feed: {names}") from None


# a new instrument's limits (docs/risk.md): InstrumentConfig's defaults are the same, so an
# instrument whose risk keys are all at their defaults needs no InstrumentLimits
LIMITS_OFF = dict(maxOrderQty=0, maxPosition=0, maxOrderNotional=0, notionalDivisor=1, priceBandPpm=0,
                  cbMovePpm=0, cbWindowNs=0, cbHaltNs=0)

_STP = {
    "off": m.StpMode.Off, "cancel-resting": m.StpMode.CancelResting,
    "cancel-aggressor": m.StpMode.CancelAggressor, "cancel-both": m.StpMode.CancelBoth,
    "decrement-both": m.StpMode.DecrementBoth,
}

INSURANCE_FUND = 0  # the engine's account 0 (docs/risk.md): not created, only funded


def admin_messages(cfg: ExchangeConfig) -> list[bytes]:
    """The configured venue, as the admin messages that create it, in this order:

    1. per instrument: its InstrumentDefinition; an InstrumentLimits when its risk keys are
       not all at their defaults (a definition starts with the limits off); a PerpetualParams
       for a perpetual (its ``[instrument.perpetual]`` table, or the engine's defaults);
    2. every account's CreateAccount;
    3. every account's deposits (Funds, ascending asset id), then the insurance fund's;
    4. an IndexPrice for each perpetual that configures ``index_price``: last, because moving a
       mark runs the liquidation check, which must see every account already funded.
    """
    out: list[bytes] = []
    for ins in cfg.instrument:
        perp = ins.kind == "perpetual"
        out.append(m.InstrumentDefinition.encode(
            instrument=ins.id, symbol=ins.symbol, tickSize=ins.tick_size, lotSize=ins.lot_size,
            minQty=ins.min_qty, maxQty=ins.max_qty, referencePrice=ins.reference_price,
            makerFeePpm=ins.maker_fee_ppm, takerFeePpm=ins.taker_fee_ppm, baseAsset=ins.base(),
            kind=m.InstrumentKind.Perpetual if perp else m.InstrumentKind.Spot,
            haltPolicy=m.HaltPolicy.Reject if ins.halt_policy == "reject" else m.HaltPolicy.Queue,
            status=m.TradingStatus.Trading,
        ))
        limits = dict(maxOrderQty=ins.max_order_qty, maxPosition=ins.max_position,
                      maxOrderNotional=ins.max_order_notional, notionalDivisor=ins.notional_divisor,
                      priceBandPpm=ins.price_band_ppm, cbMovePpm=ins.cb_move_ppm, cbWindowNs=ins.cb_window_ns,
                      cbHaltNs=ins.cb_halt_ns)
        if limits != LIMITS_OFF:
            out.append(m.InstrumentLimits.encode(instrument=ins.id, **limits))
        if perp:
            pp = ins.perpetual_params()
            out.append(m.PerpetualParams.encode(
                instrument=ins.id, imPpm=pp.im_ppm, mmPpm=pp.mm_ppm, tierNotional=pp.tier_notional,
                tierStepPpm=pp.tier_step_ppm, fundingIntervalNs=pp.funding_interval_ns,
                fundingCapPpm=pp.funding_cap_ppm, basisCapPpm=pp.basis_cap_ppm, basisEmaPpm=pp.basis_ema_ppm,
                liquidationFeePpm=pp.liquidation_fee_ppm, interestPpm=pp.interest_ppm,
                impactNotional=pp.impact_notional,
            ))
    for acc in cfg.account:
        out.append(m.CreateAccount.encode(account=acc.id, stpDefault=_STP[acc.stp_default],
                                          maxOpenOrders=acc.max_open_orders))
    deposits = [(acc.id, asset, amount) for acc in cfg.account for asset, amount in acc.deposit_list()]
    if cfg.insurance_fund.deposit:
        deposits.append((INSURANCE_FUND, 0, cfg.insurance_fund.deposit))
    for account, asset, amount in deposits:
        out.append(m.Funds.encode(account=account, asset=asset, amount=amount, action=m.FundsAction.Deposit))
    for ins in cfg.instrument:
        if ins.perpetual is not None and ins.perpetual.index_price is not None:
            out.append(m.IndexPrice.encode(instrument=ins.id, price=ins.perpetual.index_price))
    return out


@dataclass
class _Child:
    name: str
    agents: list[str]
    runner: AgentRunner
    deadline: StartDeadline  # how long it may take to start (compiling aside)
    restarts: int = 0  # restarts of this process since the exchange started
    started: bool = False  # its on_start returned: from now on judged by heartbeats
    compiling: bool = False  # as its counters said at the last look
    given_up: str = ""  # why the supervisor stopped restarting it; "" while it may
    reader: CountersReader | None = None


@dataclass
class Status:
    last_seq: int = 0
    msgs_per_s: float = 0.0
    back_pressure: int = 0
    accepting: bool = False
    reason: str = ""
    given_up: tuple[str, ...] = ()  # processes the supervisor stopped restarting

    def line(self) -> str:
        reason = self.reason
        if self.given_up:
            reason += f": {', '.join(self.given_up)}; restart ringex run once the cause is fixed"
        state = "accepting" if self.accepting else f"NOT accepting ({reason})"
        return (f"seq {self.last_seq:>10} | {self.msgs_per_s:>10,.0f} msg/s | "
                f"back-pressure {self.back_pressure} | {state}")



class Exchange:
    """One running exchange: its rings, control block and child processes."""

    def __init__(self, cfg: ExchangeConfig, *, restart_children: bool = True,
                 restart_clock: Clock = time.monotonic, child_log_level: int | None = None) -> None:
        """``restart_clock`` times the restart budget (a seam: tests move it instead of
        sleeping); ``child_log_level`` configures logging in the child processes
        (``RunnerConfig.log_level``)."""
        self.cfg = cfg
        self.names = ring_names(cfg)
        self.restart_children = restart_children
        sup = cfg.supervisor
        self._budgets = {p.name: RestartBudget(sup.max_restarts, sup.restart_window_ms / 1000, restart_clock)
                         for p in cfg.process}
        self.child_log_level = child_log_level
        self.ready_timeout = 300.0
        self.data_dir = cfg.data_path()
        self._rings: dict[str, Ring] = {}  # by the names in ``self.names``
        self._children: list[_Child] = []
        self._control: ControlBlock | None = None
        self._admin: Producer | None = None
        self._monitors: list[Consumer] = []
        self.stale_reclaimed: list[str] = []  # rings a crashed run left behind, created afresh
        self.stale_resumed: list[str] = []  # rings a crashed run of this data directory left, resumed
        self._recorded: dict[str, int] = {}
        self._lock_fd: int | None = None
        self.untethered: list[tuple[str, int, int]] = []  # (ring, subscriber, position it had)
        self._dead_subscribers: set[tuple[str, int]] = set()  # each reported once
        self._last_rate = (time.monotonic(), 0)
        self._grace_until = 0.0
        self.started = False

    # ----------------------------------------------------------------- start-up

    def _create_ring(self, name: str, capacity: int, consumers: int) -> Ring:
        try:
            ring = Ring.create(name, slot_size=m.SLOT_SIZE, capacity=capacity, consumers=consumers)
        except StaleRingError as exc:
            resumed = self._resume_ring(name, capacity, consumers)
            if resumed is not None:
                self._rings[name] = resumed
                return resumed
            log.warning("%s; reclaiming it", exc)
            self.stale_reclaimed.append(name)
            ring = Ring.create(name, slot_size=m.SLOT_SIZE, capacity=capacity,
                               consumers=consumers, reclaim=True)
        self._rings[name] = ring
        return ring

    def _resume_ring(self, name: str, capacity: int, consumers: int) -> Ring | None:
        """A crashed run's ring ``name``, taken over as it is when it is this data directory's
        (``ring_record``) with the layout configured now; None to reclaim it instead."""
        try:
            ring = Ring.attach(name, slot_size=m.SLOT_SIZE, capacity=capacity, consumers=consumers)
        except RingError as exc:
            log.warning("ring %r left by a crashed run cannot be resumed: %s", name, exc)
            return None
        if self._recorded.get(canonical_name(name)) != ring.created_time_ns:
            log.warning("ring %r left by a crashed run is not %s's: not resumed", name, self.data_dir)
            ring.close()
            return None
        log.warning("resuming ring %r left by a crashed run, with what was in flight in it", name)
        self.stale_resumed.append(name)
        return ring

    def start(self, ready_timeout: float = 300.0) -> None:
        """Create everything, start the processes, and accept once the engine is up.

        ``ready_timeout`` bounds each process's start-up, not counting the time it reports
        compiling the matching engine (``StartDeadline``); it also bounds a restarted
        process's. Raises ``EngineStateError`` before anything starts when the data
        directory was written with another schema or ``[engine]`` configuration,
        ``JournalBehindSnapshotError`` when its newest snapshot is ahead of its journal, and
        ``StartError`` when a live process holds the data directory's journal or a process
        does not start; nothing is left behind either way."""
        cfg, names = self.cfg, self.names
        self.ready_timeout = ready_timeout
        holder = journal_holder(journal_dir(self.data_dir))
        if holder is not None:  # before any ring is touched: they may be that process's
            raise StartError(f"{self.data_dir} is in use by process {describe(holder)}; stop it first")
        check_engine_file(self.data_dir, cfg.engine)
        check_journal_reaches_snapshots(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = hold_launcher_lock(self.data_dir)
        if self._lock_fd is None:
            raise StartError(f"{self.data_dir} is in use by another ringex run; stop it first")
        self._recorded = recorded(self.data_dir)
        try:
            self._control = ControlBlock.create(names.control)
            subscribers = 1 + len(cfg.subscriber_names())
            admin = self._create_ring(names.admin, cfg.rings.inbound_capacity, 1)
            for g in cfg.inbound_names():
                self._create_ring(names.gateway(g), cfg.rings.inbound_capacity, 1)
            self._create_ring(names.engine_in, cfg.rings.engine_capacity, 1)
            out = self._create_ring(names.output, cfg.rings.output_capacity, subscribers)
            rej = self._create_ring(names.reject, cfg.rings.inbound_capacity, subscribers)
            record(self.data_dir, {canonical_name(n): r.created_time_ns for n, r in self._rings.items()})
            self._admin = admin.producer()
            self._monitors = [out.consumer(MONITOR_CONSUMER), rej.consumer(MONITOR_CONSUMER)]
            fresh = journal_last_seq(self.data_dir) == 0
            for proc in cfg.process:
                self._children.append(self._start_child(proc.name))
            self._wait_started()
            if fresh:
                for msg in admin_messages(cfg):
                    self.offer_admin(msg)
            self._control.accept()
            self._grace_until = time.monotonic() + 2 * cfg.supervisor.heartbeat_timeout_ms / 1000
            self.started = True
        except BaseException:
            self.stop(drain_timeout=0.0)
            raise

    def _agent(self, name: str) -> Agent:
        cfg, names = self.cfg, self.names
        gateway = next((g for g in cfg.gateway if g.name == name), None)
        if gateway is not None and gateway.protocol == "fix":
            return FixGatewayAgent(gateway, names.gateway(name), names.output, names.reject,
                                   output_consumer_index(cfg, name), cfg.gateway_dir(name),
                                   instruments_for(cfg.instrument), batch_limit=cfg.rings.batch_limit,
                                   latency_prefix=names.prefix, engine_config=cfg.engine, data_dir=self.data_dir)
        if gateway is not None:
            return SbeGatewayAgent(gateway, names.gateway(name), names.output, names.reject,
                                   output_consumer_index(cfg, name), cfg.gateway_dir(name),
                                   batch_limit=cfg.rings.batch_limit, latency_prefix=names.prefix,
                                   engine_config=cfg.engine, data_dir=self.data_dir)
        feed = next((f for f in cfg.feed if f.name == name), None)
        if feed is not None:
            return MdPublisherAgent(feed, names.output, names.reject, output_consumer_index(cfg, name),
                                    cfg.feed_dir(name), itch_instruments(cfg.instrument),
                                    batch_limit=cfg.rings.batch_limit, capacity=2 * cfg.engine.max_orders,
                                    engine_config=cfg.engine, data_dir=self.data_dir)
        if name == "sequencer":
            return SequencerAgent(
                names.inbound, names.engine_in, names.reject, names.control,
                first_seq=journal_last_seq(self.data_dir) + 1, batch_limit=cfg.rings.batch_limit,
                admin_ring=names.admin, stamp_floor=journal_last_stamp(self.data_dir),
            )
        if name == "engine":
            return EngineAgent(
                cfg.engine, str(self.data_dir), names.engine_in, names.output,
                durability=cfg.journal.durability, interval_ms=cfg.journal.interval_ms,
                segment_bytes=cfg.journal.segment_bytes, snapshot_every=cfg.journal.snapshot_every,
                snapshots_kept=cfg.journal.snapshots_kept, snapshot_writer=cfg.journal.snapshot_writer,
                archive_dir=cfg.archive_path(),
                batch_limit=cfg.rings.batch_limit, latency_prefix=names.prefix,
            )
        raise ValueError(f"unknown agent {name!r}")

    def _start_child(self, proc_name: str, restarts: int = 0) -> _Child:
        proc = next(p for p in self.cfg.process if p.name == proc_name)
        agents = [self._agent(a) for a in proc.agents]
        agent = agents[0] if len(agents) == 1 else CompositeAgent(agents, role_name=proc.name)
        runner = AgentRunner(agent, RunnerConfig(
            idle_strategy=proc.idle, cpus=tuple(proc.cpus) if proc.cpus else None,
            counters_name=f"ringex-counters-{self.names.prefix}-{proc.name}",
            log_level=self.child_log_level,
        ))
        runner.start_process()
        log.info("started process %r (pid %s): %s", proc.name, runner.pid, ", ".join(proc.agents))
        return _Child(proc.name, list(proc.agents), runner, StartDeadline(self.ready_timeout), restarts)

    def _compiling(self, child: _Child) -> bool:
        """Whether the child's counters say it is compiling the matching engine now."""
        if child.reader is None:
            try:
                child.reader = CountersReader(child.runner.counters_name or "")
            except (CountersError, OSError):
                return False  # not created yet: the child is still importing
        try:
            child.compiling = child.reader.value(COMPILING_LABEL) == 1
        except KeyError:
            child.compiling = False  # no engine in this process, or not at that step yet
        return child.compiling

    def _check_starting(self, child: _Child) -> str | None:
        """Look at a child that has not started yet: mark it started once it has, and
        return why it is late when it is (None otherwise)."""
        if child.runner.wait_started(0):
            child.started, child.compiling = True, False
            # Its first heartbeats are due now, not when it was spawned: judge them after a grace.
            self._grace_until = max(self._grace_until, time.monotonic()
                                    + 2 * self.cfg.supervisor.heartbeat_timeout_ms / 1000)
            if child.restarts:
                log.info("process %r (pid %s) started again", child.name, child.runner.pid)
            return None
        return child.deadline.check(self._compiling(child))

    def _wait_started(self) -> None:
        """Wait until every child has started; StartError when one exits or is late.

        Every waiting child is looked at on every pass, so each one's compile time is seen
        as it happens (a child's deadline leaves its compile time out)."""
        next_note = time.monotonic() + PROGRESS_EVERY_S
        while True:
            waiting = [c for c in self._children if not c.started]
            for child in waiting:
                late = self._check_starting(child)
                if child.started:
                    continue
                if not child.runner.is_alive():
                    raise StartError(f"process {child.name!r} ({', '.join(child.agents)}) exited with code "
                                     f"{child.runner.exitcode} while starting; its error is logged above")
                if late is not None:
                    raise StartError(f"process {child.name!r} ({', '.join(child.agents)}) {late}")
            if all(c.started for c in self._children):
                return
            if time.monotonic() >= next_note:
                next_note = time.monotonic() + PROGRESS_EVERY_S
                for child in (c for c in self._children if not c.started):
                    doing = "compiling the matching engine" if child.compiling else "starting"
                    log.info("still waiting for process %r: %s (%.0f s so far)", child.name, doing,
                             child.deadline.elapsed_s())
            time.sleep(0.05)  # between looks: start-up takes seconds, compiling minutes

    def _restart_or_give_up(self, i: int, child: _Child) -> bool:
        """A dead child: restart it if its budget allows (True), else give it up."""
        child.runner.join(0.1)
        if child.reader is not None:
            child.reader.close()  # the dead incarnation's counters; the new one makes its own
            child.reader = None
        budget = self._budgets[child.name]
        sup = self.cfg.supervisor
        if budget.try_restart():
            log.warning("restarting process %r (restart %d in the last %.0f s; supervisor.max_restarts = %d)",
                        child.name, budget.in_window(), budget.window_s, budget.max_restarts)
            self._children[i] = self._start_child(child.name, child.restarts + 1)
            return True
        child.given_up = (f"it died after {budget.in_window()} restart(s) in the last {budget.window_s:.0f} s, "
                          f"the most supervisor.max_restarts = {sup.max_restarts} allows per "
                          f"restart_window_ms = {sup.restart_window_ms}")
        log.error("giving up on process %r (%s): %s; not restarting it. The exchange stays up and "
                  "refuses every order until it is restarted", child.name, ", ".join(child.agents),
                  child.given_up)
        return False

    # ----------------------------------------------------------------- operation

    def offer_admin(self, message: bytes, timeout: float = 10.0) -> None:
        """Put one admin message on the admin ring (waits, bounded, under back-pressure)."""
        assert self._admin is not None
        deadline = time.monotonic() + timeout
        idle = BackoffIdleStrategy()
        while self._admin.offer(message) != Offer.OK:
            if time.monotonic() > deadline:
                raise TimeoutError("admin ring full: the sequencer is not consuming")
            self.drain()
            idle.idle(0)

    def drain(self) -> int:
        """Consume what the monitor consumer has on the output and reject rings."""
        n = 0
        for c in self._monitors:
            head, tail = c.read()
            k = len(head) + len(tail)
            if k:
                c.commit(k)
                n += k
            else:
                c.heartbeat()
        return n

    def supervise_once(self) -> list[str]:
        """Check every child and producer; fail safe or recover. Returns what went wrong."""
        assert self._control is not None
        problems: list[str] = []
        culprit = 0
        reason = 0

        def note(problem: str, why: int, pid: int) -> None:
            nonlocal culprit, reason
            problems.append(problem)
            if _SEVERITY[why] >= _SEVERITY.get(reason, 0):
                culprit, reason = pid, why

        starting = False
        for i, child in enumerate(self._children):
            pid = child.runner.pid or 0
            # A process of gateways and feeds only is an edge: while it is down or restarting,
            # its clients are disconnected, but the rest of the exchange keeps accepting.
            edge = not any(a in AGENT_NAMES for a in child.agents)
            if child.given_up:
                if not edge:
                    note(f"process {child.name!r} is given up: {child.given_up}", REASON_GIVEN_UP, pid)
                continue
            if not child.runner.is_alive():
                died = (f"process {child.name!r} (pid {pid}, {', '.join(child.agents)}) died with exit code "
                        f"{child.runner.exitcode}")
                if edge:
                    log.warning("%s; its sessions are disconnected", died)
                else:
                    note(died, REASON_PROCESS_DIED, pid)
                if self.restart_children:
                    if self._restart_or_give_up(i, child):
                        starting = starting or not edge
                    elif not edge:
                        note(f"process {child.name!r} is given up: {child.given_up}", REASON_GIVEN_UP, pid)
                continue
            if not child.started:
                late = self._check_starting(child)
                if child.started:
                    continue
                doing = "compiling the matching engine" if child.compiling else "starting"
                if not edge:
                    starting = True
                    note(f"process {child.name!r} (pid {pid}) is {doing}", REASON_STARTING, pid)
                if late is not None:
                    # Killed, it is dead at the next look: restarted or given up by the budget.
                    log.error("process %r (pid %s) %s; killing it", child.name, pid, late)
                    child.runner.kill()
        timeout_ns = self.cfg.supervisor.heartbeat_timeout_ms * 1_000_000
        # A process not yet started (compiling, recovering) polls no ring, and the cells it
        # will take over still name its dead predecessor: judge heartbeats only once every
        # process has started, and after a grace period for their first polls.
        judge = not starting and time.monotonic() >= self._grace_until
        fan_out = (self.names.output, self.names.reject)
        # An engine waiting on a full output ring (a dead subscriber holds it, until it is
        # untethered below) stops its process's duty cycle, and with it the heartbeats of the
        # sequencer composed with it: blocked, not dead, so not a reason to refuse orders.
        out = self._rings[self.names.output]
        output_full = out.producer_position - out.min_consumer_position() >= out.capacity
        for name, ring in self._rings.items() if judge else ():
            if name in fan_out:  # consumer 0 is this process's monitor; the rest, subscribers
                for idx in range(1, ring.consumers):
                    self._judge_subscriber(ring, idx, timeout_ns)
                continue
            for idx in range(ring.consumers):  # the pipeline's own consumers
                state = ring.consumer_state(idx, stale_after_ns=timeout_ns)
                if state is ConsumerState.DEAD and output_full and pid_alive(ring.consumer_info(idx).pid):
                    continue
                if state is ConsumerState.DEAD:
                    info = ring.consumer_info(idx)
                    note(f"consumer {idx} of ring {ring.name} (pid {info.pid}) is dead "
                         f"(heartbeat {info.heartbeat_age_ns / 1e9:.1f} s old)", REASON_HEARTBEAT_LOST, info.pid)
        supervised = {self.names.gateway(g) for g in self.cfg.gateway_names()}
        for name in self.names.inbound[1:]:  # the admin ring's producer is this process
            if name in supervised:  # a gateway child: judged as a process above
                continue
            ring = self._rings[name]
            pid = ring.producer_pid
            if pid and not pid_alive(pid):
                note(f"producer of ring {ring.name} (pid {pid}) died", REASON_PROCESS_DIED, pid)
        if problems:
            if self._control.accepting:
                for p in problems:
                    log.error("failing safe, not accepting orders: %s", p)
            self._control.refuse(reason, culprit)
        elif not self._control.accepting and self._control.reason != REASON_SHUTTING_DOWN:
            log.warning("pipeline healthy again; accepting orders")
            self._control.accept()
        return problems

    def _judge_subscriber(self, ring: Ring, idx: int, timeout_ns: int) -> None:
        """A subscriber of the output or reject ring never stops the exchange: a dead (or
        stopped) one is left alone while the ring still has room for it, so that its successor
        resumes from its own cursor and misses nothing, and untethered once it is half a ring
        behind, before it could hold the engine back (``Ring.untether``; the successor then
        rejoins at the producer's position and recovers what it missed by its own protocol)."""
        key = (ring.name, idx)
        state = ring.consumer_state(idx, stale_after_ns=timeout_ns)
        if state is not ConsumerState.DEAD:
            if state is not ConsumerState.UNTETHERED:
                self._dead_subscribers.discard(key)
            return
        info = ring.consumer_info(idx)
        if key not in self._dead_subscribers:
            self._dead_subscribers.add(key)
            log.warning("subscriber %d of ring %s (pid %s) is dead (heartbeat %.1f s old, %d behind); "
                        "the exchange goes on without it", idx, ring.name, info.pid,
                        info.heartbeat_age_ns / 1e9, info.lag)
        self._kill_hung_edge(idx, info.pid)
        if info.lag >= ring.capacity // 2:
            had = ring.untether(idx)
            self.untethered.append((ring.name, idx, had))
            log.warning("untethered subscriber %d of ring %s at position %d (%d behind, pid %s): "
                        "it no longer holds the ring back; it rejoins at the head when it attaches again",
                        idx, ring.name, had, info.lag, info.pid)

    def _kill_hung_edge(self, idx: int, pid: int) -> None:
        """A gateway or feed whose subscriber heartbeat stopped while its process lives is hung
        (stopped, or stuck): kill it, so that the supervisor restarts it and its clients can
        reconnect (or recover by retransmission). A subscriber that is not one of our children
        is left to its owner."""
        names = self.cfg.subscriber_names()
        if not 1 <= idx <= len(names) or names[idx - 1] not in self.cfg.edge_names():
            return
        edge = names[idx - 1]
        for child in self._children:
            if edge in child.agents and child.runner.is_alive() and child.started and child.runner.pid == pid:
                log.error("%r (process %r, pid %s) stopped consuming; killing it to restart it",
                          edge, child.name, pid)
                child.runner.kill()

    def status(self) -> Status:
        assert self._control is not None
        last = last_sequence(self._rings[self.names.engine_in])
        now = time.monotonic()
        t0, s0 = self._last_rate
        rate = (last - s0) / (now - t0) if now > t0 else 0.0
        self._last_rate = (now, last)
        bp = 0
        for child in self._children:
            try:
                child.reader = child.reader or CountersReader(child.runner.counters_name or "")
                for _id, label, value in child.reader:
                    if "back-pressure" in label:
                        bp += value
            except Exception:
                child.reader = None
        return Status(last, rate, bp, self._control.accepting, REASON_TEXT.get(self._control.reason, "?"),
                      tuple(c.name for c in self._children if c.given_up))

    def run_forever(self, print_status: Callable[[str], None] | None = None,
                    stop_after: float | None = None) -> None:
        """Supervise until SIGINT/SIGTERM (or ``stop_after`` seconds), then stop cleanly."""
        stopping = False

        def on_signal(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        # The monitor consumers only keep the rings moving: waking every millisecond or two is
        # enough (the rings hold far more than that), and a supervisor that woke each 100 µs
        # under load took a tenth of a core from the agents on a 2-core host.
        idle = BackoffIdleStrategy(max_spins=0, max_yields=0, min_park_ns=1_000_000, max_park_ns=2_000_000)
        check_every = self.cfg.supervisor.check_interval_ms / 1000
        next_check = next_status = time.monotonic()
        end = None if stop_after is None else time.monotonic() + stop_after
        try:
            while not stopping and (end is None or time.monotonic() < end):
                idle.idle(self.drain())
                now = time.monotonic()
                if now >= next_check:
                    self.supervise_once()
                    next_check = now + check_every
                if print_status is not None and now >= next_status:
                    print_status(self.status().line())
                    next_status = now + 1.0
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            self.stop()

    # ----------------------------------------------------------------- shutdown

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Refuse new orders, let in-flight work finish, stop the agents, unlink everything."""
        if self._control is not None:
            self._control.refuse(REASON_SHUTTING_DOWN)
        deadline = time.monotonic() + drain_timeout
        idle = BackoffIdleStrategy(max_spins=0, max_yields=0, min_park_ns=100_000, max_park_ns=2_000_000)
        while time.monotonic() < deadline and self._in_flight():
            idle.idle(self.drain())
        for child in self._children:
            child.runner.stop()
        for child in self._children:
            # A child still in on_start (compiling: minutes) has no snapshot to write and sees
            # its stop only after on_start: close() soon kills it, as safe as any crash.
            end = time.monotonic() + (30.0 if child.started else 0.0)
            while child.runner.is_alive() and time.monotonic() < end:
                self.drain()  # keep the output moving while the engine writes its snapshot
                child.runner.join(0.01)
            child.runner.close(timeout=5.0)
            if child.reader is not None:
                child.reader.close()
        self._children.clear()
        for c in self._monitors:
            c.close()
        self._monitors.clear()
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        for ring in self._rings.values():
            ring.close()
            ring.unlink()
        self._rings.clear()
        for _prefix, _stage, name in list_latency(self.names.prefix):  # what a killed child left
            unlink_latency(name)
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.started = False

    def _in_flight(self) -> bool:
        if not any(c.runner.is_alive() for c in self._children):
            return False
        fan_out = (self.names.output, self.names.reject)
        return any(ring.producer_position > ring.min_consumer_position()
                   for name, ring in self._rings.items() if name not in fan_out)

    def __enter__(self) -> "Exchange":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(config_path: str | None = None) -> int:
    from ringex.tools.config import ConfigError, load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(f"ringex run: {exc}", file=sys.stderr)
        return 2
    exchange = Exchange(cfg, child_log_level=logging.INFO)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # start() then removes what it created

    previous = signal.signal(signal.SIGTERM, interrupted)  # a SIGTERM while compiling, too
    try:
        exchange.start()
    except (EngineStateError, JournalBehindSnapshotError, StartError) as exc:
        # start() left nothing behind; say why in one line rather than a traceback
        print(f"ringex run: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ringex run: interrupted while starting; nothing left running", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    names = exchange.names
    print(f"ringex {cfg.exchange.name}: data in {exchange.data_dir}")
    if exchange.stale_reclaimed:
        print(f"  reclaimed stale rings left by a crashed run: {', '.join(exchange.stale_reclaimed)}")
    if exchange.stale_resumed:
        print(f"  resumed the rings a crashed run left, with what was in flight: {', '.join(exchange.stale_resumed)}")
    for child in exchange._children:
        print(f"  process {child.name} (pid {child.runner.pid}): {', '.join(child.agents)}")
    print(f"  admin ring /dev/shm/{names.admin.lstrip('/')}; order rings: "
          + ", ".join(f"/dev/shm/{names.gateway(g)}" for g in cfg.rings.gateways))
    for g in cfg.gateway:
        print(f"  gateway {g.name} ({g.protocol}) on {g.listen}: sessions "
              + ", ".join(f"{s.id} (accounts {', '.join(map(str, s.accounts))})" for s in g.session))
    for f in cfg.feed:
        print(f"  feed {f.name}: ITCH 5.0 over MoldUDP64 to {f.destination} (UDP); retransmission on "
              f"{f.retransmit_listen} (UDP); snapshots on {f.snapshot_listen} (SoupBinTCP, login {f.username})")
    print(f"  instruments: {', '.join(f'{i.id}={i.symbol}' for i in cfg.instrument)}; "
          f"accounts: {', '.join(str(a.id) for a in cfg.account)}; "
          f"insurance fund: {cfg.insurance_fund.deposit}")
    print("Ctrl-C stops the exchange (final snapshot, shared memory removed).")
    interactive = sys.stdout.isatty()

    def show(line: str) -> None:
        if interactive:
            print("\r" + line, end="", flush=True)
        else:
            print(line, flush=True)

    exchange.run_forever(show)
    if interactive:
        print()
    print("ringex stopped cleanly.")
    return 0
