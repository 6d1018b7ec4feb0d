"""The benchmark scripts run end to end at toy size and every method computes the same matrix.

No timing is asserted (the CI machine is shared and noisy); we check the output's structure, that the ratios
are the quotients of the reported times, and that the methods agree numerically.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def attribution():
    threads = torch.get_num_threads()
    try:
        yield _load("attribution")
    finally:
        torch.set_num_threads(threads)  # main(--threads 1) changes the process-wide setting


def test_attribution_benchmark_toy(attribution, tmp_path, capsys):
    out = tmp_path / "attr.json"
    result = attribution.main(
        [
            "--hidden",
            "32",
            "--layers",
            "1",
            "--vocab",
            "97",
            "--prompt",
            "8",
            "--targets",
            "4",
            "--repeats",
            "1",
            "--modes",
            "all",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    assert json.loads(out.read_text())["settings"] == json.loads(json.dumps(result["settings"]))
    printed = capsys.readouterr().out
    assert "eng/floor" in printed and result["table"] in printed
    assert [(s["prompt"], s["targets"], s["auto_mode"]) for s in result["settings"]] == [(8, 4, "reverse")]
    for s in result["settings"]:
        methods = {"paper", "frozen", "engine", "engine-reverse", "engine-forward"}
        assert set(s["times"]) == methods == set(s["rel_diff"])
        assert all(t > 0 for t in s["times"].values())
        assert max(s["rel_diff"].values()) < 1e-4, s["rel_diff"]
        assert s["floor_s"] == pytest.approx(
            (s["forward_s"] + s["backward_s"]) * min(s["prompt"], s["targets"])
        )
        assert s["ratios"]["engine/paper"] == pytest.approx(s["times"]["engine"] / s["times"]["paper"])
        assert s["ratios"]["engine/floor"] == pytest.approx(s["times"]["engine"] / s["floor_s"])


def test_paper_loop_matches_an_independent_jacobian(attribution):
    """The paper loop (weights requiring grad, .backward per target) against torch.autograd.functional."""
    model = attribution.build_model(16, 1, 50, 32, torch.device("cpu"), torch.float32, "eager")
    prompt, target = torch.tensor([3, 7, 9, 11, 4]), torch.tensor([5, 6, 8])
    got = attribution.paper_loop(model, prompt, target)
    embeds = model.get_input_embeddings().weight.detach()
    prompt_e, target_e = embeds[prompt][None], embeds[target[:-1]][None]

    def probs(x):
        logits = model(inputs_embeds=torch.cat([x, target_e], 1)).logits[0, -len(target) :]
        return logits.log_softmax(-1).gather(-1, target[:, None])[:, 0].exp()

    jac = torch.autograd.functional.jacobian(probs, prompt_e)  # [target, 1, prompt, hidden]
    expected = (jac[:, 0] * prompt_e[0]).sum(-1).T
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-8)
    assert all(p.grad is None for p in model.parameters())  # grads dropped on exit
    assert all(p.requires_grad for p in model.parameters())


def test_sensible_modes_add_forced_modes_only_near_the_cheaper_one(attribution):
    assert set(attribution.methods_for(128, 8, "sensible")) == {"paper", "frozen", "engine"}
    assert set(attribution.methods_for(128, 128, "sensible")) == {
        "paper",
        "frozen",
        "engine",
        "engine-forward",
    }
    assert set(attribution.methods_for(64, 100, "sensible")) == {
        "paper",
        "frozen",
        "engine",
        "engine-reverse",
    }
    assert "engine-reverse" not in attribution.methods_for(8, 4, "auto")


def test_cuda_request_without_cuda_falls_back_to_cpu(attribution, caplog):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    device, dtype = attribution.resolve_device("cuda", "bfloat16")
    assert (device.type, dtype) == ("cpu", torch.float32)
    assert "falling back to cpu" in caplog.text


@pytest.mark.slow
def test_overhead_benchmark_toy(tmp_path):
    overhead, threads = _load("overhead"), torch.get_num_threads()
    try:
        result = overhead.main(
            [
                "--limit",
                "1",
                "--hidden",
                "32",
                "--layers",
                "1",
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--threads",
                "1",
                "--json",
                str(tmp_path / "o.json"),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert set(result["times"]) == {"hf", "interp-hf", "interp-hf-noattn"}
    assert result["ratios"]["hf"] == 1.0
    for name, seconds in result["times"].items():
        assert math.isclose(result["ratios"][name], seconds / result["times"]["hf"])
    # interp-hf answers exactly as hf does, with or without the attention metrics
    assert len(set(result["accuracy"].values())) == 1
