"""Tests for FFN concept validity (explain/ffn_validity.py) and what it enforces: a random model gets (almost)
no concept labels, the per-example probe reports only valid concepts, finding 3 becomes "not measurable"."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lm_interp_plugin import metric_names as names
from lm_interp_plugin.explain.ffn import explain_ffn, read_ffn_jsonl, write_ffn_jsonl
from lm_interp_plugin.explain.ffn_validity import (
    MIN_AUC,
    auc,
    bootstrap_auc,
    instruct_items,
    item_activations,
    measure_validity,
    render_item,
)
from lm_interp_plugin.interpret.ffn_probe import FFNProbe
from lm_interp_plugin.methods.concepts import NONE, ConceptLabel
from lm_interp_plugin.methods.ffn import concept_activation, ffn_pca
from lm_interp_plugin.report.analysis import TaskAnalysis
from lm_interp_plugin.report.findings import NOT_MEASURABLE, check_findings

CONCEPTS = ["writing", "coding", "math", "translation"]


@pytest.fixture(scope="module")
def random_llama(tiny_model):
    return tiny_model("llama", seed=3, hidden=64, layers=4, heads=4, kv_heads=2)


def test_random_tiny_model_gets_at_most_five_percent_concept_labels(random_llama, lm_tokenizer):
    expl = explain_ffn(random_llama, lm_tokenizer, k=8, top_n=10, progress=False)
    labels = [lab for layer in expl.layers for lab in layer.labels]
    assert len(labels) == 32
    with_concept = sum(lab.concept != NONE for lab in labels)
    with_level = sum(lab.level != NONE for lab in labels)
    assert with_concept <= 0.05 * len(labels) and with_level <= 0.05 * len(labels), (with_concept, with_level)
    assert all(lab.q_concept is not None and set(lab.p_values) >= set(CONCEPTS) for lab in labels)


def test_auc_and_bootstrap_against_brute_force():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=30), 1)  # rounded: ties happen
    positive = np.arange(30) < 10
    pairs = [(a, b) for a, b in itertools.product(scores[positive], scores[~positive])]
    expected = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
    assert auc(scores, positive) == pytest.approx(expected, abs=1e-12)
    lo, hi = bootstrap_auc(scores, positive, n_boot=300, seed=1)
    assert lo <= auc(scores, positive) <= hi and (lo, hi) == bootstrap_auc(
        scores, positive, n_boot=300, seed=1
    )
    with pytest.raises(ValueError, match="positive and negative"):
        auc(scores, np.ones(30, dtype=bool))


def test_items_render_as_the_task_does():
    items = instruct_items()
    assert len(items) == 217 and {"coding", "math", "translation", "rewriting"} <= {
        i["category"] for i in items
    }
    with_input = next(i for i in items if i["input"])
    prompt, target = render_item(with_input)
    assert prompt == f"{with_input['instruction']}\n\nInput: {with_input['input']}\n\nOutput:"
    assert target == " " + with_input["reference"]


@pytest.mark.slow
def test_item_activations_read_the_target_predicting_positions(random_llama, lm_tokenizer):
    from lm_interp_plugin.arch import get_adapter

    adapter = get_adapter(random_llama)
    comps = [ffn_pca(adapter.down_proj_weight(layer), 3) for layer in range(adapter.num_layers)]
    items = instruct_items()[::40]
    batched = item_activations(random_llama, lm_tokenizer, comps, items, batch_size=4)
    assert batched.shape == (len(items), 4, 3)
    # independent computation: one unpadded forward per item, hooks on the MLPs
    outputs = {}
    handles = [
        adapter.mlp_module(layer).register_forward_hook(
            lambda _m, _i, out, layer=layer: outputs.__setitem__(layer, out.detach())
        )
        for layer in range(adapter.num_layers)
    ]
    try:
        for row, item in zip(batched, items):
            prompt, target = render_item(item)
            p, t = lm_tokenizer.encode(prompt), lm_tokenizer.encode(target, add_special_tokens=False)
            with torch.no_grad():
                random_llama(torch.tensor([p + t[:-1]]))
            for layer in range(adapter.num_layers):
                out = outputs[layer][0, len(p) - 1 : len(p) - 1 + len(t)]
                expected = concept_activation(out, comps[layer].components).double().numpy()
                # padding changes the kernels' summation order only: float32 eps times the hidden size
                np.testing.assert_allclose(row[layer], expected, atol=64 * 1.2e-7 * 10)
    finally:
        for handle in handles:
            handle.remove()


def _planted_validity(**kw):
    categories = [i["category"] for i in instruct_items()]
    coding = np.array([c == "coding" for c in categories])
    rng = np.random.default_rng(0)
    acts = np.zeros((len(categories), 1, 2))
    acts[:, 0, 0] = 0.5 + 0.3 * coding + 0.05 * rng.normal(size=len(categories))  # coding items use it more
    acts[:, 0, 1] = 1 - acts[:, 0, 0]
    return measure_validity(
        acts, categories, [["coding", "math"]], CONCEPTS, {"name": "test"}, n_boot=200, **kw
    )


def test_validity_verdicts_and_reasons():
    validity = _planted_validity()
    by = {c.concept: c for c in validity.concepts}
    assert by["coding"].valid and by["coding"].auc > 0.95 and by["coding"].ci_low > 0.5
    assert not by["math"].valid and by["math"].auc < MIN_AUC and "below 0.65" in by["math"].reason
    assert not by["writing"].valid and "no component carries it" in by["writing"].reason
    assert by["writing"].categories == ["rewriting", "editing"] and by["coding"].n_positive == 18
    assert validity.valid_concepts() == ["coding"] and set(validity.absent()) == {
        "writing",
        "math",
        "translation",
    }
    assert "coding" in validity.table() and "absent:" in validity.table()
    no_mapping = _planted_validity(validation_categories={"coding": ["coding"]})
    assert "no interp_instruct category" in no_mapping.absent()["math"]


def _fake_outputs(model, n_targets, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, n_targets, model.config.hidden_size, generator=gen) for _ in range(4)]


def test_probe_reports_only_valid_concepts(random_llama):
    from lm_interp_plugin.arch import get_adapter

    adapter = get_adapter(random_llama)
    comps = [ffn_pca(adapter.down_proj_weight(layer), 2) for layer in range(adapter.num_layers)]
    labels = [[ConceptLabel(concept="coding"), ConceptLabel(concept="math")] for _ in comps]
    validity = _planted_validity()
    probe = FFNProbe.from_parts(random_llama, comps, labels, validity)
    scalars, detail = probe.metrics_from(_fake_outputs(random_llama, 3), 3)
    assert set(scalars) == {names.FFN_CONCEPT_PREFIX + "coding", names.FFN_CONCEPT_OTHER}
    # math's components pooled under other; the distribution is float32 (k=2 terms of eps each)
    assert sum(scalars.values()) == pytest.approx(1.0, abs=2 * torch.finfo(torch.float32).eps)
    assert set(detail["concepts_absent"]) == {"writing", "math", "translation"}
    assert len(detail["component_distribution"]) == 4  # the label-free signal stays
    # nothing valid: no concept scalar at all, every reason in the record
    none_valid = _planted_validity(min_auc=1.01)
    probe = FFNProbe.from_parts(random_llama, comps, labels, none_valid)
    scalars, detail = probe.metrics_from(_fake_outputs(random_llama, 3), 3)
    assert scalars == {} and set(detail["concepts_absent"]) == set(CONCEPTS)
    assert all(len(row) == 2 for row in detail["component_distribution"])


def test_finding_3_is_not_measurable_without_valid_concepts():
    task = TaskAnalysis(task="interp_instruct", runs=["base", "tuned"])
    why = "no component carries it"
    task.ffn_concepts_absent = {"base": {"coding": why, "math": why}, "tuned": {"coding": why, "math": why}}
    (row,) = check_findings([task], tuned=["tuned"], baseline="base")
    assert row.finding == 3 and row.verdict == NOT_MEASURABLE
    assert row.explanation.endswith("base, tuned: coding, math absent (no component carries it)")
    task.ffn_concepts_absent["tuned"] = {"math": "AUC 0.50 below 0.65"}
    (row,) = check_findings([task], tuned=["tuned"], baseline="base")
    assert (
        "base: coding, math absent (no component carries it); tuned: math absent (AUC 0.50" in row.explanation
    )
    assert "nan" not in row.sentence() and row.sentence().endswith(NOT_MEASURABLE)
    assert math.isnan(row.mean_diff) and row.p_value is None
    assert check_findings([TaskAnalysis(task="t", runs=["base", "tuned"])], ["tuned"], "base") == []


@pytest.mark.slow
def test_explain_ffn_validate_round_trip_and_cache(random_llama, lm_tokenizer, tmp_path):
    expl = explain_ffn(
        random_llama, lm_tokenizer, k=4, top_n=5, progress=False, validate=True, cache_dir=tmp_path
    )
    assert expl.validity is not None and [c.concept for c in expl.validity.concepts] == CONCEPTS
    assert not expl.validity.valid_concepts()  # a random model: nothing is valid
    assert len(list(tmp_path.glob("ffn_validity_*.npz"))) == 1
    path = write_ffn_jsonl(tmp_path / "ffn.jsonl", expl)
    assert read_ffn_jsonl(path).validity == expl.validity


def test_report_section_shows_validity_and_absent_concepts(tmp_path):
    from lm_interp_plugin.explain.ffn import FFNExplanation
    from lm_interp_plugin.report import render as R
    from lm_interp_plugin.report.sections import Figures, ReportContext
    from lm_interp_plugin.report.sections.ffn_validity import FFNValidity

    expl = FFNExplanation({}, {"k": 2}, 1, CONCEPTS, [], [], None, validity=_planted_validity())
    path = write_ffn_jsonl(tmp_path / "ffn_tuned.jsonl", expl)
    task = TaskAnalysis(task="interp_instruct", runs=["base", "tuned"])
    task.ffn_concepts_absent = {"tuned": {"math": "AUC 0.40 below 0.65"}}
    ctx = ReportContext([], "base", {}, [task], [], [], tmp_path, inputs={"ffn": [path]})
    section = FFNValidity()
    data = section.analyse(ctx)
    tables = [b for b in section.blocks(data, Figures(tmp_path)) if isinstance(b, R.Table)]
    measured, absent = tables
    assert measured.rows[1][0] == "coding" and measured.rows[1][-1] == "valid"
    assert measured.rows[0][-1].startswith("no component carries it")
    assert absent.rows == [["math", "AUC 0.40 below 0.65"]] and "tuned" in absent.caption
    empty = ReportContext([], "base", {}, [TaskAnalysis(task="t", runs=[])], [], [], tmp_path)
    assert section.analyse(empty) is None
