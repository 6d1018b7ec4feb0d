"""The every-family sweep (marked ``sweep``; excluded from the README's test command, run by .ci/run as its
own stage): every decoder-only family transformers registers, as a tiny random model from its own config.

Per family: the interpretation pass never crashes, and the family is fully supported (attribution, probe
attention equal to eager past the window, FFN concepts, explain-heads, explain-ffn) exactly when
`support.SUPPORTED_FAMILIES` says so, so README's generated list stays true; a family that is not says what is
left out and why. Regenerate both with ``python tests/sweep_check.py --write``.

The list is a measurement on `support.MEASURED_TRANSFORMERS`. Under another transformers version (a fresh
install takes the newest) the registry and the families' code differ: a listed family must still be fully
supported (a regression users would meet), while one that newly is (a family that version added, or one it
changed) is reported with a warning, not failed: the README names the version its list was measured on.
"""

from __future__ import annotations

import warnings

import pytest
import transformers

from lm_interp_plugin.support import MEASURED_TRANSFORMERS, SUPPORTED_FAMILIES
from lm_interp_plugin.testing.families import decoder_families

from sweep_check import check_family


@pytest.mark.sweep
@pytest.mark.parametrize("family", decoder_families())
def test_family(family, tok):
    result = check_family(family, tok)
    if result.crashed and result.crashed.startswith("tiny model does not build"):
        pytest.skip(f"{family}: {result.crashed}")
    assert result.crashed is None, result.crashed
    if transformers.__version__ != MEASURED_TRANSFORMERS and result.fully_supported:
        if family not in SUPPORTED_FAMILIES:
            warnings.warn(
                f"{family} is fully supported on transformers {transformers.__version__}, but the list was "
                f"measured on {MEASURED_TRANSFORMERS}; regenerate it: python tests/sweep_check.py --write",
                stacklevel=1,
            )
        return
    assert result.fully_supported == (family in SUPPORTED_FAMILIES), (
        f"{family}: fully supported={result.fully_supported} but SUPPORTED_FAMILIES says "
        f"{family in SUPPORTED_FAMILIES}; left out: {result.left_out}. Regenerate the list with "
        "python tests/sweep_check.py --write"
    )
    if not result.fully_supported:
        assert result.left_out, f"{family} is not fully supported and does not say why"
