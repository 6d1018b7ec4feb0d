"""The every-family sweep (marked ``sweep``; excluded from the README's test command, run by .ci/run as its
own stage): every decoder-only family transformers registers, as a tiny random model from its own config.

Per family: the interpretation pass never crashes, and the family is fully supported (attribution, probe
attention equal to eager past the window, FFN concepts, explain-heads, explain-ffn) exactly when
`support.SUPPORTED_FAMILIES` says so, so README's generated list stays true; a family that is not says what is
left out and why. Regenerate both with ``python tests/sweep_check.py --write``.
"""

from __future__ import annotations

import pytest

from lm_interp_plugin.support import SUPPORTED_FAMILIES
from lm_interp_plugin.testing.families import decoder_families

from sweep_check import check_family


@pytest.mark.sweep
@pytest.mark.parametrize("family", decoder_families())
def test_family(family, tok):
    result = check_family(family, tok)
    if result.crashed and result.crashed.startswith("tiny model does not build"):
        pytest.skip(f"{family}: {result.crashed}")
    assert result.crashed is None, result.crashed
    assert result.fully_supported == (family in SUPPORTED_FAMILIES), (
        f"{family}: fully supported={result.fully_supported} but SUPPORTED_FAMILIES says "
        f"{family in SUPPORTED_FAMILIES}; left out: {result.left_out}. Regenerate the list with "
        "python tests/sweep_check.py --write"
    )
    if not result.fully_supported:
        assert result.left_out, f"{family} is not fully supported and does not say why"
