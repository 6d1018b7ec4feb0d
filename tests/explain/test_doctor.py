"""`lm-interp doctor`: what arch.py finds per layer and which metrics a model gets, from its config alone."""

from __future__ import annotations

import json

import pytest

from lm_interp_plugin.arch import UnsupportedArchitectureError
from lm_interp_plugin.cli import main
from lm_interp_plugin.explain.doctor import diagnose, format_diagnosis


def test_doctor_finds_every_layer_of_a_tiny_llama(tiny_llama_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_llama_dir)
    diagnosis = diagnose(tiny_llama_dir)
    layers = diagnosis.findings.layers
    assert diagnosis.findings.error is None and diagnosis.findings.family == "llama"
    assert [layer.index for layer in layers] == list(range(config.num_hidden_layers))
    for layer in layers:
        assert layer.attention == f"model.layers.{layer.index}.self_attn"
        assert layer.ffn == f"model.layers.{layer.index}.mlp"
        assert layer.ffn_shape == f"{config.hidden_size} x {config.intermediate_size}"
    assert {v.family: v.available for v in diagnosis.verdicts} == {
        "attribution": True,
        "ablation": True,
        "instruction attention": True,
        "FFN concepts": True,
        "explain-heads": True,
        "explain-ffn": True,
    }
    text = format_diagnosis(diagnosis)
    assert f"layers 0-{config.num_hidden_layers - 1}: attention model.layers.N.self_attn" in text
    assert "per-layer probe" in text


def test_doctor_reads_only_the_config(tmp_path):
    """No weights are needed (the model is built on the meta device): a folder with a config.json suffices."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(
        "llama",
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        vocab_size=99,
    )
    config.save_pretrained(tmp_path)
    diagnosis = diagnose(tmp_path)
    assert len(diagnosis.findings.layers) == 3 and diagnosis.findings.layers[0].ffn_shape == "64 x 96"


def test_doctor_on_a_hybrid_names_each_layers_mixer_and_ffn():
    """A hybrid's layers without attention or without an FFN are named as such (Nemotron-H: one block per
    layer), and the verdicts follow the adapter: FFN concepts over the FFN layers; Zamba's nested-block FFN
    gets none, with the reason."""
    from lm_interp_plugin.explain.doctor import arch_findings, verdicts
    from lm_interp_plugin.testing.families import build_family_model

    model = build_family_model("nemotron_h")
    findings = arch_findings(model)
    assert findings.error is None
    assert [layer.attention.startswith("none") for layer in findings.layers] == [True, True, False, True]
    assert [layer.ffn_shape == "-" for layer in findings.layers] == [True, False, True, False]
    assert {v.family: v.available for v in verdicts(model, findings)}["FFN concepts"]
    zamba = build_family_model("zamba")
    by_family = {v.family: v for v in verdicts(zamba, arch_findings(zamba))}
    assert not by_family["FFN concepts"].available and "before the residual" in by_family["FFN concepts"].how


def test_doctor_says_why_when_arch_finds_nothing(tmp_path):
    """Whatever arch.py cannot resolve, the verdicts that need it say no and carry arch's reason; the ones
    that do not need it stay available."""
    from torch import nn

    from lm_interp_plugin.explain.doctor import ArchFindings, verdicts

    class NoConfigModel(nn.Module):  # anything arch.py refuses
        config = type("Config", (), {"num_attention_heads": 2, "_attn_implementation": "sdpa"})()

        def get_input_embeddings(self):
            return nn.Embedding(3, 2)

    findings = ArchFindings(family=None, error="no decoder layers found (seen: a, b)")
    got = {v.family: v for v in verdicts(NoConfigModel(), findings)}
    for family in ("FFN concepts", "explain-heads", "explain-ffn"):
        assert not got[family].available and "no decoder layers found" in got[family].how
    assert got["attribution"].available and got["ablation"].available
    assert got["instruction attention"].available and "eager fallback" in got["instruction attention"].how


def test_doctor_refuses_a_model_that_is_not_a_causal_lm(tmp_path):
    from transformers import AutoConfig

    AutoConfig.for_model("t5", d_model=32, num_layers=1, num_heads=2, d_ff=64).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="not load as a causal"):
        diagnose(tmp_path)


def test_doctor_command(tiny_llama_dir, capsys):
    assert main(["doctor", str(tiny_llama_dir)]) == 0
    assert "arch.py: family row 'llama'" in capsys.readouterr().out
    assert main(["doctor", str(tiny_llama_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["findings"]["family"] == "llama" and data["model_class"] == "LlamaForCausalLM"


def test_a_gguf_path_is_split_into_folder_and_file(tmp_path):
    from lm_interp_plugin.explain.loading import model_source

    gguf = tmp_path / "m.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    assert model_source(gguf) == (str(tmp_path), {"gguf_file": "m.Q4.gguf"})
    assert model_source(tmp_path, "m.Q4.gguf") == (str(tmp_path), {"gguf_file": "m.Q4.gguf"})
    assert model_source("org/model") == ("org/model", {})
