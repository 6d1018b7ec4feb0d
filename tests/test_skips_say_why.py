"""Every skip in the suite says why (README's test command shows the reasons with -rs)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _name(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def skips_without_reason(source: str) -> list[int]:
    """Line numbers of ``pytest.skip()`` / ``pytest.mark.skip(if)`` / ``pytest.xfail`` without a reason."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        keywords = {k.arg for k in node.keywords}
        if name.endswith(("pytest.skip", "pytest.xfail", "pytest.mark.skip", "pytest.mark.xfail")):
            if not node.args and "reason" not in keywords:
                bad.append(node.lineno)
        elif name.endswith("pytest.mark.skipif") and "reason" not in keywords:
            bad.append(node.lineno)
    return bad


def test_the_check_finds_a_skip_without_reason():
    source = "import pytest\n@pytest.mark.skipif(True)\ndef test_a():\n    pytest.skip()\n"
    assert sorted(skips_without_reason(source)) == [2, 4]
    assert skips_without_reason("import pytest\npytest.skip('no GPU')\n") == []


def test_every_skip_in_the_suite_says_why():
    bad = {
        path.name: lines
        for path in sorted(TESTS.rglob("*.py"))
        if (lines := skips_without_reason(path.read_text(encoding="utf-8")))
    }
    assert not bad, f"skips without a reason (file: lines): {bad}"
