"""ringex.tuning: host facts from fake sysfs/procfs trees, the checker's findings, and the
scripts' refusals, dry runs and real runs. No script ever runs against this host: run_script
requires a fake tree (RINGEX_TUNING_ROOT), so a test's safety never rests on the guards it
tests, and real runs write only inside that tree."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec
import pytest

from ringex.ringbuffer.process_spec import ProcessSpec
from ringex.tuning import check as chk
from ringex.tuning.check import Finding, check, main
from ringex.tuning.host import HostFacts, format_cpulist, parse_cpulist, read_host
from ringex.tuning.topology import Topology, TopologyError, load_config_topology, load_topology, parse_topology

REPO = Path(__file__).resolve().parents[1]
TUNING = REPO / "tuning"
SCRIPTS = ["set-governor.sh", "disable-thp.sh", "irq-affinity.sh", "isolate-cpus.sh"]


# ----------------------------------------------------------------------------- fake trees

def _w(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")


def make_host(
    root: Path,
    *,
    cpus: int = 8,
    smt: bool = True,
    nodes: dict[int, str] | None = None,
    isolated: str = "",
    cmdline: str = "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet",
    governors: dict[int, str] | None = None,
    thp: tuple[str, str] | None = ("always madvise [never]", "always defer defer+madvise [madvise] never"),
    nic_affinity: str | None = None,
    irqbalance: bool = False,
) -> Path:
    """A fake sys/ and proc/ tree. With smt, CPU i and i + cpus/2 are siblings (Intel layout)."""
    cpu = root / "sys/devices/system/cpu"
    last = cpus - 1
    _w(cpu / "online", f"0-{last}")
    _w(cpu / "present", f"0-{last}")
    _w(cpu / "possible", f"0-{last}")
    _w(cpu / "isolated", isolated)
    _w(cpu / "smt/control", "on" if smt else "off")
    _w(cpu / "smt/active", "1" if smt else "0")
    half = cpus // 2
    for i in range(cpus):
        sib = f"{i % half},{i % half + half}" if smt else str(i)
        _w(cpu / f"cpu{i}/topology/thread_siblings_list", sib)
        _w(cpu / f"cpu{i}/topology/core_id", str(i % half if smt else i))
        if governors is not None and i in governors:
            _w(cpu / f"cpu{i}/cpufreq/scaling_governor", governors[i])
            _w(cpu / f"cpu{i}/cpufreq/scaling_available_governors", "performance powersave")
    for n, cl in (nodes if nodes is not None else {0: f"0-{last}"}).items():
        _w(root / f"sys/devices/system/node/node{n}/cpulist", cl)
    _w(root / "proc/cmdline", cmdline)
    if thp is not None:
        _w(root / "sys/kernel/mm/transparent_hugepage/enabled", thp[0])
        _w(root / "sys/kernel/mm/transparent_hugepage/defrag", thp[1])

    # eth0: a NIC named in /proc/interrupts; ens1f0: an mlx5 NIC found only through msi_irqs;
    # virbr0 has no device (virtual) and lo is skipped.
    (root / "sys/class/net/eth0/device").mkdir(parents=True)
    (root / "sys/class/net/ens1f0/device/msi_irqs/130").parent.mkdir(parents=True)
    _w(root / "sys/class/net/ens1f0/device/msi_irqs/130", "msi")
    _w(root / "sys/class/net/ens1f0/device/msi_irqs/131", "msi")
    (root / "sys/class/net/lo").mkdir(parents=True)
    (root / "sys/class/net/virbr0").mkdir(parents=True)
    counts = " ".join(["0"] * cpus)
    header = " ".join(f"CPU{i}" for i in range(cpus))
    lines = [
        f"           {header}",
        f"  0:  {counts}  IO-APIC   2-edge      timer",
        f"120:  {counts}  IR-PCI-MSI 524288-edge      eth0-TxRx-0",
        f"121:  {counts}  IR-PCI-MSI 524289-edge      eth0-TxRx-1",
        f"122:  {counts}  IR-PCI-MSI 524290-edge      eth01-TxRx-0",  # not eth0
        f"130:  {counts}  IR-PCI-MSI 1048576-edge      mlx5_comp0@pci:0000:3b:00.0",
        f"131:  {counts}  IR-PCI-MSI 1048577-edge      mlx5_comp1@pci:0000:3b:00.0",
        f"NMI:  {counts}   Non-maskable interrupts",
        f"LOC:  {counts}   Local timer interrupts",
    ]
    _w(root / "proc/interrupts", "\n".join(lines))
    for irq in (0, 120, 121, 122, 130, 131):
        _w(root / f"proc/irq/{irq}/smp_affinity_list", nic_affinity or f"0-{last}")
    _w(root / "proc/1/comm", "systemd")
    _w(root / "proc/42/comm", "irqbalance" if irqbalance else "sshd")
    return root


def by_topic(findings: list[Finding], topic: str) -> list[Finding]:
    return [f for f in findings if f.topic == topic]


def severities(findings: list[Finding], topic: str) -> set[str]:
    return {f.severity for f in by_topic(findings, topic)}


def spin(name: str, *cpus: int, idle: str = "busy-spin") -> ProcessSpec:
    """A process the pinning checks judge; they look at CPUs and idle, not at its agents."""
    return ProcessSpec(name=name, cpus=list(cpus), idle=idle)


# ----------------------------------------------------------------------------- parsing

def test_parse_cpulist_forms() -> None:
    assert parse_cpulist("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("") == []
    assert parse_cpulist(None) is None
    assert parse_cpulist("garbage!") is None
    assert parse_cpulist("3-1") is None
    assert parse_cpulist("0-15:2/4") == [0, 1, 4, 5, 8, 9, 12, 13]
    assert parse_cpulist("2-N", last_cpu=5) == [2, 3, 4, 5]
    assert format_cpulist([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"


def test_smt_siblings_and_numa(tmp_path: Path) -> None:
    make_host(tmp_path, cpus=8, smt=True, nodes={0: "0-1,4-5", 1: "2-3,6-7"})
    host = read_host(tmp_path)
    assert host.online_cpus == list(range(8))
    assert host.thread_siblings[0] == [0, 4]
    assert host.thread_siblings[6] == [2, 6]
    assert host.core_of(4) == host.core_of(0)
    assert sorted(host.cores()) == [(0, 4), (1, 5), (2, 6), (3, 7)]
    assert host.numa_nodes == {0: [0, 1, 4, 5], 1: [2, 3, 6, 7]}
    assert host.node_of(6) == 1
    findings = check(host)
    cpus = by_topic(findings, "cpus")
    assert any("SMT on" in f.found and "0,4" in f.found for f in cpus)
    numa = by_topic(findings, "numa")
    assert numa[0].severity == "info" and "2 NUMA nodes" in numa[0].found


def test_no_smt_single_node(tmp_path: Path) -> None:
    make_host(tmp_path, cpus=4, smt=False)
    findings = check(read_host(tmp_path))
    assert by_topic(findings, "cpus")[0].severity == "ok"
    assert "4 CPUs on 4 cores" in by_topic(findings, "cpus")[0].found
    assert severities(findings, "numa") == {"ok"}


def test_isolated_cpus_from_sysfs_and_cmdline(tmp_path: Path) -> None:
    make_host(tmp_path, isolated="2-3,6-7",
              cmdline="BOOT_IMAGE=/vmlinuz isolcpus=managed_irq,domain,2-3,6-7 nohz_full=2-3,6-7 "
                      "rcu_nocbs=2-3,6-7 irqaffinity=0-1,4-5 -- init-arg isolcpus=9")
    host = read_host(tmp_path)
    assert host.isolated == [2, 3, 6, 7]
    assert host.cmdline_isolcpus == [2, 3, 6, 7]
    assert host.cmdline_nohz_full == [2, 3, 6, 7]
    assert host.cmdline_rcu_nocbs == [2, 3, 6, 7]
    assert host.cmdline_irqaffinity == [0, 1, 4, 5]
    iso = by_topic(check(host), "isolation")
    assert [f.severity for f in iso] == ["ok"]
    assert "2-3,6-7" in iso[0].found


def test_isolation_without_nohz_full_and_cpu0(tmp_path: Path) -> None:
    make_host(tmp_path, isolated="0,2-3", cmdline="isolcpus=0,2-3")
    iso = by_topic(check(read_host(tmp_path)), "isolation")
    assert any(f.severity == "warn" and "CPU 0" in f.found for f in iso)
    assert any("nohz_full" in f.found for f in iso)


def test_isolated_file_missing_falls_back_to_cmdline(tmp_path: Path) -> None:
    make_host(tmp_path, cmdline="quiet isolcpus=domain,2-N")
    (tmp_path / "sys/devices/system/cpu/isolated").unlink()
    host = read_host(tmp_path)
    assert host.isolated is None
    assert host.isolated_cpus() == [2, 3, 4, 5, 6, 7]


def test_governors(tmp_path: Path) -> None:
    a = make_host(tmp_path / "a", governors={i: "performance" for i in range(8)})
    assert severities(check(read_host(a)), "governor") == {"ok"}

    b = make_host(tmp_path / "b", governors={i: ("powersave" if i < 4 else "performance") for i in range(8)})
    gov = by_topic(check(read_host(b)), "governor")
    assert [f.severity for f in gov] == ["warn"]
    assert "powersave on 0-3" in gov[0].found
    assert gov[0].script == "tuning/set-governor.sh"

    c = make_host(tmp_path / "c", governors=None)  # a VM: no cpufreq at all
    host = read_host(c)
    assert host.governors == {} and host.cpufreq_present is False
    gov = by_topic(check(host), "governor")
    assert gov[0].severity == "info" and "no cpufreq" in gov[0].found


def test_thp(tmp_path: Path) -> None:
    a = make_host(tmp_path / "a", thp=("[always] madvise never", "[always] defer defer+madvise madvise never"))
    host = read_host(a)
    assert host.thp_enabled == "always" and host.thp_defrag == "always"
    thp = by_topic(check(host), "thp")
    assert [f.severity for f in thp] == ["warn", "warn"]
    assert all(f.script == "tuning/disable-thp.sh" for f in thp)

    b = make_host(tmp_path / "b", thp=("always [madvise] never", "always defer [defer+madvise] madvise never"))
    assert severities(check(read_host(b)), "thp") == {"ok"}

    c = make_host(tmp_path / "c", thp=None)
    assert severities(check(read_host(c)), "thp") == {"info"}

    d = make_host(tmp_path / "d", thp=("always madvise [never]", "always defer defer+madvise madvise [never]"))
    never = [f for f in by_topic(check(read_host(d)), "thp") if f.severity != "ok"]
    assert [f.severity for f in never] == ["info"] and "madvise" in never[0].recommendation


def test_nic_irqs_found_by_name_and_msi(tmp_path: Path) -> None:
    make_host(tmp_path)
    host = read_host(tmp_path)
    assert host.nics == ["ens1f0", "eth0"]
    got = {(i.iface, i.irq) for i in host.nic_irqs}
    assert got == {("eth0", 120), ("eth0", 121), ("ens1f0", 130), ("ens1f0", 131)}
    assert all(i.affinity == list(range(8)) for i in host.nic_irqs)


def test_nic_irqs_spread_over_busy_cpus_warn(tmp_path: Path) -> None:
    make_host(tmp_path, isolated="2-3")
    host = read_host(tmp_path)
    irq = by_topic(check(host), "irq")
    assert {f.severity for f in irq} == {"warn"}
    assert any("eth0" in f.found and "isolated CPUs 2-3" in f.found for f in irq)
    assert all(f.script == "tuning/irq-affinity.sh" for f in irq)

    topo = Topology(processes=[spin("engine", 5)])
    irq = by_topic(check(host, topo), "irq")
    assert all(f.severity == "warn" and "busy-spin CPUs 5" in f.found for f in irq)


def test_nic_irqs_on_housekeeping_cpus_ok(tmp_path: Path) -> None:
    make_host(tmp_path, isolated="2-3", nic_affinity="0-1")
    assert severities(check(read_host(tmp_path)), "irq") == {"ok"}


def test_irqbalance_running_is_reported(tmp_path: Path) -> None:
    make_host(tmp_path, isolated="2-3", nic_affinity="0-1", irqbalance=True)
    host = read_host(tmp_path)
    assert host.irqbalance_running is True
    assert any(f.severity == "warn" and "irqbalance" in f.found for f in check(host))


# ----------------------------------------------------------------------------- topology

@pytest.fixture()
def big_host(tmp_path: Path) -> HostFacts:
    """8 CPUs, SMT pairs (0,4) (1,5) (2,6) (3,7), 2-3 and 6-7 isolated; NUMA node0 has cores
    (0,4) (1,5), node1 has (2,6) (3,7)."""
    make_host(tmp_path, isolated="2-3,6-7", nodes={0: "0-1,4-5", 1: "2-3,6-7"},
              cmdline="isolcpus=2-3,6-7 nohz_full=2-3,6-7 rcu_nocbs=2-3,6-7", nic_affinity="0-1")
    return read_host(tmp_path)


def test_sound_topology_is_ok(big_host: HostFacts) -> None:
    topo = Topology(processes=[spin("sequencer", 2), spin("engine", 3),
                               spin("gateway", idle="backoff")], rings_numa_node=1)
    findings = check(big_host, topo)
    topo_f = by_topic(findings, "topology")
    assert [f.severity for f in topo_f] == ["ok"], topo_f
    assert "pinning sound" in topo_f[0].found
    assert chk.worst(findings) in ("ok", "info")


def test_two_busy_spin_on_one_cpu_is_error(big_host: HostFacts) -> None:
    topo = Topology(processes=[spin("sequencer", 2), spin("engine", 2)])
    t = by_topic(check(big_host, topo), "topology")
    assert any(f.severity == "error" and "sequencer and engine both busy-spin on CPU 2" in f.found for f in t)


def test_busy_spin_on_smt_siblings_is_warn(big_host: HostFacts) -> None:
    topo = Topology(processes=[spin("sequencer", 2), spin("engine", 6)])  # 2 and 6 share a core
    t = by_topic(check(big_host, topo), "topology")
    assert [f.severity for f in t] == ["warn"]
    assert "SMT siblings" in t[0].found


def test_nonexistent_cpu_is_error(big_host: HostFacts) -> None:
    topo = Topology(processes=[spin("engine", 42)])
    t = by_topic(check(big_host, topo), "topology")
    assert any(f.severity == "error" and "CPU 42" in f.found and "do not exist" in f.found for f in t)


def test_busy_spin_not_isolated_and_numa(big_host: HostFacts) -> None:
    topo = Topology(processes=[spin("sequencer", 1), spin("engine", 6)], rings_numa_node=0)
    t = by_topic(check(big_host, topo), "topology")
    assert any(f.severity == "warn" and "sequencer busy-spins on CPU 1, not isolated" in f.found for f in t)
    assert any(f.severity == "warn" and "engine runs on CPU 6, off node0" in f.found for f in t)
    assert not any(f.severity == "error" for f in t)


def test_missing_numa_node_is_error(big_host: HostFacts) -> None:
    topo = Topology(processes=[spin("engine", 2)], rings_numa_node=3)
    assert any(f.severity == "error" and "rings_numa_node = 3" in f.found
               for f in check(big_host, topo))


def test_spinners_outnumber_free_cores(big_host: HostFacts) -> None:
    # 4 cores, one kept for the OS: 4 spinners on 4 distinct cores is one too many
    topo = Topology(processes=[spin("a", 1), spin("b", 2), spin("c", 3), spin("d", 7)])
    t = by_topic(check(big_host, topo), "topology")
    assert any(f.severity == "warn" and "4 busy-spin processes but 3 free cores" in f.found for f in t)


def test_spinner_shares_cpu_with_backoff_process(big_host: HostFacts) -> None:
    topo = Topology(processes=[spin("engine", 2), spin("admin", 2, idle="backoff")])
    t = by_topic(check(big_host, topo), "topology")
    assert any(f.severity == "warn" and "admin (backoff) also uses" in f.found for f in t)
    assert not any(f.severity == "error" for f in t)


def test_small_host_with_spinners_warns(tmp_path: Path) -> None:
    make_host(tmp_path, cpus=2, smt=False)
    topo = Topology(processes=[spin("a", 1), spin("b", 1, idle="backoff"), spin("c", idle="busy-spin")])
    t = by_topic(check(read_host(tmp_path), topo), "topology")
    assert any("not pinned" in f.found for f in t)
    assert any("free cores" in f.found for f in t)


def test_topology_toml_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "topo.toml"
    path.write_text(
        'rings_numa_node = 0\n'
        '[[process]]\nname = "sequencer"\ncpus = [2]\nagents = ["sequencer"]\nidle = "busy-spin"\n'
        '[[process]]\nname = "engine"\nagents = ["engine"]\nidle = "backoff"\n'
    )
    topo = load_topology(path)
    assert topo.rings_numa_node == 0
    assert topo.processes[0] == ProcessSpec("sequencer", [2], ["sequencer"], "busy-spin")
    assert topo.processes[1].cpus == []
    with pytest.raises(TopologyError, match=r"'fix-gw'.*\$\.process\[0\]\.agents\[0\]"):
        parse_topology('[[process]]\nname = "x"\nagents = ["fix-gw", "sequencer"]\n')
    with pytest.raises(TopologyError, match="idle"):
        parse_topology('[[process]]\nname = "x"\nidle = "spin-fast"\n')
    with pytest.raises(TopologyError, match="TOML"):
        parse_topology("[[process]\n")
    with pytest.raises(TopologyError):
        parse_topology('[[process]]\nname = "x"\ncpus = [-1]\n')
    with pytest.raises(TopologyError, match="cannot read"):
        load_topology(tmp_path / "absent.toml")


def test_config_topology_is_what_the_exchange_would_run(tmp_path: Path) -> None:
    """``--config``: the exchange configuration's own [[process]] tables, the same schema;
    the rest of the file is not the checker's business."""
    conf = tmp_path / "x.toml"
    conf.write_text("[exchange]\nname = 'x'\n[[process]]\nname = 'seq'\nagents = ['sequencer']\ncpus = [1]\n"
                    "idle = 'busy-spin'\n[[process]]\nname = 'eng'\nagents = ['engine']\n")
    topo = load_config_topology(conf)
    assert topo.processes == [ProcessSpec("seq", [1], ["sequencer"], "busy-spin"), ProcessSpec("eng", [], ["engine"])]
    conf.write_text("[exchange]\nname = 'x'\n")
    assert load_config_topology(conf).processes == [ProcessSpec("core", [], ["sequencer", "engine"], "backoff")]
    conf.write_text("[[process]]\nname = 'gw'\nagents = ['fix-gw']\n")
    with pytest.raises(TopologyError, match=r"x\.toml: .*'fix-gw'.*\$\.process\[0\]\.agents\[0\]"):
        load_config_topology(conf)
    with pytest.raises(TopologyError, match="cannot read"):
        load_config_topology(tmp_path / "absent.toml")


# ----------------------------------------------------------------------------- robustness, CLI

def test_empty_root_is_all_unknown_never_a_crash(tmp_path: Path) -> None:
    host = read_host(tmp_path)
    assert host.cpus() is None and host.numa_nodes is None and host.isolated is None
    assert host.thp_enabled is None and host.nics is None and host.nic_irqs == []
    findings = check(host, Topology(processes=[spin("engine", 2)], rings_numa_node=0))
    assert findings and all(f.severity in ("ok", "info", "warn") for f in findings)


def test_garbage_files_do_not_crash(tmp_path: Path) -> None:
    make_host(tmp_path)
    _w(tmp_path / "sys/devices/system/cpu/online", "zz")
    _w(tmp_path / "sys/devices/system/cpu/cpu1/topology/thread_siblings_list", "??")
    _w(tmp_path / "proc/interrupts", "")
    _w(tmp_path / "proc/irq/120/smp_affinity_list", "not-a-list")
    host = read_host(tmp_path)
    check(host, Topology(processes=[spin("e", 1)]))


def test_real_host_read_does_not_crash() -> None:
    host = read_host()
    findings = check(host)
    assert findings
    msgspec.json.encode(host)
    assert chk.format_table(findings)


def test_module_json_is_valid() -> None:
    out = subprocess.run([sys.executable, "-m", "ringex.tuning.check", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode in (0, 1), out.stderr
    data = json.loads(out.stdout)
    assert set(data) >= {"findings", "counts", "worst", "host"}
    assert all(set(f) >= {"severity", "topic", "found", "recommendation"} for f in data["findings"])


def test_main_table_and_topology_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_host(tmp_path / "root", isolated="2-3")
    topo = tmp_path / "bad.toml"
    topo.write_text('[[process]]\nname = "a"\ncpus = [2]\nidle = "busy-spin"\n'
                    '[[process]]\nname = "b"\ncpus = [2]\nidle = "busy-spin"\n')
    assert main(["--root", str(tmp_path / "root"), "--topology", str(topo)]) == 1
    out = capsys.readouterr().out
    assert "SEVERITY" in out and "ERROR" in out and "a and b both busy-spin on CPU 2" in out

    topo.write_text('[[process]]\nname = "a"\ncpus = [2]\nidle = "busy-spin"\n')
    assert main(["--root", str(tmp_path / "root"), "--topology", str(topo), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["topology"]["process"][0]["name"] == "a"

    topo.write_text("not toml [")
    assert main(["--topology", str(topo)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


# ----------------------------------------------------------------------------- scripts

def run_script(name: str, *args: str, root: Path, user: str | None = None, scripts: Path = TUNING,
               ) -> subprocess.CompletedProcess:
    """Run a tuning script (from ``scripts``) against the fake tree ``root``, never against this
    host: the root is required, and a root that is not a real directory other than / is a bug
    in the test."""
    root = Path(root).resolve()
    assert root.is_dir() and root != Path("/"), f"not a fake tree: {root}"
    env = {k: v for k, v in os.environ.items() if k != "RINGEX_TUNING_ROOT"}
    env["RINGEX_TUNING_ROOT"] = str(root)
    cmd = ["bash", str(scripts / name), *args]
    if user == "nobody":
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p)] = p.read_text()
    return out


@pytest.fixture()
def shared_tmp():
    """A temp dir that uid nobody can read (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="ringex-tuning-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_scripts_have_strict_mode_header_and_help(tmp_path: Path) -> None:
    for name in SCRIPTS:
        text = (TUNING / name).read_text()
        assert text.startswith("#!/usr/bin/env bash\n# tuning/" + name)
        assert "set -euo pipefail" in text
        assert "--dry-run" in text.split("set -euo pipefail")[0]
        assert name in (TUNING / "README.md").read_text()
        # an empty fake tree: --help and a bad argument stop before anything is read
        r = run_script(name, "--help", root=tmp_path)
        assert r.returncode == 0 and "Usage:" in r.stdout
        assert run_script(name, "--bogus", root=tmp_path).returncode == 2
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-x", *(str(TUNING / n) for n in SCRIPTS)],
                           capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 0, r.stdout


def test_scripts_name_no_host_path_outside_the_root() -> None:
    """Every path a script reads or writes goes through $SYS, $PROC or $CPU_DIR, rooted at
    RINGEX_TUNING_ROOT: a literal /sys or /proc in code would reach the real host from a test.
    Comments and the operator instructions isolate-cpus.sh prints (a here-document) may name
    them."""
    for name in [*SCRIPTS, "_lib.sh"]:
        in_heredoc = False
        for n, line in enumerate((TUNING / name).read_text().splitlines(), 1):
            if in_heredoc:
                in_heredoc = line != "MSG"
                continue
            in_heredoc = "<<MSG" in line
            code = "" if line.lstrip().startswith("#") else line.split(" #", 1)[0]
            code = code.replace("$ROOT_DIR/", "")  # _lib.sh roots $SYS and $PROC here
            assert not re.search(r"/(sys|proc)\b", code), f"{name}:{n}: {line.strip()}"


@pytest.mark.parametrize("name,args", [
    ("set-governor.sh", []), ("disable-thp.sh", []), ("irq-affinity.sh", []),
    ("irq-affinity.sh", ["--cpus", "0"]), ("isolate-cpus.sh", ["--cpus", "1"]),
])
def test_cpu_count_guard_on_fake_two_cpu_host(tmp_path: Path, name: str, args: list[str]) -> None:
    """A real run (as root where the suite runs as root) on a 2-CPU tree: the CPU-count guard
    refuses first, before any plan is printed or any file is written."""
    root = make_host(tmp_path, cpus=2, smt=False, governors={0: "powersave", 1: "powersave"},
                     thp=("[always] madvise never", "[always] madvise never"))
    before = snapshot(root)
    r = run_script(name, *args, root=root)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "refusing: this host has 2 online CPUs" in r.stderr and "at least 4" in r.stderr
    assert "nothing was changed" in r.stderr
    assert r.stdout == ""
    assert snapshot(root) == before


def test_dry_run_on_fake_two_cpu_host_says_it_would_refuse(tmp_path: Path) -> None:
    """A dry run on a small host prints its plan, says a real run would refuse, and exits 1."""
    root = make_host(tmp_path, cpus=2, smt=False, thp=("[always] madvise never", "[always] madvise never"))
    before = snapshot(root)
    r = run_script("isolate-cpus.sh", "--dry-run", "--cpus", "1", root=root)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "a real run would refuse: this host has 2 online CPUs" in r.stdout
    assert "isolcpus=managed_irq,domain,1 " in r.stdout and "irqaffinity=0" in r.stdout
    r = run_script("disable-thp.sh", "--dry-run", root=root)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "a real run would refuse: this host has 2 online CPUs" in r.stdout
    assert f"would write 'never' to {root}/sys/kernel/mm/transparent_hugepage/enabled" in r.stdout
    assert snapshot(root) == before


def _as_root() -> list[str] | None:
    """A command prefix that runs a script with uid 0 (nothing when the suite is root; a user
    namespace otherwise), or None where neither is available."""
    if os.geteuid() == 0:
        return []
    if shutil.which("unshare") and subprocess.run(["unshare", "--map-root-user", "true"],
                                                  capture_output=True).returncode == 0:
        return ["unshare", "--map-root-user"]
    return None


def test_real_runs_on_fake_big_host_write_exactly_the_planned_files(tmp_path: Path) -> None:
    """The write path itself, against a fake tree: every file a real run changes is one it was
    meant to change, under the root, with the value planned; a second run changes nothing."""
    prefix = _as_root()
    if prefix is None:
        pytest.skip("cannot run as uid 0 here (not root, no user namespaces)")
    root = make_host(tmp_path, governors={i: ("powersave" if i % 2 else "performance") for i in range(8)},
                     thp=("[always] madvise never", "always [madvise] never"), isolated="2-3")
    before = snapshot(root)

    def run(name: str, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "RINGEX_TUNING_ROOT": str(root)}
        return subprocess.run([*prefix, "bash", str(TUNING / name), *args],
                              capture_output=True, text=True, timeout=60, env=env)

    for name in ("set-governor.sh", "disable-thp.sh", "irq-affinity.sh"):
        r = run(name)
        assert r.returncode == 0, (name, r.stdout, r.stderr)
    expected = dict(before)
    cpu = root / "sys/devices/system/cpu"
    for i in (1, 3, 5, 7):
        expected[str(cpu / f"cpu{i}/cpufreq/scaling_governor")] = "performance\n"
    for name in ("enabled", "defrag"):
        expected[str(root / f"sys/kernel/mm/transparent_hugepage/{name}")] = "never\n"
    for irq in (120, 121, 130, 131):  # the NICs' IRQs, onto the non-isolated CPUs
        expected[str(root / f"proc/irq/{irq}/smp_affinity_list")] = "0-1,4-7\n"
    after = snapshot(root)
    assert after == expected
    assert {k for k in after if after[k] != before[k]} <= {k for k in after if k.startswith(str(root))}

    r = run("set-governor.sh")
    assert r.returncode == 0 and "writing" not in r.stdout and "CPU 1: already performance" in r.stdout
    r = run("irq-affinity.sh")
    assert r.returncode == 0 and "writing" not in r.stdout and "IRQ 120: already on 0-1,4-7" in r.stdout
    assert snapshot(root) == expected


def test_dry_runs_on_fake_big_host(tmp_path: Path) -> None:
    root = make_host(tmp_path, governors={i: ("powersave" if i % 2 else "performance") for i in range(8)},
                     thp=("[always] madvise never", "[always] defer defer+madvise madvise never"),
                     isolated="2-3")
    before = snapshot(root)

    r = run_script("set-governor.sh", "--dry-run", root=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"would write 'performance' to {root}/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor" in r.stdout
    assert "CPU 0: already performance" in r.stdout
    assert "cpu0/cpufreq/scaling_governor" not in r.stdout
    assert "nothing written" in r.stdout

    r = run_script("disable-thp.sh", "--dry-run", root=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"would write 'never' to {root}/sys/kernel/mm/transparent_hugepage/enabled" in r.stdout
    assert f"would write 'never' to {root}/sys/kernel/mm/transparent_hugepage/defrag" in r.stdout
    r = run_script("disable-thp.sh", "--dry-run", "--mode", "madvise", root=root)
    assert "would write 'madvise'" in r.stdout

    r = run_script("irq-affinity.sh", "--dry-run", root=root)  # default: the non-isolated CPUs
    assert r.returncode == 0, r.stdout + r.stderr
    for irq in (120, 121, 130, 131):
        assert f"would write '0-1,4-7' to {root}/proc/irq/{irq}/smp_affinity_list" in r.stdout
    assert "/proc/irq/122/" not in r.stdout and "/proc/irq/0/" not in r.stdout
    r = run_script("irq-affinity.sh", "--dry-run", "--cpus", "0-1", "--iface", "eth0", root=root)
    assert r.returncode == 0
    assert "eth0: IRQs 120 121 -> CPUs 0-1" in r.stdout and "/proc/irq/130/" not in r.stdout

    r = run_script("isolate-cpus.sh", "--dry-run", "--cpus", "2-3,6-7", root=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("isolcpus=managed_irq,domain,2-3,6-7 nohz_full=2-3,6-7 rcu_nocbs=2-3,6-7 "
            "irqaffinity=0-1,4-5") in r.stdout
    r = run_script("isolate-cpus.sh", "--cpus", "2-3", root=root)  # siblings 6,7 left out
    assert r.returncode == 0 and "shares a core with CPU 6" in r.stdout

    assert snapshot(root) == before


def test_refusals_on_fake_big_host(tmp_path: Path) -> None:
    root = make_host(tmp_path / "host", governors={i: "powersave" for i in range(8)}, isolated="2-3")
    before = snapshot(root)

    r = run_script("set-governor.sh", "--cpus", "2,99", root=root)
    assert r.returncode == 1 and "CPU(s) 99, which do not exist" in r.stderr
    r = run_script("set-governor.sh", "--governor", "ondemand", root=root)
    assert r.returncode == 1 and "does not offer governor 'ondemand'" in r.stderr
    r = run_script("isolate-cpus.sh", "--cpus", "0-3", root=root)
    assert r.returncode == 1 and "CPU 0 must not be isolated" in r.stderr and r.stdout == ""
    r = run_script("isolate-cpus.sh", "--cpus", "1-7", root=root)
    assert r.returncode == 0  # 0 is left for housekeeping
    r = run_script("isolate-cpus.sh", "--cpus", "4-12", root=root)
    assert r.returncode == 1 and "do not exist" in r.stderr
    r = run_script("irq-affinity.sh", "--cpus", "0-2", root=root)
    assert r.returncode == 1 and "isolated CPU 2" in r.stderr
    r = run_script("irq-affinity.sh", "--cpus", "0", "--iface", "nope0", root=root)
    assert r.returncode == 1 and "no such network interface: nope0" in r.stderr
    r = run_script("isolate-cpus.sh", "--cpus", "2-x", root=root)
    assert r.returncode == 2

    # no cpufreq (a VM): set-governor refuses rather than pretend
    vm = make_host(tmp_path / "vm", governors=None)
    r = run_script("set-governor.sh", root=vm)
    assert r.returncode == 1 and "has no cpufreq" in r.stderr

    assert snapshot(root) == before


def test_non_root_refused(shared_tmp: Path) -> None:
    root = make_host(shared_tmp / "host", governors={i: "powersave" for i in range(8)},
                     thp=("[always] madvise never", "[always] madvise never"))
    # copies of the scripts: a checkout under a private directory (a clone into mktemp -d)
    # is out of nobody's reach
    scripts = shared_tmp / "tuning"
    scripts.mkdir()
    for script in TUNING.glob("*.sh"):
        shutil.copy(script, scripts / script.name)
    for p in [shared_tmp, *shared_tmp.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    before = snapshot(root)
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root and setpriv is missing: cannot drop privileges")
        user = "nobody"
    else:
        user = None
    for name, args in (("set-governor.sh", []), ("disable-thp.sh", []), ("irq-affinity.sh", ["--cpus", "0"])):
        r = run_script(name, *args, root=root, user=user, scripts=scripts)
        assert r.returncode == 1, (name, r.stdout, r.stderr)
        assert "must run as root" in r.stderr
        # a dry run needs no root
        r = run_script(name, "--dry-run", *args, root=root, user=user, scripts=scripts)
        assert r.returncode == 0 and "would write" in r.stdout, (name, r.stdout, r.stderr)
    assert snapshot(root) == before
