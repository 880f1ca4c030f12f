"""The numba cache guard knows every engine module that holds compiled code.

A module missing from ``KERNEL_MODULES`` keeps its cache entries when another engine
source changes, and numba (which only checks the calling function's own file) then loads
machine code built against old layouts: wrong answers, no error.
"""

from __future__ import annotations

import re
from pathlib import Path

from ringex.engine import jitcache

ENGINE = Path(jitcache.__file__).resolve().parent


def test_every_module_with_compiled_code_is_guarded() -> None:
    compiled = sorted(p.stem for p in ENGINE.glob("*.py")
                      if re.search(r"^@(njit|intrinsic)", p.read_text(), re.M) and p.stem != "jitcache")
    assert compiled, "no compiled engine module found"
    missing = [m for m in compiled if m not in jitcache.KERNEL_MODULES]
    assert not missing, f"engine modules with numba code not in jitcache.KERNEL_MODULES: {missing}"
    for m in jitcache.KERNEL_MODULES:
        assert f"{m}.py" in jitcache.SOURCES


def test_fingerprint_changes_with_any_source(tmp_path, monkeypatch) -> None:
    copy = tmp_path / "engine"
    copy.mkdir()
    for name in jitcache.SOURCES:
        (copy / name).write_bytes((ENGINE / name).read_bytes())
    monkeypatch.setattr(jitcache, "ENGINE_DIR", copy)
    before = jitcache.fingerprint()
    (copy / "money.py").write_text((copy / "money.py").read_text() + "\n# changed\n")
    assert jitcache.fingerprint() != before
