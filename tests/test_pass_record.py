"""The whole pass with fewer forwards (ablation reuses the attribution forward's log-probabilities) and the
precision every record states (`extras.precision_used`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lm_interp_plugin.interpret.passes import run_pass
from lm_interp_plugin.interpret.settings import InterpSettings
from lm_interp_plugin.methods import ablation as ablation_module
from lm_interp_plugin.methods.ablation import instruction_ablation

from tolerances import LOGPROB_ATOL

pytestmark = pytest.mark.float_sensitive  # float comparisons across kernels and orders


def _request(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prompt, target = torch.randint(5, 700, (15,), generator=g), torch.randint(5, 700, (4,), generator=g)
    labels = ["special"] + ["instruction"] * 5 + ["content"] * 9
    return prompt, target, labels


def test_ablation_reuses_the_attribution_forward(tiny_model, monkeypatch):
    model = tiny_model("llama", seed=1)
    prompt, target, labels = _request(1)
    mask = torch.tensor([label == "instruction" for label in labels])
    expected = instruction_ablation(model, prompt, target, mask)  # three sequences scored
    scored = []
    original = ablation_module.target_logprobs

    def spy(model, requests, batch_size=16):
        scored.append(len(requests))
        return original(model, requests, batch_size=batch_size)

    monkeypatch.setattr(ablation_module, "target_logprobs", spy)
    result = run_pass(model, prompt.tolist(), target.tolist(), labels, InterpSettings(ffn=False))
    assert scored == [2]  # removed and replaced only; the original came from the attribution forward
    got = result.extras["ablation"]
    for key in ("drop_removed", "drop_replaced", "logprob_original"):
        assert got[key] == pytest.approx(getattr(expected, key), abs=LOGPROB_ATOL * len(target)), key
    torch.testing.assert_close(
        torch.tensor(got["token_logprobs_original"]),
        expected.token_logprobs_original,
        rtol=0,
        atol=LOGPROB_ATOL,
    )


def test_original_logprobs_must_match_the_target(tiny_model):
    model = tiny_model("llama", seed=1)
    prompt, target, labels = _request(2)
    mask = torch.tensor([label == "instruction" for label in labels])
    with pytest.raises(ValueError, match="original_logprobs has shape"):
        instruction_ablation(model, prompt, target, mask, original_logprobs=torch.zeros(len(target) + 1))


def test_every_record_states_its_precision(tiny_model):
    model = tiny_model("llama", seed=2)
    prompt, target, labels = _request(3)
    settings = InterpSettings(ffn=False, ablation=False)
    used = run_pass(model, prompt.tolist(), target.tolist(), labels, settings).extras["precision_used"]
    assert used["dtype"] == "float32" and used["accumulation"] == "float32"
    assert used["fp32_checked"] is False and "checked_rel_error" not in used
    assert used["mode"] == "reverse" and used["attention"] == "sdpa"

    model = model.to(torch.bfloat16)
    checked = run_pass(model, prompt.tolist(), target.tolist(), labels, settings, check_fp32=True).extras
    used = checked["precision_used"]
    assert used["dtype"] == "bfloat16" and used["fp32_checked"] is True
    assert used["checked_rel_error"] == checked["fp32_check"]["rel_error"] > 0
    assert used["checked_max_abs_error_rel"] == checked["fp32_check"]["max_abs_error_rel"]

    forward = run_pass(
        model,
        prompt.tolist(),
        target.tolist(),
        labels,
        InterpSettings(ffn=False, ablation=False, mode="forward"),
    ).extras["precision_used"]
    assert forward["mode"] == "forward" and forward["attention"] == "eager"  # JVPs need eager
    assert forward["fp32_checked"] is False


def test_ffn_probe_keeps_only_the_target_positions(tiny_model):
    """The pass's FFN capture keeps the last target_len positions per layer (what `metrics` reads): the same
    concept metrics as a capture of every position."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from attribution import synthetic_ffn_probe

    model = tiny_model("llama", seed=4)
    prompt, target, labels = _request(5)
    probe = synthetic_ffn_probe(model, k=4)
    settings = InterpSettings(ablation=False, attention=False)
    result = run_pass(model, prompt.tolist(), target.tolist(), labels, settings, ffn_probe=probe)
    with probe.capture(), torch.no_grad():  # every position
        model(input_ids=torch.cat([prompt, target[:-1]])[None])
    assert all(out.shape[1] == len(prompt) + len(target) - 1 for out in probe._outputs.values())
    full_scalars, full_detail = probe.metrics(len(target))
    np.testing.assert_allclose(
        result.ffn["component_distribution"], full_detail["component_distribution"], rtol=0, atol=1e-6
    )
    for key, value in full_scalars.items():
        assert result.metrics[key] == pytest.approx(value, abs=1e-6)
