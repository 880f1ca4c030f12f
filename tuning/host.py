"""Read the host facts that matter for latency, from sysfs and procfs.

Everything the checker knows about the machine comes from :func:`read_host`, which reads
under a root directory (``/`` by default) so that tests can point it at a fake
``sys``/``proc`` tree. A file that is missing or unreadable makes its fact ``None``
("unknown"); reading the host never raises.

Facts read (paths relative to the root):

- ``sys/devices/system/cpu/{online,present,isolated}`` and ``smt/{control,active}``
- ``sys/devices/system/cpu/cpuN/topology/{thread_siblings_list,core_id,physical_package_id}``
- ``sys/devices/system/cpu/cpuN/cpufreq/scaling_governor`` (absent in most VMs)
- ``sys/devices/system/node/nodeN/cpulist``
- ``proc/cmdline`` (``isolcpus=``, ``nohz_full=``, ``rcu_nocbs=``, ``irqaffinity=``)
- ``sys/kernel/mm/transparent_hugepage/{enabled,defrag}``
- ``sys/class/net/IFACE`` (its device's ``msi_irqs``), ``proc/interrupts``,
  ``proc/irq/N/smp_affinity_list``
- ``proc/PID/comm`` (only to tell whether ``irqbalance`` runs)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec

__all__ = [
    "HostFacts",
    "NicIrq",
    "parse_cpulist",
    "format_cpulist",
    "read_host",
]


# ----------------------------------------------------------------------------- cpu lists

def parse_cpulist(text: str | None, *, last_cpu: int | None = None) -> list[int] | None:
    """Parse a kernel cpu list (``0-3,8,10-15:2/4``) into sorted CPU numbers.

    Empty text is the empty list; malformed text (or ``None``) is ``None``. ``N`` (the last
    CPU, accepted by the kernel on its command line) is understood when ``last_cpu`` is known.
    """
    if text is None:
        return None
    text = text.strip()
    if not text:
        return []
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\w+)(?:-(\w+))?(?::(\d+)/(\d+))?", part)
        if m is None:
            return None
        lo_s, hi_s, used_s, group_s = m.groups()

        def num(s: str) -> int | None:
            if s == "N":
                return last_cpu
            return int(s) if s.isdigit() else None

        lo = num(lo_s)
        hi = num(hi_s) if hi_s is not None else lo
        if lo is None or hi is None or hi < lo:
            return None
        if used_s is None:
            cpus.update(range(lo, hi + 1))
        else:
            used, group = int(used_s), int(group_s)
            if group <= 0 or used <= 0 or used > group:
                return None
            for start in range(lo, hi + 1, group):
                cpus.update(c for c in range(start, min(start + used, hi + 1)))
    return sorted(cpus)


def format_cpulist(cpus: list[int] | set[int] | tuple[int, ...]) -> str:
    """Format CPU numbers as a kernel cpu list: ``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    out: list[str] = []
    nums = sorted(set(cpus))
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ",".join(out)


# ----------------------------------------------------------------------------- facts

class NicIrq(msgspec.Struct, frozen=True):
    """One interrupt line that belongs to a network interface."""

    irq: int
    iface: str
    name: str  # the description column of /proc/interrupts, e.g. "eth0-TxRx-3"
    affinity: list[int] | None  # /proc/irq/N/smp_affinity_list; None = unknown


class HostFacts(msgspec.Struct):
    """What :func:`read_host` found. ``None`` always means "unknown" (file missing/unreadable)."""

    root: str = "/"
    online_cpus: list[int] | None = None
    present_cpus: list[int] | None = None
    # cpu -> its SMT thread siblings, itself included (thread_siblings_list)
    thread_siblings: dict[int, list[int]] = msgspec.field(default_factory=dict)
    smt_control: str | None = None  # on / off / forceoff / notsupported / notimplemented
    smt_active: bool | None = None
    numa_nodes: dict[int, list[int]] | None = None  # node -> its CPUs
    isolated: list[int] | None = None  # /sys/devices/system/cpu/isolated
    cmdline: str | None = None
    cmdline_isolcpus: list[int] | None = None
    cmdline_nohz_full: list[int] | None = None
    cmdline_rcu_nocbs: list[int] | None = None
    cmdline_irqaffinity: list[int] | None = None
    # cpu -> scaling_governor for CPUs that have cpufreq; empty when cpufreq is absent (VMs)
    governors: dict[int, str] = msgspec.field(default_factory=dict)
    cpufreq_present: bool = False
    thp_enabled: str | None = None  # the bracketed choice: always / madvise / never
    thp_defrag: str | None = None
    nics: list[str] | None = None  # interfaces backed by a device (lo and virtual ones left out)
    nic_irqs: list[NicIrq] = msgspec.field(default_factory=list)
    irqbalance_running: bool | None = None

    # ---- derived views, used by the checker

    def cpus(self) -> list[int] | None:
        """The online CPUs, or the present ones, or those with a topology directory."""
        if self.online_cpus is not None:
            return self.online_cpus
        if self.present_cpus is not None:
            return self.present_cpus
        if self.thread_siblings:
            return sorted(self.thread_siblings)
        return None

    def core_of(self, cpu: int) -> tuple[int, ...]:
        """A key naming the physical core of ``cpu``: its sorted thread-sibling set."""
        sib = self.thread_siblings.get(cpu)
        return tuple(sib) if sib else (cpu,)

    def cores(self) -> list[tuple[int, ...]] | None:
        """The physical cores (each a tuple of its online SMT threads)."""
        cpus = self.cpus()
        if cpus is None:
            return None
        online = set(cpus)
        seen: dict[tuple[int, ...], None] = {}
        for c in cpus:
            seen.setdefault(tuple(x for x in self.core_of(c) if x in online) or (c,), None)
        return list(seen)

    def node_of(self, cpu: int) -> int | None:
        if not self.numa_nodes:
            return None
        for node, cpus in self.numa_nodes.items():
            if cpu in cpus:
                return node
        return None

    def isolated_cpus(self) -> list[int] | None:
        """CPUs isolated from the scheduler: sysfs ``isolated``, else ``isolcpus=`` on the cmdline."""
        if self.isolated is not None:
            return self.isolated
        return self.cmdline_isolcpus


# ----------------------------------------------------------------------------- reading

def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except (OSError, ValueError):
        return None


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _numbered(path: Path, prefix: str) -> list[int]:
    out = []
    for name in _listdir(path):
        m = re.fullmatch(re.escape(prefix) + r"(\d+)", name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def _bracketed(text: str | None) -> str | None:
    """``always [madvise] never`` -> ``madvise``; a bare single word is returned as is."""
    if text is None:
        return None
    m = re.search(r"\[([^\]]+)\]", text)
    if m:
        return m.group(1)
    words = text.split()
    return words[0] if len(words) == 1 else None


def _cmdline_cpulist(cmdline: str | None, key: str, last_cpu: int | None) -> list[int] | None:
    """The cpu list of ``key=`` on the kernel command line (flags like ``domain,`` skipped)."""
    if cmdline is None:
        return None
    # only the kernel's part: what follows " -- " goes to init
    kernel_part = cmdline.split(" -- ", 1)[0]
    value = None
    for tok in kernel_part.split():
        if tok.startswith(key + "="):
            value = tok[len(key) + 1:]  # the last one wins, as in the kernel
    if value is None:
        return None
    items = [v for v in value.split(",") if v and not re.fullmatch(r"[a-z_]+", v)]
    return parse_cpulist(",".join(items), last_cpu=last_cpu)


def _read_nics(root: Path) -> tuple[list[str] | None, dict[str, set[int]], dict[str, set[str]]]:
    """Interfaces with a device, the IRQs their device lists, and name tokens for them."""
    net = root / "sys/class/net"
    if not net.is_dir():
        return None, {}, {}
    nics: list[str] = []
    msi: dict[str, set[int]] = {}
    tokens: dict[str, set[str]] = {}
    for iface in _listdir(net):
        dev = net / iface / "device"
        if iface == "lo" or not dev.exists():
            continue
        nics.append(iface)
        toks = {iface}
        irqs: set[int] = set()
        try:
            real = Path(os.path.realpath(dev))
        except OSError:
            real = dev
        if real.name.startswith("virtio"):
            # virtio-net names its vectors after the virtio device: virtio2-input.0
            toks.add(real.name)
        for d in (dev, real.parent) if real.name.startswith("virtio") else (dev,):
            for name in _listdir(d / "msi_irqs"):
                if name.isdigit():
                    irqs.add(int(name))
        msi[iface] = irqs
        tokens[iface] = toks
    return nics, msi, tokens


def _read_interrupts(root: Path) -> dict[int, str]:
    """IRQ number -> its description (everything after the per-CPU counts and the chip)."""
    text = _read(root / "proc/interrupts")
    if text is None:
        return {}
    lines = text.splitlines()
    if not lines:
        return {}
    ncpu = len(lines[0].split())
    out: dict[int, str] = {}
    for line in lines[1:]:
        head, _, rest = line.partition(":")
        head = head.strip()
        if not head.isdigit():
            continue  # NMI, LOC, ... are not device interrupts
        fields = rest.split()
        desc = fields[ncpu:]
        # the chip and hw-irq columns come first; the device name(s) last
        out[int(head)] = " ".join(desc)
    return out


def _irq_names_match(desc: str, token: str) -> bool:
    return re.search(r"(?<![\w])" + re.escape(token) + r"(?![0-9A-Za-z])", desc) is not None


def _irqbalance_running(root: Path) -> bool | None:
    proc = root / "proc"
    pids = [p for p in _listdir(proc) if p.isdigit()]
    if not pids:
        return None
    for pid in pids:
        if _read(proc / pid / "comm") == "irqbalance":
            return True
    return False


def read_host(root: Path = Path("/")) -> HostFacts:
    """Read the host's latency-relevant facts under ``root``. Never raises on missing files."""
    root = Path(root)
    cpu_dir = root / "sys/devices/system/cpu"
    facts = HostFacts(root=str(root))

    facts.online_cpus = parse_cpulist(_read(cpu_dir / "online"))
    facts.present_cpus = parse_cpulist(_read(cpu_dir / "present"))
    all_cpus = _numbered(cpu_dir, "cpu")
    known = facts.cpus() or all_cpus
    last_cpu = max(known) if known else None

    for cpu in all_cpus:
        sib = parse_cpulist(_read(cpu_dir / f"cpu{cpu}/topology/thread_siblings_list"))
        if sib:
            facts.thread_siblings[cpu] = sib
        gov = _read(cpu_dir / f"cpu{cpu}/cpufreq/scaling_governor")
        if gov:
            facts.governors[cpu] = gov
    if not facts.governors:
        # a policyN directory also proves cpufreq exists (per-policy layout)
        facts.cpufreq_present = bool(_numbered(cpu_dir / "cpufreq", "policy"))
        for pol in _numbered(cpu_dir / "cpufreq", "policy"):
            gov = _read(cpu_dir / f"cpufreq/policy{pol}/scaling_governor")
            for c in parse_cpulist(_read(cpu_dir / f"cpufreq/policy{pol}/affected_cpus")) or []:
                if gov:
                    facts.governors[c] = gov
    else:
        facts.cpufreq_present = True

    facts.smt_control = _read(cpu_dir / "smt/control")
    active = _read(cpu_dir / "smt/active")
    facts.smt_active = None if active is None else active == "1"

    node_dir = root / "sys/devices/system/node"
    nodes = _numbered(node_dir, "node")
    if nodes:
        numa: dict[int, list[int]] = {}
        for n in nodes:
            cl = parse_cpulist(_read(node_dir / f"node{n}/cpulist"))
            if cl is not None:
                numa[n] = cl
        facts.numa_nodes = numa or None

    facts.isolated = parse_cpulist(_read(cpu_dir / "isolated"))
    facts.cmdline = _read(root / "proc/cmdline")
    facts.cmdline_isolcpus = _cmdline_cpulist(facts.cmdline, "isolcpus", last_cpu)
    facts.cmdline_nohz_full = _cmdline_cpulist(facts.cmdline, "nohz_full", last_cpu)
    facts.cmdline_rcu_nocbs = _cmdline_cpulist(facts.cmdline, "rcu_nocbs", last_cpu)
    facts.cmdline_irqaffinity = _cmdline_cpulist(facts.cmdline, "irqaffinity", last_cpu)

    thp = root / "sys/kernel/mm/transparent_hugepage"
    facts.thp_enabled = _bracketed(_read(thp / "enabled"))
    facts.thp_defrag = _bracketed(_read(thp / "defrag"))

    nics, msi, tokens = _read_nics(root)
    facts.nics = nics
    interrupts = _read_interrupts(root)
    for irq in sorted(interrupts):
        desc = interrupts[irq]
        for iface in nics or []:
            if irq in msi.get(iface, ()) or any(_irq_names_match(desc, t) for t in tokens[iface]):
                name = desc.split()[-1] if desc.split() else ""
                aff = parse_cpulist(_read(root / f"proc/irq/{irq}/smp_affinity_list"))
                facts.nic_irqs.append(NicIrq(irq=irq, iface=iface, name=name, affinity=aff))
                break
    facts.irqbalance_running = _irqbalance_running(root)
    return facts
