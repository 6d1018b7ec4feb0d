"""The constants of tests/tolerances.py hold for the tiny models, so they cannot go stale silently."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from lm_interp_plugin.methods.attribution import gradient_x_input
from lm_interp_plugin.testing.tiny import tiny_config

from tolerances import (
    TINY_KAPPA,
    TINY_LLAMA_KAPPA,
    TINY_LOGPROB_KAPPA,
    TINY_LONGEST_REDUCTION,
    condition_by_perturbation,
    gamma,
    rounding_bound,
    unit_roundoff,
)

pytestmark = pytest.mark.float_sensitive


def test_rounding_model_numbers():
    assert unit_roundoff(torch.float32) == 2.0**-24 and unit_roundoff(torch.float64) == 2.0**-53
    assert gamma(100) == pytest.approx(100 * 2.0**-24, rel=1e-5)
    assert rounding_bound(4.0, 100, results=2) == pytest.approx(2 * 4 * 10 * 2.0**-24)
    with pytest.raises(AssertionError, match="too long"):
        gamma(2**25)


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_tiny_models_condition_is_within_the_stated_one(family):
    """kappa of the attribution matrix and of the target log-probs, measured in float64; and the float32
    result within kappa * sqrt(k) * u of the float64 one, on whatever kernels this CPU picks."""
    torch.manual_seed(0)
    config = tiny_config(family, vocab_size=TINY_LONGEST_REDUCTION)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float64).eval()
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, TINY_LONGEST_REDUCTION, (16,), generator=gen)
    target = torch.randint(3, TINY_LONGEST_REDUCTION, (4,), generator=gen)
    kappa = condition_by_perturbation(lambda m: gradient_x_input(m, prompt, target).raw, model, samples=2)
    ids = torch.cat([prompt, target])[None]

    def logprobs(m):  # in the model's own dtype (the engine returns float32)
        logits = m(ids).logits[0, len(prompt) - 1 : -1]
        return logits.log_softmax(-1).gather(-1, target[:, None])[:, 0]

    kappa_lp = condition_by_perturbation(logprobs, model, samples=2)
    assert 0 < kappa <= TINY_KAPPA and 0 < kappa_lp <= TINY_LOGPROB_KAPPA, (kappa, kappa_lp)
    if family == "llama":  # HALF_REL's condition
        assert kappa <= TINY_LLAMA_KAPPA, kappa
    exact = gradient_x_input(model, prompt, target).raw
    f32 = gradient_x_input(model.float(), prompt, target).raw.double()
    error = float((f32 - exact).abs().max() / exact.abs().max())
    assert error <= rounding_bound(kappa, TINY_LONGEST_REDUCTION), (error, kappa)
