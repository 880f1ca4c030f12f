"""The layout promise: one import package, `ringex`, in an editable install and in a wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["engine", "ringbuffer", "gateways", "feeds", "tools", "tuning"]


def test_editable_install_maps_the_folders_to_ringex() -> None:
    import ringex

    for name in SUBPACKAGES:
        mod = __import__(f"ringex.{name}", fromlist=["_"])
        assert Path(mod.__file__).parent == REPO / name


def test_console_command_lists_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ringex.tools.cli", "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    for word in ("stat", "bench"):
        assert word in out


@pytest.mark.slow
def test_wheel_installs_one_package_called_ringex(tmp_path: Path) -> None:
    # Build from a clean copy: an in-tree build/ left by an earlier build could leak stale
    # modules into the wheel.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "var"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(src)],
        check=True, timeout=300, capture_output=True,
    )
    (wheel,) = wheels.glob("ringex-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("ringex-")}
    assert tops == {"ringex"}, f"wheel installs top-level names {sorted(tops)}"
    assert "ringex/engine/wire/schema.xml" in names
    for sub in ("wire", "kernel", "storage", "pipeline"):  # every subpackage of engine/ ships
        assert f"ringex/engine/{sub}/__init__.py" in names, sub
    assert not any(n.startswith("ringex/tests/") for n in names)

    # A fresh venv that sees the dependencies (numpy, numba, ...) through a .pth line but
    # not this checkout's editable install (.pth files in an added directory are not read).
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    fresh_py = fresh / "bin" / "python"
    site = Path(subprocess.run(
        [str(fresh_py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, timeout=60, check=True).stdout.strip())
    deps = subprocess.run([sys.executable, "-c", "import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))"],
                          capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    (site / "ringex-test-deps.pth").write_text(deps + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True, timeout=300, capture_output=True,
    )
    probe = (
        "import ringex, ringex.engine.wire.messages as m, ringex.ringbuffer, ringex.gateways, "
        "ringex.feeds, ringex.tools.cli, ringex.tuning; "
        "print(ringex.__file__); print(m.SLOT_SIZE)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [str(fresh_py), "-c", probe], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout.split()
    assert Path(out[0]).is_relative_to(site), f"imported ringex from {out[0]}, not the wheel"
    assert int(out[1]) % 64 == 0
