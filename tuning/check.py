"""``ringex tune check``: what matters for latency on this host, and what was found.

Usage::

    ringex tune check [--json] [--topology FILE] [--root DIR]
    python -m ringex.tuning.check ...

It reads the host once (:func:`ringex.tuning.host.read_host`), then the pure function
:func:`check` turns the facts (and, optionally, a process topology) into findings: CPUs and
SMT siblings, NUMA nodes, isolated CPUs, frequency governors, transparent huge pages, NIC
IRQ affinity, and whether the topology's pinning is sound. Each finding has a severity
(ok / info / warn / error), a topic, what was found, and a recommendation naming the script
in ``tuning/`` that applies it.

Exit status: 0 when no finding is an error, 1 when one is, 2 when the command line or the
topology file is wrong. Warnings do not fail the command.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from itertools import combinations
from pathlib import Path
from typing import Literal

import msgspec

from ringex.tuning.host import HostFacts, format_cpulist, read_host
from ringex.tuning.topology import Topology, TopologyError, load_config_topology, load_topology

__all__ = [
    "Finding",
    "Severity",
    "SEVERITIES",
    "check",
    "main",
    "read_host",
    "HostFacts",
    "Topology",
    "load_topology",
    "MIN_CPUS_FOR_PINNING",
]

Severity = Literal["ok", "info", "warn", "error"]
SEVERITIES: tuple[str, ...] = ("ok", "info", "warn", "error")

#: Below this many CPUs a busy-spin, pinned topology starves everyone, and the scripts refuse.
MIN_CPUS_FOR_PINNING = 4

SET_GOVERNOR = "tuning/set-governor.sh"
DISABLE_THP = "tuning/disable-thp.sh"
IRQ_AFFINITY = "tuning/irq-affinity.sh"
ISOLATE_CPUS = "tuning/isolate-cpus.sh"


class Finding(msgspec.Struct, frozen=True):
    """One thing the checker found, and what to do about it."""

    severity: Severity
    topic: str
    found: str
    recommendation: str = ""
    script: str | None = None  # the tuning/ script that applies the recommendation, if any


def _cl(cpus) -> str:
    return format_cpulist(cpus) if cpus else "none"


def _cpus(cpus) -> str:
    """``CPU 3`` or ``CPUs 3-5``."""
    cpus = sorted(set(cpus))
    return f"CPU {cpus[0]}" if len(cpus) == 1 else f"CPUs {_cl(cpus)}"


# ----------------------------------------------------------------------------- host checks

def _check_cpus(host: HostFacts) -> list[Finding]:
    cpus = host.cpus()
    if cpus is None:
        return [Finding("info", "cpus", "CPU list unknown (no /sys/devices/system/cpu/online)",
                        "run on the host itself, not in a restricted container")]
    cores = host.cores() or []
    out: list[Finding] = []
    smt_cores = [c for c in cores if len(c) > 1]
    if smt_cores:
        shown = " ".join(format_cpulist(c) for c in smt_cores[:6]) + (" ..." if len(smt_cores) > 6 else "")
        out.append(Finding(
            "info", "cpus",
            f"{len(cpus)} CPUs on {len(cores)} cores: SMT on (siblings {shown})",
            "give each busy-spin process a whole core: pin it to one thread and leave the "
            "sibling idle, or turn SMT off (firmware, or "
            "'echo off > /sys/devices/system/cpu/smt/control')",
        ))
    else:
        known = "" if host.thread_siblings else " (SMT siblings unknown)"
        out.append(Finding("ok", "cpus", f"{len(cpus)} CPUs on {len(cores)} cores, no SMT siblings{known}"))
    if len(cpus) < MIN_CPUS_FOR_PINNING:
        out.append(Finding(
            "info", "cpus",
            f"small host: {len(cpus)} CPUs",
            f"busy-spin pinning does not pay below {MIN_CPUS_FOR_PINNING} CPUs: run the embedded "
            "composed topology with backoff idle strategies; the tuning/ scripts refuse to run here",
        ))
    return out


def _check_numa(host: HostFacts) -> list[Finding]:
    if not host.numa_nodes:
        return [Finding("info", "numa", "NUMA layout unknown (no /sys/devices/system/node)")]
    desc = "; ".join(f"node{n}: {_cl(c)}" for n, c in sorted(host.numa_nodes.items()))
    if len(host.numa_nodes) == 1:
        return [Finding("ok", "numa", f"1 NUMA node ({desc})")]
    return [Finding(
        "info", "numa", f"{len(host.numa_nodes)} NUMA nodes ({desc})",
        "keep a pipeline's processes on the node that holds its rings; set rings_numa_node "
        "in the topology so the check can verify it",
    )]


def _check_isolation(host: HostFacts) -> list[Finding]:
    iso = host.isolated_cpus()
    cpus = host.cpus()
    small = cpus is not None and len(cpus) < MIN_CPUS_FOR_PINNING
    params = []
    for key, val in (("isolcpus", host.cmdline_isolcpus), ("nohz_full", host.cmdline_nohz_full),
                     ("rcu_nocbs", host.cmdline_rcu_nocbs)):
        if val is not None:
            params.append(f"{key}={_cl(val)}")
    params_s = f" (cmdline: {', '.join(params)})" if params else ""
    if iso is None:
        return [Finding("info", "isolation", "isolated CPUs unknown (no /sys/devices/system/cpu/isolated)"
                        + params_s)]
    out: list[Finding] = []
    if not iso:
        if small:
            out.append(Finding("info", "isolation", "no isolated CPUs" + params_s,
                               "none needed on a small host"))
        else:
            out.append(Finding(
                "info", "isolation", "no CPUs isolated from the scheduler" + params_s,
                "for a busy-spin topology, isolate the agents' CPUs: "
                f"{ISOLATE_CPUS} --cpus LIST prints the kernel command line to add",
                ISOLATE_CPUS,
            ))
        return out
    out.append(Finding("ok", "isolation", f"isolated CPUs: {_cl(iso)}{params_s}"))
    if 0 in iso:
        out.append(Finding("warn", "isolation", "CPU 0 is isolated",
                           "leave CPU 0 to the kernel (timers, IRQs, housekeeping); "
                           f"isolate from CPU 1 up: {ISOLATE_CPUS}", ISOLATE_CPUS))
    if cpus is not None:
        missing = sorted(set(iso) - set(cpus))
        if missing:
            out.append(Finding("warn", "isolation", f"isolated CPUs {_cl(missing)} are not online",
                               "fix the kernel command line", ISOLATE_CPUS))
    for key, val in (("nohz_full", host.cmdline_nohz_full), ("rcu_nocbs", host.cmdline_rcu_nocbs)):
        lacking = sorted(set(iso) - set(val or []))
        if lacking:
            out.append(Finding(
                "info", "isolation", f"isolated CPUs {_cl(lacking)} lack {key}",
                f"add {key}={_cl(iso)} so the tick and RCU callbacks leave them alone: {ISOLATE_CPUS}",
                ISOLATE_CPUS,
            ))
    return out


def _check_governor(host: HostFacts, topology: Topology | None) -> list[Finding]:
    if not host.governors:
        if host.cpufreq_present:
            return [Finding("info", "governor", "cpufreq present but no scaling_governor readable")]
        return [Finding(
            "info", "governor",
            "no cpufreq on this host (a VM, or no cpufreq driver): frequency is the "
            "hypervisor's or firmware's to set",
            "nothing to set here; on bare metal use the performance governor "
            f"({SET_GOVERNOR}) and limit deep C-states in firmware",
        )]
    by_gov: dict[str, list[int]] = {}
    for cpu, gov in sorted(host.governors.items()):
        by_gov.setdefault(gov, []).append(cpu)
    desc = "; ".join(f"{g} on {_cl(c)}" for g, c in sorted(by_gov.items()))
    slow = sorted(c for c, g in host.governors.items() if g != "performance")
    if not slow:
        return [Finding("ok", "governor", f"governor {desc}")]
    pinned = sorted({c for p in (topology.processes if topology else []) for c in p.cpus} & set(slow))
    extra = f"; pinned CPUs {_cl(pinned)} among them" if pinned else ""
    return [Finding(
        "warn", "governor", f"governor {desc}{extra}",
        "set the performance governor so the clock does not drop while agents spin or wait: "
        f"{SET_GOVERNOR}",
        SET_GOVERNOR,
    )]


def _check_thp(host: HostFacts) -> list[Finding]:
    out = []
    if host.thp_enabled is None:
        out.append(Finding("info", "thp", "transparent huge pages: unknown (no "
                                          "/sys/kernel/mm/transparent_hugepage/enabled)"))
    elif host.thp_enabled == "always":
        out.append(Finding(
            "warn", "thp", "transparent huge pages enabled=always",
            "khugepaged and fault-time compaction stall the hot path unpredictably; set "
            f"madvise (the engine madvises its arena): {DISABLE_THP} --mode madvise", DISABLE_THP,
        ))
    elif host.thp_enabled == "never":
        out.append(Finding(
            "info", "thp", "transparent huge pages enabled=never: the engine's arena stays on "
            "4 KiB pages (it asks for huge pages with madvise, and measured faster on them)",
            f"madvise gives the arena huge pages without khugepaged elsewhere: {DISABLE_THP} --mode madvise",
            DISABLE_THP,
        ))
    else:
        out.append(Finding("ok", "thp", f"transparent huge pages enabled={host.thp_enabled}"))
    if host.thp_defrag is None:
        out.append(Finding("info", "thp", "THP defrag: unknown"))
    elif host.thp_defrag == "always":
        out.append(Finding(
            "warn", "thp", "THP defrag=always: page faults may stall in direct compaction",
            f"set defrag to madvise (or never): {DISABLE_THP}", DISABLE_THP,
        ))
    else:
        out.append(Finding("ok", "thp", f"THP defrag={host.thp_defrag}"))
    return out


def _busy_cpus(host: HostFacts, topology: Topology | None) -> tuple[set[int], str]:
    """CPUs that IRQs must stay off, and where that set came from."""
    if topology is not None and any(p.busy_spin and p.cpus for p in topology.processes):
        return {c for p in topology.processes if p.busy_spin for c in p.cpus}, "busy-spin CPUs"
    iso = host.isolated_cpus() or []
    if iso:
        return set(iso), "isolated CPUs"
    return set(), ""


def _check_irqs(host: HostFacts, topology: Topology | None) -> list[Finding]:
    if host.nics is None:
        return [Finding("info", "irq", "network interfaces unknown (no /sys/class/net)")]
    if not host.nics:
        return [Finding("info", "irq", "no network interfaces backed by a device")]
    busy, busy_what = _busy_cpus(host, topology)
    other_pinned = ({c for p in topology.processes if not p.busy_spin for c in p.cpus} - busy
                    if topology else set())
    cpus = host.cpus() or []
    housekeeping = sorted(set(cpus) - busy) if cpus else []
    hk = _cl(housekeeping) if housekeeping else "LIST"
    out: list[Finding] = []
    for iface in host.nics:
        irqs = [i for i in host.nic_irqs if i.iface == iface]
        if not irqs:
            out.append(Finding("info", "irq", f"{iface}: no IRQs found in /proc/interrupts"))
            continue
        nums = format_cpulist([i.irq for i in irqs])
        unknown = [i for i in irqs if i.affinity is None]
        spread = sorted({c for i in irqs for c in (i.affinity or [])})
        on_busy = sorted(set(spread) & busy)
        if on_busy:
            out.append(Finding(
                "warn", "irq",
                f"{iface}: IRQs {nums} may run on {busy_what} {_cl(on_busy)} (affinity {_cl(spread)})",
                f"steer NIC IRQs to housekeeping CPUs: {IRQ_AFFINITY} --cpus {hk}",
                IRQ_AFFINITY,
            ))
        elif unknown:
            out.append(Finding("info", "irq", f"{iface}: affinity of IRQs "
                               f"{format_cpulist([i.irq for i in unknown])} unknown"))
        elif set(spread) & other_pinned:
            out.append(Finding(
                "info", "irq",
                f"{iface}: IRQs {nums} may run on pinned CPUs {_cl(set(spread) & other_pinned)}",
                f"steer NIC IRQs to CPUs no agent uses: {IRQ_AFFINITY} --cpus LIST", IRQ_AFFINITY,
            ))
        elif busy:
            out.append(Finding("ok", "irq", f"{iface}: IRQs {nums} on CPUs {_cl(spread)}, "
                                            f"clear of {busy_what} {_cl(busy)}"))
        else:
            out.append(Finding(
                "info", "irq", f"{iface}: IRQs {nums} on CPUs {_cl(spread)}; no busy CPUs to keep clear",
                f"once agents are pinned, steer NIC IRQs off their CPUs: {IRQ_AFFINITY}",
            ))
    if host.irqbalance_running:
        sev: Severity = "warn" if busy else "info"
        out.append(Finding(
            sev, "irq", "irqbalance is running: it rewrites IRQ affinity",
            "stop it, or ban the busy CPUs (IRQBALANCE_BANNED_CPULIST="
            f"{_cl(busy) if busy else 'LIST'}); {IRQ_AFFINITY} warns about it too",
            IRQ_AFFINITY,
        ))
    return out


# ----------------------------------------------------------------------------- topology

def _check_topology(host: HostFacts, topo: Topology) -> list[Finding]:
    T = "topology"
    procs = topo.processes
    if not procs:
        return [Finding("info", T, "topology has no processes")]
    out: list[Finding] = []
    cpus = host.cpus()
    online = set(cpus) if cpus is not None else None
    present = set(host.present_cpus or [])

    names = [p.name for p in procs]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        out.append(Finding("error", T, f"process name {dup!r} appears {names.count(dup)} times",
                           "give each process its own name"))
    seen_agent: dict[str, str] = {}
    for p in procs:
        for a in p.agents:
            if a in seen_agent and seen_agent[a] != p.name:
                out.append(Finding("error", T, f"agent {a!r} is in both {seen_agent[a]} and {p.name}",
                                   "run each agent in one process"))
            seen_agent.setdefault(a, p.name)

    # pinned CPUs exist
    if online is None:
        out.append(Finding("info", T, "host CPU list unknown: cannot verify that pinned CPUs exist"))
    else:
        for p in procs:
            bad = sorted(set(p.cpus) - online)
            if bad:
                offline = sorted(set(bad) & present)
                what = "are offline" if offline == bad else "do not exist"
                out.append(Finding(
                    "error", T, f"{p.name} is pinned to {_cpus(bad)}, which {what} "
                                f"(online: {_cl(sorted(online))})",
                    "pin to online CPUs",
                ))

    spinners = [p for p in procs if p.busy_spin]
    for p in spinners:
        if not p.cpus:
            out.append(Finding("warn", T, f"{p.name} busy-spins but is not pinned",
                               "pin each busy-spin process to one CPU of its own"))
        elif len(p.cpus) > 1:
            out.append(Finding("info", T, f"{p.name} busy-spins on one thread but may float over "
                                          f"CPUs {_cl(p.cpus)}",
                               "pin a busy-spin process to exactly one CPU"))
        if 0 in p.cpus:
            out.append(Finding("warn", T, f"{p.name} busy-spins on CPU 0",
                               "leave CPU 0 to the kernel and housekeeping; pin from CPU 1 up"))

    # sharing: CPUs and SMT siblings
    for a, b in combinations(procs, 2):
        if not (a.busy_spin or b.busy_spin) or not a.cpus or not b.cpus:
            continue
        shared = sorted(set(a.cpus) & set(b.cpus))
        if a.busy_spin and b.busy_spin:
            if shared:
                out.append(Finding(
                    "error", T, f"{a.name} and {b.name} both busy-spin on {_cpus(shared)}",
                    "give each busy-spin process its own core, or compose their agents into one process",
                ))
                continue
            cores_a = {host.core_of(c) for c in a.cpus}
            cores_b = {host.core_of(c) for c in b.cpus}
            common = cores_a & cores_b
            if common:
                out.append(Finding(
                    "warn", T, f"{a.name} and {b.name} busy-spin on SMT siblings of one core "
                               f"({'; '.join(format_cpulist(c) for c in sorted(common))})",
                    "put busy-spin processes on different physical cores (or turn SMT off)",
                ))
        elif shared:
            spin, other = (a, b) if a.busy_spin else (b, a)
            out.append(Finding(
                "warn", T, f"{spin.name} busy-spins on {_cpus(shared)}, which {other.name} "
                           f"({other.idle}) also uses",
                f"move {other.name} off the spinning CPU, or it only runs when the scheduler preempts",
            ))

    # isolation
    iso = host.isolated_cpus()
    if spinners:
        if iso is None:
            out.append(Finding("info", T, "isolated CPUs unknown: cannot verify busy-spin placement"))
        else:
            for p in spinners:
                loose = sorted(set(p.cpus) - set(iso))
                if p.cpus and loose:
                    out.append(Finding(
                        "warn", T, f"{p.name} busy-spins on {_cpus(loose)}, not isolated",
                        f"isolate the busy-spin CPUs from the scheduler: {ISOLATE_CPUS} --cpus "
                        f"{_cl(sorted({c for s in spinners for c in s.cpus if c != 0}))}",
                        ISOLATE_CPUS,
                    ))

    # NUMA
    pinned = [p for p in procs if p.cpus]
    if topo.rings_numa_node is not None:
        node = topo.rings_numa_node
        if not host.numa_nodes:
            out.append(Finding("info", T, f"NUMA layout unknown: cannot verify that processes run on "
                                          f"node{node} with their rings"))
        elif node not in host.numa_nodes:
            out.append(Finding("error", T, f"rings_numa_node = {node}, but the host has nodes "
                                           f"{_cl(sorted(host.numa_nodes))}",
                               "name a node that exists"))
        else:
            node_cpus = set(host.numa_nodes[node])
            for p in pinned:
                far = sorted(c for c in set(p.cpus) - node_cpus if online is None or c in online)
                if far:
                    out.append(Finding(
                        "warn", T, f"{p.name} runs on {_cpus(far)}, off node{node} where its rings are",
                        f"pin it to node{node}'s CPUs ({_cl(sorted(node_cpus))})",
                    ))
    elif host.numa_nodes and len(host.numa_nodes) > 1 and pinned:
        nodes = sorted({n for p in pinned for c in p.cpus if (n := host.node_of(c)) is not None})
        if len(nodes) > 1:
            out.append(Finding(
                "warn", T, f"pinned processes span NUMA nodes {_cl(nodes)}",
                "keep the processes that share rings on one node and set rings_numa_node",
            ))

    # enough cores for the spinners
    cores = host.cores()
    if spinners and cores is not None:
        free = max(len(cores) - 1, 0)
        if len(spinners) > free:
            out.append(Finding(
                "warn", T,
                f"{len(spinners)} busy-spin processes but {free} free cores "
                f"({len(cores)} cores, one kept for the OS and the non-spinning processes)",
                "compose agents into fewer processes, or use backoff idle strategies on this host",
            ))

    if not any(f.severity in ("warn", "error") for f in out):
        out.append(Finding("ok", T, f"{len(procs)} processes ({len(spinners)} busy-spin): pinning sound"))
    return out


def check(host: HostFacts, topology: Topology | None = None) -> list[Finding]:
    """Judge the host (and the topology, if given). Pure: reads nothing, changes nothing."""
    findings: list[Finding] = []
    findings += _check_cpus(host)
    findings += _check_numa(host)
    findings += _check_isolation(host)
    findings += _check_governor(host, topology)
    findings += _check_thp(host)
    findings += _check_irqs(host, topology)
    if topology is not None:
        findings += _check_topology(host, topology)
    return findings


# ----------------------------------------------------------------------------- output

def worst(findings: list[Finding]) -> str:
    return max((f.severity for f in findings), key=SEVERITIES.index, default="ok")


def counts(findings: list[Finding]) -> dict[str, int]:
    return {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES}


def to_json(host: HostFacts, topology: Topology | None, findings: list[Finding]) -> bytes:
    return msgspec.json.encode({
        "findings": findings,
        "counts": counts(findings),
        "worst": worst(findings),
        "host": host,
        "topology": topology,
    })


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [""]


def format_table(findings: list[Finding], width: int | None = None) -> str:
    if width is None:
        width = shutil.get_terminal_size((120, 24)).columns
    width = max(width, 80)
    sev_w, topic_w = 8, 10
    rest = width - sev_w - topic_w - 6
    found_w = max(rest * 9 // 20, 24)
    rec_w = max(rest - found_w, 24)
    head = f"{'SEVERITY':<{sev_w}}  {'TOPIC':<{topic_w}}  {'FOUND':<{found_w}}  RECOMMENDATION"
    lines = [head, "-" * min(width, len(head) + rec_w - len("RECOMMENDATION"))]
    for f in findings:
        found = _wrap(f.found, found_w)
        rec = _wrap(f.recommendation, rec_w)
        for i in range(max(len(found), len(rec))):
            sev = f.severity.upper() if i == 0 else ""
            topic = f.topic if i == 0 else ""
            fl = found[i] if i < len(found) else ""
            rl = rec[i] if i < len(rec) else ""
            lines.append(f"{sev:<{sev_w}}  {topic:<{topic_w}}  {fl:<{found_w}}  {rl}".rstrip())
    c = counts(findings)
    lines.append("")
    lines.append(", ".join(f"{c[s]} {s}" for s in SEVERITIES))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringex tune check",
        description="Report what matters for latency on this host: CPUs and SMT, NUMA, isolated "
                    "CPUs, frequency governors, transparent huge pages, NIC IRQ affinity, and "
                    "whether a topology's pinning is sound. Reads only; changes nothing.",
        epilog="Exit status: 0 no errors (warnings allowed), 1 an error finding, 2 bad usage "
               "or topology file. The scripts in tuning/ apply the recommendations.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--topology", metavar="FILE", type=Path,
                        help="TOML topology ([[process]] name, cpus, agents, idle; rings_numa_node)")
    parser.add_argument("--config", metavar="FILE", type=Path,
                        help="an exchange configuration (ringex run --config): check its [[process]] tables")
    parser.add_argument("--root", metavar="DIR", type=Path, default=Path("/"),
                        help="read sys/ and proc/ under DIR instead of / (for a captured tree)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    topology = None
    try:
        if args.topology is not None:
            topology = load_topology(args.topology)
        elif args.config is not None:
            topology = load_config_topology(args.config)
    except TopologyError as exc:
        print(f"ringex tune check: {exc}", file=sys.stderr)
        return 2
    host = read_host(args.root)
    findings = check(host, topology)
    if args.json:
        sys.stdout.write(to_json(host, topology, findings).decode() + "\n")
    else:
        print(format_table(findings))
    return 1 if worst(findings) == "error" else 0


if __name__ == "__main__":
    sys.exit(main())
