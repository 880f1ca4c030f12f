"""The supervisor (tools/launcher.py) and what it relies on: a data directory written by
another engine, the engine's start-up compile.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ringex.engine.config import EngineConfig
from ringex.engine.pipeline.engine_agent import ENGINE_FILE, EngineStateError, check_engine_file, write_engine_file
from ringex.engine.wire import messages as m


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
