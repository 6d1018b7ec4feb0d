"""Float tolerances of the tests, derived from the computation, stated once (tests marked float_sensitive).

Two results of one computation in different precisions, reduction orders or kernels (a batched VJP vs a plain
backward, chunk 1 vs 64, float32 vs float64, AVX-512 vs ``ATEN_CPU_CAPABILITY=default``) differ by rounding,
never by one CPU's habits. The model used here:

* a length-k dot product in a precision of unit roundoff u is the exact one of inputs perturbed by at most
  gamma_k = k u / (1 - k u) (Higham, *Accuracy and Stability of Numerical Algorithms*, eq. 3.4), typically by
  sqrt(k) u (rounding errors of random sign: Higham & Mary, SIAM J. Sci. Comput. 41(5), 2019);
* the result moves by kappa times a relative perturbation of the inputs, where kappa (the condition) is
  measured in float64 by perturbing every weight by a seeded relative u (`condition_by_perturbation`);
* so one float32 result is within about kappa * sqrt(k) * u of the exact one, and two float32 results within
  twice that, measured against the result's largest magnitude (entries near zero share it).

The tiny test models (`lm_interp_plugin.testing.tiny`: hidden 64, 2 layers, intermediate 128, vocabulary 800,
prompts under 100 tokens) have their longest reduction over the vocabulary (the log-softmax) and a condition
of the attribution matrix between 5 and 150 across families and seeds (measured 2026-12-03, float64, three
perturbations each: llama 6 to 11, gemma 96 to 148, gpt2 8 to 30, qwen3 8 to 20); `TINY_KAPPA` rounds that up
and `tests/base/test_tolerances.py` measures it again on the llama and gemma fixtures, so the constant cannot
go stale silently. A wrong matrix is off by O(1) of its scale, far above every bound here: the tests still
fail.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch


def unit_roundoff(dtype: torch.dtype = torch.float32) -> float:
    """u = eps / 2: the largest relative error of one rounding."""
    return torch.finfo(dtype).eps / 2


def gamma(k: int, dtype: torch.dtype = torch.float32) -> float:
    """Higham's worst-case relative error bound of a length-k dot product."""
    ku = k * unit_roundoff(dtype)
    assert ku < 1, f"k={k} is too long for a rounding bound in {dtype}"
    return ku / (1 - ku)


def rounding_bound(kappa: float, k: int, dtype: torch.dtype = torch.float32, results: int = 1) -> float:
    """Relative error (to the result's largest magnitude) of `results` rounded results against the exact
    one, or of two against each other (results=2): kappa * sqrt(k) * u each."""
    return results * kappa * math.sqrt(k) * unit_roundoff(dtype)


U32 = unit_roundoff(torch.float32)
TINY_LONGEST_REDUCTION = 800  # the tiny models' vocabulary: the log-softmax's sum
TINY_KAPPA = 200.0  # the attribution matrix's condition on the tiny models (measured at most 148, see above)
TINY_LOGPROB_KAPPA = 2.0  # a target log-prob's condition, relative to its size (measured 1.15 to 1.18)
TINY_MAX_ABS_LOGPROB = math.log(TINY_LONGEST_REDUCTION) + 1  # random tiny models sit near log(1/V)

# two float32 attribution matrices of a tiny model, computed in different orders or kernels
MATRIX_ATOL_SCALE = rounding_bound(TINY_KAPPA, TINY_LONGEST_REDUCTION, results=2)  # ~6.7e-4 of max |I|
MATRIX_RTOL = MATRIX_ATOL_SCALE  # the large entries: relative to themselves
# two float32 target log-probs of a tiny model from differently shaped batches or kernels (absolute, nats)
LOGPROB_ATOL = (
    rounding_bound(TINY_LOGPROB_KAPPA, TINY_LONGEST_REDUCTION, results=2) * TINY_MAX_ABS_LOGPROB
)  # ~5.2e-5
# a bfloat16 attribution matrix of the tiny llama against its float32 one (the same bf16 weights): CPU
# kernels accumulate in float32 and round each op's output once (k = 1 per op), condition at most 12
# (measured 6 to 11 for the tiny llama, see above); relative Frobenius error, two results
TINY_LLAMA_KAPPA = 12.0
HALF_REL = rounding_bound(TINY_LLAMA_KAPPA, 1, torch.bfloat16, results=2)  # ~0.094
# the benchmarks' toy models (a random Llama of `benchmarks/attribution.py`'s build_model: hidden <= 64,
# vocabulary <= 101, 1 or 2 layers) have a larger condition: 20 to 1,300 measured (three seeds of the
# precision toy; test_precision_benchmark_toy measures its own); two float32 matrices of one toy, two orders
BENCH_TOY_KAPPA = 2000.0
BENCH_TOY_LONGEST_REDUCTION = 101
BENCH_MATRIX_REL = rounding_bound(BENCH_TOY_KAPPA, BENCH_TOY_LONGEST_REDUCTION, results=2)  # ~2.4e-3 of max
# two float32 attention weights (probabilities in [0, 1], a softmax over at most 100 keys of a 16-dim head):
# the scores' dot products (k = 16) and the softmax's sum (k = 100), condition ~1 per probability
ATTENTION_ATOL = rounding_bound(1.0, 16 + 100, results=2)  # ~1.3e-6


def assert_matrix_close(
    got, expected, rtol: float = MATRIX_RTOL, atol_scale: float = MATRIX_ATOL_SCALE
) -> None:
    """`got` equals `expected` entry by entry up to `rtol`, and up to atol_scale * max|expected| near zero."""
    got_t, exp_t = torch.as_tensor(np.asarray(got)), torch.as_tensor(np.asarray(expected))
    scale = float(exp_t.abs().max()) if exp_t.numel() else 0.0
    assert scale > 0, "the expected matrix is all zero: the comparison would prove nothing"
    torch.testing.assert_close(got_t.to(exp_t.dtype), exp_t, rtol=rtol, atol=atol_scale * scale)


def condition_by_perturbation(
    fn: Callable[[torch.nn.Module], torch.Tensor],
    model: torch.nn.Module,
    dtype: torch.dtype = torch.float32,
    samples: int = 3,
    seed: int = 0,
) -> float:
    """kappa of `fn` at `model`: the largest change of fn's output (relative to its largest magnitude) when
    every weight is scaled by 1 + u(dtype) * uniform(-1, 1), over u; computed in float64 on copies, so the
    answer is a property of the function, not of the kernels."""
    base = copy.deepcopy(model).double()
    reference = fn(base).detach().double()
    scale = float(reference.abs().max())
    assert scale > 0, "the function is zero here: no relative condition"
    u, worst = unit_roundoff(dtype), 0.0
    for k in range(samples):
        perturbed = copy.deepcopy(base)
        gen = torch.Generator().manual_seed(seed + k)
        with torch.no_grad():
            for weight in perturbed.parameters():
                noise = torch.rand(weight.shape, generator=gen, dtype=torch.float64) * 2 - 1
                weight.mul_(1 + u * noise)
        change = float((fn(perturbed).detach().double() - reference).abs().max()) / scale
        worst = max(worst, change / u)
    return worst
