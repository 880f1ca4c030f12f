"""The numba cache guard covers every module with compiled code, by folder, not by a list.

A module whose cache entries survive a change of another source of its folder or of the wire
format would let numba (which only checks the calling function's own file) load machine code
built against old layouts: wrong answers, no error.
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

from ringex.engine.kernel import jitcache

ENGINE = jitcache.KERNEL_DIR.parent
PACKAGE = jitcache.PACKAGE_DIR
COMPILED = re.compile(r"^@(njit|intrinsic|numba\.njit)", re.M)


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


def package_files() -> list[Path]:
    """Every module of the ``ringex`` package's subpackages (folders with an ``__init__``)."""
    files, todo = [], [PACKAGE]
    while todo:
        folder = todo.pop()
        for p in folder.iterdir():
            if p.is_dir() and (p / "__init__.py").is_file() and p.name != "tests":
                todo.append(p)
            elif p.suffix == ".py" and p.parent != PACKAGE:
                files.append(p)
    return sorted(files)


def compiled_modules() -> list[Path]:
    found = [p for p in package_files() if COMPILED.search(p.read_text())]
    assert len(found) > 20, "the scan for compiled modules found too few"
    return found


def module_name(path: Path) -> str:
    return ".".join(("ringex", *path.relative_to(PACKAGE).with_suffix("").parts))


def ringex_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """The module's top-level ``ringex`` imports: (line, module, names), relative ones resolved."""
    package = module_name(path).rsplit(".", 1)[0]
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("ringex"):
                found.append((node.lineno, base, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("ringex")]
    return found


def module_file(name: str) -> Path | None:
    p = PACKAGE.joinpath(*name.split(".")[1:])
    for candidate in (p.with_suffix(".py"), p / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def first_decorator_line(path: Path) -> int:
    return min(d.lineno for node in ast.parse(path.read_text()).body
               if isinstance(node, ast.FunctionDef) for d in node.decorator_list)


def calls_guard_before(path: Path, line: int) -> bool:
    for node in ast.parse(path.read_text()).body:
        if (node.lineno < line and isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", getattr(node.value.func, "attr", None)) == "guard_module"
                and ast.unparse(node.value.args) == "__file__"):
            return True
    return False


def guarded_on_import(path: Path, seen: frozenset[Path] = frozenset()) -> bool:
    """Whether importing the module guards its folder before its first decorator: it calls
    the guard, or imports (before that) a module of its own folder that does."""
    if path.parent == jitcache.KERNEL_DIR:
        return True  # the package's __init__ guards it
    if path in seen:
        return False
    text = path.read_text()
    line = first_decorator_line(path) if COMPILED.search(text) else 1 << 30
    if calls_guard_before(path, line):
        return True
    for at, name, names in ringex_imports(path):
        for target in (module_file(name), *(module_file(f"{name}.{n}") for n in names)):
            if (at < line and target is not None and target.parent == path.parent
                    and target.name != "__init__.py" and guarded_on_import(target, seen | {path})):
                return True
    return False


def test_every_compiled_module_guards_its_folder_before_its_first_decorator() -> None:
    unguarded = [str(p.relative_to(PACKAGE)) for p in compiled_modules() if not guarded_on_import(p)]
    assert not unguarded, (f"compiled modules that load numba's cache unguarded (call "
                           f"jitcache.guard_module(__file__) before the first decorator): {unguarded}")
    folders = {p.parent.name for p in compiled_modules()}
    assert {"kernel", "gateways", "feeds", "ringbuffer", "tools"} <= folders


def frozen_by_numba(obj: object) -> bool:
    """Whether compiled code could take anything of ``obj`` into its machine code: anything
    but a plain Python function or an ordinary class (compiled code can call neither; an
    enum's members and a named tuple's fields it can)."""
    if inspect.isfunction(obj):
        return False
    ordinary_class = inspect.isclass(obj) and not issubclass(obj, (enum.Enum, tuple, int, float, np.generic))
    return not ordinary_class


def test_compiled_code_derives_only_from_what_its_stamp_covers() -> None:
    """A compiled module may reach (through imports, however indirect) its own folder and the
    wire format: those are what its folder's stamp hashes. From anywhere else it may take
    only what compiled code cannot use (plain functions, ordinary classes); a constant, an
    array or a compiled function from there would go stale in the cache unnoticed."""
    wrong = []
    for path in compiled_modules():
        covered = set(jitcache.sources(path.parent))
        todo, seen = [path], set()
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            for _, name, names in ringex_imports(current):
                where = module_file(name)
                if where in covered:
                    todo.append(where)
                    todo += [f for f in (module_file(f"{name}.{n}") for n in names) if f in covered]
                    continue
                module = importlib.import_module(name)
                for n in names or ["*"]:
                    if n == "*" or module_file(f"{name}.{n}") is not None or frozen_by_numba(getattr(module, n)):
                        wrong.append(f"{path.relative_to(PACKAGE)} reaches {name}.{n}")
    assert not wrong, f"compiled code depends on sources its cache stamp does not cover: {sorted(set(wrong))}"


@pytest.fixture
def tree(tmp_path, monkeypatch) -> dict[str, Path]:
    """Two folders of compiled code and a wire format in a temp dir, caching into it."""
    for folder, files in {"wire": {"schema.xml": "<messageSchema/>\n", "layout.py": "PRICE = 8\n"},
                          "gateways": {"__init__.py": "", "outbound.py": "RECORD_SIZE = 64\n",
                                       "fix_outbound.py": "x = 1\n"},
                          "feeds": {"__init__.py": "", "itch.py": "ADD_ORDER = 65\n"}}.items():
        (tmp_path / folder).mkdir()
        for name, text in files.items():
            (tmp_path / folder / name).write_text(text)
    monkeypatch.setattr(jitcache, "WIRE_DIR", tmp_path / "wire")
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "cache"))
    if jitcache.cache_dir(tmp_path / "gateways") is None:
        pytest.skip("the JIT is disabled: nothing is cached")
    return {"root": tmp_path, "gateways": tmp_path / "gateways", "feeds": tmp_path / "feeds"}


def plant(where: Path, *modules: str) -> list[Path]:
    entries = [where / f"{m}.frame-65.py311.{ext}" for m in modules for ext in ("nbi", "1.nbc")]
    for f in entries:
        f.write_bytes(b"machine code")
    return entries


def test_an_edit_of_a_dependency_clears_the_dependent_folder_only(tree) -> None:
    gateways, feeds = tree["gateways"], tree["feeds"]
    where = jitcache.cache_dir(gateways)
    assert where is not None and where.is_relative_to(tree["root"] / "cache")
    assert jitcache.cache_dir(feeds) != where, "numba keeps each folder's files apart"
    assert jitcache.guard_cache(gateways) is True  # no stamp yet: built from who knows what
    assert jitcache.guard_cache(feeds) is True
    entries = plant(where, "fix_outbound", "outbound")
    foreign = plant(where, "elsewhere")  # not a module of this folder: not ours to delete
    feed_entries = plant(jitcache.cache_dir(feeds), "itch")

    assert jitcache.guard_cache(gateways) is False  # unchanged tree: entries kept
    assert all(f.exists() for f in entries + foreign)

    # fix_outbound's machine code holds outbound's constants: an edit of outbound.py must clear it
    (gateways / "outbound.py").write_text("RECORD_SIZE = 72\n")
    assert jitcache.guard_cache(gateways) is True
    assert not any(f.exists() for f in entries)
    assert all(f.exists() for f in foreign)
    assert (where / jitcache.stamp_name(gateways)).read_text() == jitcache.fingerprint(gateways)
    assert jitcache.guard_cache(feeds) is False and all(f.exists() for f in feed_entries)

    entries = plant(where, "fix_outbound")
    (tree["root"] / "wire" / "schema.xml").write_text("<messageSchema version='2'/>\n")
    assert jitcache.guard_cache(gateways) is True and not any(f.exists() for f in entries)
    assert jitcache.guard_cache(feeds) is True and not any(f.exists() for f in feed_entries)

    (gateways / "routing.py").write_text("y = 2\n")  # a new module is covered without a list
    assert jitcache.guard_cache(gateways) is True


def test_guard_module_guards_a_folder_once_a_process(tree, monkeypatch) -> None:
    monkeypatch.setattr(jitcache, "_guarded", set())
    gateways = tree["gateways"]
    assert jitcache.guard_module(str(gateways / "outbound.py")) is True
    assert gateways.resolve() in jitcache.guarded_folders()
    (gateways / "outbound.py").write_text("RECORD_SIZE = 72\n")
    assert jitcache.guard_module(str(gateways / "fix_outbound.py")) is False  # already done at start-up


def test_importing_a_compiled_gateway_module_guards_its_folder_before_loading(tmp_path) -> None:
    """A fresh interpreter, a cache holding fix_outbound entries from another tree: importing
    the module deletes them before any of its compiled functions is loaded or called."""
    if os.environ.get("NUMBA_DISABLE_JIT") == "1":
        pytest.skip("the JIT is disabled: nothing is cached")
    code = (
        "import sys\n"
        "from ringex.engine.kernel import jitcache\n"
        "gateways = jitcache.PACKAGE_DIR / 'gateways'\n"
        "assert 'ringex.gateways.outbound' not in sys.modules and gateways not in jitcache.guarded_folders()\n"
        "where = jitcache.cache_dir(gateways)\n"
        "stale = [where / f'fix_outbound.frame_messages-65.py311.{e}' for e in ('nbi', '1.nbc')]\n"
        "for f in stale: f.write_bytes(b'built from another outbound.py')\n"
        "(where / jitcache.stamp_name(gateways)).write_text('another tree')\n"
        "import ringex.gateways.fix_outbound as fo\n"
        "print(gateways in jitcache.guarded_folders(), any(f.exists() for f in stale),\n"
        "      (where / jitcache.stamp_name(gateways)).read_text() == jitcache.fingerprint(gateways),\n"
        "      len(fo.frame_messages.overloads), where)\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))  # never the checkout's cache
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    guarded, stale_left, stamped, loaded, where = r.stdout.split()
    assert (guarded, stale_left, stamped, loaded) == ("True", "False", "True", "0")
    assert Path(where).is_relative_to(tmp_path / "cache")
