"""Float tolerances for comparing attribution matrices computed in different orders (stated once).

An entry of I = grad x input is a float32 sum over the hidden dimension of products whose size is set by the
largest entries of the matrix, so two reduction orders (a batched VJP vs a plain backward, chunk 1 vs 64,
checkpointed vs not) differ in an entry by a few float32 ulps of the matrix's largest magnitude, not of that
entry. Entries near zero therefore need an absolute tolerance proportional to max |I|.
"""

from __future__ import annotations

import numpy as np
import torch

MATRIX_RTOL = 1e-4  # relative, per entry
MATRIX_ATOL_SCALE = 1e-5  # absolute, as a fraction of the largest |entry| of the expected matrix


def assert_matrix_close(
    got, expected, rtol: float = MATRIX_RTOL, atol_scale: float = MATRIX_ATOL_SCALE
) -> None:
    """`got` equals `expected` entry by entry up to `rtol`, and up to atol_scale * max|expected| near zero."""
    got_t, exp_t = torch.as_tensor(np.asarray(got)), torch.as_tensor(np.asarray(expected))
    scale = float(exp_t.abs().max()) if exp_t.numel() else 0.0
    assert scale > 0, "the expected matrix is all zero: the comparison would prove nothing"
    torch.testing.assert_close(got_t.to(exp_t.dtype), exp_t, rtol=rtol, atol=atol_scale * scale)
