"""The supervisor (tools/launcher.py) and what it relies on: a data directory written by
another engine, the engine's start-up compile.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ringex.engine.config import EngineConfig
from ringex.engine.pipeline import warm_start
from ringex.engine.pipeline.engine_agent import ENGINE_FILE, EngineStateError, check_engine_file, write_engine_file
from ringex.engine.wire import messages as m


# ----------------------------------------------------------------------------- compile notice


class FakeCounter:
    def __init__(self) -> None:
        self.value = 0

    def set(self, v: int) -> None:
        self.value = v


class FakeCounters:
    def __init__(self) -> None:
        self.allocated: dict[str, FakeCounter] = {}

    def allocate(self, label: str, type_id: int = 0) -> FakeCounter:
        self.allocated[label] = FakeCounter()
        return self.allocated[label]


def test_cold_cache_announces_the_compile_flags_it_and_times_it(caplog) -> None:
    caplog.set_level(logging.INFO, logger="ringex.engine")
    counters = FakeCounters()
    during = []

    def compile_engine() -> float:
        during.append(counters.allocated[warm_start.COMPILING_LABEL].value)
        return 0.0

    warm_start.warm_up_engine(counters, cache_warm=lambda: False, compile_engine=compile_engine,
                              where=lambda: "/cache/here")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("compiling the matching engine: first start only, about 3 minutes")
    assert lines[0].endswith("cached in /cache/here")
    assert lines[1].startswith("compiled the matching engine in ")
    assert during == [1]  # flagged while compiling, for the launcher
    assert counters.allocated[warm_start.COMPILING_LABEL].value == 0


def test_warm_cache_says_one_short_line_and_never_flags(caplog) -> None:
    caplog.set_level(logging.INFO, logger="ringex.engine")
    counters = FakeCounters()
    during = []
    warm_start.warm_up_engine(
        counters, cache_warm=lambda: True,
        compile_engine=lambda: during.append(counters.allocated[warm_start.COMPILING_LABEL].value) or 0.0)
    lines = [r.getMessage() for r in caplog.records]
    assert during == [0]
    assert len(lines) == 1 and lines[0].startswith("engine: matching engine loaded from cache in ")
    assert not any("compil" in ln for ln in lines)


def test_a_failed_compile_clears_the_flag() -> None:
    counters = FakeCounters()

    def boom() -> float:
        raise RuntimeError("numba failed")

    with pytest.raises(RuntimeError, match="numba failed"):
        warm_start.warm_up_engine(counters, cache_warm=lambda: False, compile_engine=boom, where=lambda: "x")
    assert counters.allocated[warm_start.COMPILING_LABEL].value == 0


def _cache_warm_in_fresh_process(env: dict[str, str]) -> str:
    code = ("from ringex.engine.pipeline.warm_start import kernel_cache_warm\n"
            "from ringex.engine.kernel import dispatch\n"
            "print(kernel_cache_warm(), len(dispatch.process_batch.overloads))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_kernel_cache_warm_reads_numbas_own_index(tmp_path: Path) -> None:
    from ringex.engine.engine import jit_enabled, warm_up

    if not jit_enabled():
        pytest.skip("NUMBA_DISABLE_JIT: nothing is compiled or cached")
    warm_up()  # here: compiles once if this checkout never did, so the cache holds the kernel
    # A fresh process sees it in the cache, and finding out compiled nothing (0 overloads).
    assert _cache_warm_in_fresh_process({}) == "True 0"
    # An empty cache directory: cold, again without compiling to find out.
    assert _cache_warm_in_fresh_process({"NUMBA_CACHE_DIR": str(tmp_path)}) == "False 0"


# ----------------------------------------------------------------------------- engine file


def test_check_engine_file_names_the_file_and_each_difference(tmp_path: Path) -> None:
    assert check_engine_file(tmp_path, EngineConfig()) is False  # a new data directory
    write_engine_file(tmp_path, EngineConfig(max_orders=1024, max_stops=16))
    assert check_engine_file(tmp_path, EngineConfig(max_orders=1024, max_stops=16)) is True
    with pytest.raises(EngineStateError) as err:
        check_engine_file(tmp_path, EngineConfig(max_orders=2048, max_stops=16, price_levels=512))
    msg = str(err.value)
    assert str(tmp_path / ENGINE_FILE) in msg
    assert "max_orders = 1024 there, 2048 configured" in msg
    assert f"price_levels = {EngineConfig().price_levels} there, 512 configured" in msg
    assert "max_stops" not in msg  # only what differs


@pytest.mark.parametrize("content, words", [
    ('{"schema": "0000000000000000", "engine": {}}', "journal written with schema 0000000000000000"),
    ("not json", "unreadable"),
    ('["a list"]', "unreadable"),
    ('{"schema": "%s", "engine": {"max_orderz": 5}}' % m.SCHEMA.fingerprint, "not one this build knows"),
])
def test_an_unusable_engine_file_is_an_engine_state_error(tmp_path: Path, content: str, words: str) -> None:
    (tmp_path / ENGINE_FILE).write_text(content)
    with pytest.raises(EngineStateError) as err:
        check_engine_file(tmp_path, EngineConfig())
    assert str(tmp_path / ENGINE_FILE) in str(err.value) and words in str(err.value)
