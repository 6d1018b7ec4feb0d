"""End-to-end tests: whole lm-eval runs, examples and subprocesses. Everything in this folder is `slow` (the
inner loop, ``-m "not slow"``, skips it)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.slow)
