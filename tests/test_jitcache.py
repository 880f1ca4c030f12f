"""The numba cache guard covers every module with compiled code, by folder, not by a list.

A module whose cache entries survive a change of another kernel or wire source would let
numba (which only checks the calling function's own file) load machine code built against
old layouts: wrong answers, no error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from ringex.engine.kernel import jitcache

ENGINE = jitcache.KERNEL_DIR.parent


def test_every_module_with_compiled_code_is_in_the_kernel_folder() -> None:
    compiled = sorted(str(p.relative_to(ENGINE)) for p in ENGINE.rglob("*.py")
                      if re.search(r"^@(njit|intrinsic|numba\.njit)", p.read_text(), re.M))
    assert compiled, "no compiled engine module found"
    outside = [m for m in compiled if not m.startswith("kernel/")]
    assert not outside, f"modules with numba code outside engine/kernel/ (the cache guard misses them): {outside}"
    guarded = set(jitcache.kernel_modules())
    assert {Path(m).stem for m in compiled} <= guarded
    names = {f"{p.parent.name}/{p.name}" for p in jitcache.sources()}
    assert "wire/schema.xml" in names and "wire/layout.py" in names and "kernel/matching.py" in names


def test_fingerprint_changes_with_any_source(tmp_path, monkeypatch) -> None:
    kernel, wire = tmp_path / "kernel", tmp_path / "wire"
    for src, dst in ((jitcache.KERNEL_DIR, kernel), (jitcache.WIRE_DIR, wire)):
        dst.mkdir()
        for p in src.iterdir():
            if p.is_file():
                (dst / p.name).write_bytes(p.read_bytes())
    monkeypatch.setattr(jitcache, "KERNEL_DIR", kernel)
    monkeypatch.setattr(jitcache, "WIRE_DIR", wire)
    before = jitcache.fingerprint()
    (kernel / "money.py").write_text((kernel / "money.py").read_text() + "\n# changed\n")
    after_kernel = jitcache.fingerprint()
    assert after_kernel != before
    (wire / "schema.xml").write_text((wire / "schema.xml").read_text() + "\n")
    assert jitcache.fingerprint() != after_kernel
    (kernel / "new_family.py").write_text("x = 1\n")  # a new module is covered without a list
    assert "new_family" in jitcache.kernel_modules()


def test_read_only_install_caches_per_user(tmp_path) -> None:
    """Where the kernel's folder cannot be written, numba's cache goes to a per-user directory
    (a pip install into a read-only site-packages would otherwise compile on every start)."""
    code = (
        "import numba, os, sys\n"
        "from ringex.engine.kernel import jitcache\n"
        "jitcache._writable = lambda folder: False\n"
        "numba.config.CACHE_DIR = ''\n"
        "where = jitcache.choose_cache_location()\n"
        "print(where)\n"
        "print(jitcache.cache_dir())\n"
    )
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("NUMBA_CACHE_DIR", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    chosen, probed = r.stdout.split()
    assert Path(chosen) == tmp_path / "cache" / "ringex" / "numba"
    if os.environ.get("NUMBA_DISABLE_JIT") != "1":
        assert Path(probed).is_relative_to(Path(chosen))
