"""Contract tests of the extension points: the metric table, the attribution methods, the signals, build_pass.

Each registry is checked as a whole, so a new entry (a metric, a method, a signal) is covered by these tests
without a new test: every metric has a README row and reaches lm-eval's aggregation, every signal round-trips
through a record, `attribute()` works on a config without a pad token.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lm_interp_plugin import metric_names as names
from lm_interp_plugin.interpret import METHODS, SIGNALS, BaseSignal, build_pass
from lm_interp_plugin.interpret.settings import HOW_NOT_WHAT, InterpSettings
from lm_interp_plugin.interpret.signals.contrastive import FOIL
from lm_interp_plugin.interpret.signals.reference_shift import REFERENCE
from lm_interp_plugin.records import InterpRecord, parse_record_line, record_line

REPO = Path(__file__).resolve().parents[2]


def _request(seed: int, prompt_len: int = 15, target_len: int = 4, n_instruction: int = 5):
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(5, 700, (prompt_len,), generator=g).tolist()
    target = torch.randint(5, 700, (target_len,), generator=g).tolist()
    labels = ["special"] + ["instruction"] * n_instruction + ["content"] * (prompt_len - 1 - n_instruction)
    return prompt, target, labels


# -- the metric table -------------------------------------------------------------------------------------
def _readme_metric_names() -> set[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What the metrics mean", 1)[1].split("\n## ", 1)[0]
    cells = re.findall(r"^\| (`[^|]+`) \|", section, re.MULTILINE)
    return {name for cell in cells for name in re.findall(r"`([^`]+)`", cell)}


def test_every_metric_has_a_readme_row_and_every_row_a_metric():
    assert _readme_metric_names() == {spec.readme_name for spec in names.METRICS.values()}


def test_the_metric_table_answers_for_every_name_the_pass_writes():
    for name, family in [
        ("instruction_importance", "score"),
        ("ig_instruction_importance", "score"),
        ("ig_attribution_share_content", "shares"),
        ("ffn_concept_other", "shares"),
        ("instruction_found", "fraction"),
        ("reference_kl", "nats"),
        ("contrastive_margin", "nats"),
        ("answer_layer", "index"),
        ("answer_depth", "fraction"),
        ("ig_completeness_error", "other"),
        ("ablation_drop_removed_per_token", "logprob"),
        ("deletion_gain_ig", "logprob"),
        ("instruction_attention_lift,none", "lift"),
    ]:
        spec = names.metric_spec(name)
        assert spec is not None and spec.family == family, name
    assert names.metric_spec("acc") is None and not names.is_interp_metric("exact_match,strict-match")
    assert names.metric_spec("deletion_gain_ig").higher_is_better is True
    with pytest.raises(ValueError, match="registered already"):
        names.register_metric(dataclasses.replace(names.METRICS["instruction_importance"], unit="other"))


def test_lm_eval_aggregation_never_raises_and_shows_directions():
    from lm_interp_plugin.harness.tasks import _InterpMetrics

    table = _InterpMetrics({"acc": max}, "t")
    assert table["acc"] is max
    assert table["deletion_gain_gxi"]([1.0, 3.0]) == 2.0
    assert table["a_metric_no_table_knows"]([1.0, 3.0]) == 2.0  # averaged with a warning, never KeyError


def test_how_not_what_settings_are_field_metadata_and_the_report_skips_exactly_them():
    from lm_interp_plugin.report.analysis import NOT_COMPARED

    assert HOW_NOT_WHAT == {"chunk_size", "memory_budget", "checkpoint", "fp32_check"}
    assert {k.split(".", 1)[1] for k in NOT_COMPARED if k.startswith("settings.")} == HOW_NOT_WHAT


# -- methods and signals ------------------------------------------------------------------------------------
def test_methods_are_chosen_by_name_and_the_old_flag_is_an_alias():
    assert InterpSettings(methods="gxi+ig").method_names == ("gxi", "ig")
    assert InterpSettings(ig=True).methods == InterpSettings(methods="ig").methods == "gxi+ig"
    assert InterpSettings(methods="gxi+ig").ig is True
    assert InterpSettings.from_kwargs({"interp_methods": "gxi+ig"}).ig is True
    with pytest.raises(ValueError, match="unknown attribution method.*registered: gxi, ig"):
        InterpSettings(methods="gxi+shap")
    with pytest.raises(ValueError, match="unknown signal"):
        InterpSettings(signals="entropi")
    for cls in METHODS.values():
        assert cls.name and cls.long_name and set(cls.parameters) <= set(InterpSettings().to_dict())
    assert METHODS["ig"].has_completeness and not METHODS["gxi"].has_completeness


@pytest.fixture(scope="module")
def every_signal(tiny_model, lm_tokenizer, tmp_path_factory):
    """One pass with every registered signal and method on, through `build_pass` (FFN components cached)."""
    model = tiny_model("llama", seed=3)
    optional = "+".join(n for n, s in SIGNALS.items() if type(s).enabled is BaseSignal.enabled)  # by name
    settings = InterpSettings(methods="+".join(METHODS), deletion=True, ig_steps=2, signals=optional)
    interpreter = build_pass(model, lm_tokenizer, settings, ffn_cache_dir=tmp_path_factory.mktemp("ffn"))
    # what the signals that compare read beyond the request: a reference model, a foil choice
    interpreter.resources[REFERENCE] = tiny_model("llama", seed=4)
    prompt, target, labels = _request(7, prompt_len=10, target_len=3, n_instruction=3)
    return interpreter.run(prompt, target, labels, resources={FOIL: [11, 12]}), prompt, target, labels


def test_every_signal_and_method_runs_and_round_trips_through_a_record(every_signal, lm_tokenizer):
    result, prompt, target, labels = every_signal
    ran = set(result.details)
    assert ran == set(SIGNALS) | (set(METHODS) - {"gxi"}), ran
    record = InterpRecord.from_pass(
        result,
        request={
            "task": "t",
            "doc_id": 0,
            "doc_hash": "h",
            "request_index": 0,
            "request_type": "loglikelihood",
            "role": "gold",
        },
        prompt_tokens=lm_tokenizer.convert_ids_to_tokens(prompt),
        target_tokens=lm_tokenizer.convert_ids_to_tokens(target),
        token_parts=labels,
        params={"L": 10},
        fingerprint={},
        notes=[],
    )
    back = parse_record_line(record_line(record))  # validated: every metric inside the table's bounds
    assert back.metrics == result.metrics
    steps = {**SIGNALS, **{name: cls() for name, cls in METHODS.items()}}
    for name, detail in result.details.items():
        step = steps[name]
        stored = getattr(back, step.record_field)
        for key, value in step.to_record(detail).items():
            assert stored[key] == value, (name, key)
    for name in result.metrics:
        assert names.metric_spec(name) is not None, f"{name} is not in the metric table"


def test_next_token_entropy_equals_an_independent_computation(every_signal, tiny_model):
    """H_n from a plain forward on the ids (not the pass's embeddings and kept logits), float64."""
    result, prompt, target, _ = every_signal
    model = tiny_model("llama", seed=3)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + target[:-1]])).logits[0, len(prompt) - 1 :]
    logp = logits.double().log_softmax(-1)
    expected = -(logp.exp() * logp).sum(-1)
    # float32 logits of two forwards agree to a few ulps of their magnitude; the entropy is a weighted sum of
    # log-probabilities over the vocabulary, so its error is of the order eps32 * max|logit| * log(vocab)
    tol = 16 * torch.finfo(torch.float32).eps * float(logits.abs().max()) * np.log(logits.shape[-1])
    np.testing.assert_allclose(result.details["entropy"].per_token, expected.numpy(), rtol=0, atol=tol)
    assert result.metrics["next_token_entropy"] == pytest.approx(float(expected.mean()), abs=tol)
    assert 0 < result.metrics["next_token_entropy"] < np.log(logits.shape[-1])


# -- build_pass and attribute() ------------------------------------------------------------------------------
def test_attribute_works_on_a_config_without_a_pad_token(tiny_model, lm_tokenizer, tmp_path):
    """Llama-3 and Mistral hub configs set no pad_token_id: the neutral token comes from the tokenizer."""
    from lm_interp_plugin import attribute

    model = tiny_model("llama", seed=5)
    model.config.pad_token_id = None
    prompt = "Answer with one word.\n\nQuestion: what is ice?\nAnswer:"
    result = attribute(
        model, lm_tokenizer, prompt, " water", instruction="Answer with one word.", ffn_cache_dir=tmp_path
    )
    assert result.details["ablation"].neutral_token_id == lm_tokenizer.pad_token_id
    for key in ("instruction_importance", "ablation_drop_replaced", "instruction_attention"):
        assert np.isfinite(result.metrics[key]), key
    # notebooks get FFN concepts too: on a random model none is valid, so each is absent with its reason
    concepts = [key for key in result.metrics if key.startswith("ffn_concept_")]
    assert concepts or set(result.ffn["concepts_absent"]) == {"writing", "coding", "math", "translation"}
    assert result.ffn["component_distribution"]


def test_build_pass_takes_the_tokens_the_config_lacks_from_the_tokenizer(tiny_model, lm_tokenizer):
    model = tiny_model("llama", seed=5)
    model.config.pad_token_id = model.config.bos_token_id = None
    tokens = build_pass(model, lm_tokenizer, InterpSettings(ffn=False)).tokens
    assert (tokens.neutral, tokens.bos, tokens.pad) == (
        lm_tokenizer.pad_token_id,
        lm_tokenizer.bos_token_id,
        lm_tokenizer.pad_token_id,
    )


def test_the_capture_vocabulary_records_each_named_activation_at_the_target_positions(tiny_model):
    """`attn_out`/`mlp_out`: one ``1 x keep x hidden`` tensor per layer, `logits` one ``1 x keep x vocab``;
    the same values as a forward with hooks of one's own; an unknown name is an error."""
    from lm_interp_plugin.arch import get_adapter
    from lm_interp_plugin.interpret.capture import CAPTURE_POINTS, capture

    model = tiny_model("llama", seed=2)
    adapter = get_adapter(model)
    ids = torch.randint(5, 700, (1, 9), generator=torch.Generator().manual_seed(2))
    captured: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad(), capture(model, list(CAPTURE_POINTS), 3, captured):
        logits = model(input_ids=ids).logits
    assert len(captured["attn_out"]) == len(captured["mlp_out"]) == adapter.num_layers
    assert captured["mlp_out"][0].shape == (1, 3, adapter.hidden_size)
    torch.testing.assert_close(captured["logits"][0], logits[:, -3:], rtol=0, atol=0)  # the same tensor
    mine = []
    handle = adapter.mlp_module(1).register_forward_hook(lambda _m, _a, out: mine.append(out))
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    torch.testing.assert_close(captured["mlp_out"][1], mine[0][:, -3:], rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown capture point.*mlp_out"):
        with capture(model, ["no_such_point"], 3, {}):
            pass
    from lm_interp_plugin.interpret.context import PassContext

    ctx = PassContext.create(model, [5, 6], [7], ["content"] * 2, InterpSettings(ffn=False))
    ctx.captured["mlp_out"] = [captured["mlp_out"][0], None]  # a layer the forward never ran
    with pytest.raises(RuntimeError, match="did not run 1 of the 2 modules of 'mlp_out'"):
        ctx.activations("mlp_out")
