"""Tests for explain_ffn.py: end to end on every tiny family, JSONL round trip, comparison, tables, plots,
cache."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from lm_interp_plugin.arch import get_adapter
from lm_interp_plugin.explain import ffn_cache as ef
from lm_interp_plugin.explain.ffn import (
    FFNExplanation,
    FFNLayerConcepts,
    explain_ffn,
    read_ffn_jsonl,
    write_ffn_jsonl,
)
from lm_interp_plugin.explain.ffn_cache import load_or_compute_components, load_or_compute_concepts
from lm_interp_plugin.explain.ffn_compare import (
    compare_ffn,
)
from lm_interp_plugin.methods.concepts import ConceptLabel
from lm_interp_plugin.methods.ffn import FFNComponents, ffn_pca
from lm_interp_plugin.methods.vocab import whole_word_vocab
from lm_interp_plugin.report import plots
from lm_interp_plugin.report.render import table_markdown
from lm_interp_plugin.report.sections.ffn_global import table5
from lm_interp_plugin.testing.tiny import TINY_FAMILIES

LEX = {
    "task_concepts": {
        "writing": ["story", "poem", "sentence"],
        "coding": ["code"],
        "math": ["number", "five"],
        "translation": ["French", "Translate"],
    },
    "linguistic_levels": {"morphology": ["ing"], "syntax": ["the", "on"], "semantics": ["cat", "dog"]},
}
SMALL = {"hidden": 32, "layers": 2, "heads": 4, "kv_heads": 2}


#: the vocabulary of the `tok` fixture (conftest)
TOKENIZER_VOCAB = 400


@pytest.fixture(scope="module")
def llama(tok, tiny_model):
    return tiny_model("llama", tokenizer=tok, **SMALL)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_explain_ffn_end_to_end_every_family(family, tok, tiny_model):
    model = tiny_model(family, tokenizer=tok, **SMALL)
    options = None if family == "llama" else {"lexicons": LEX}  # llama uses the packaged concepts.json
    expl = explain_ffn(model, tok, k=3, top_n=4, labeller_options=options, progress=False)
    adapter = get_adapter(model)
    vocab = whole_word_vocab(tok)
    E = adapter.output_embedding_matrix()[torch.tensor(vocab.token_ids)].float()
    E = E / E.norm(dim=1, keepdim=True)
    assert [lc.layer for lc in expl.layers] == [0, 1] and expl.num_layers == 2
    for lc, comps in zip(expl.layers, expl.components):
        direct = ffn_pca(adapter.down_proj_weight(lc.layer), 3)
        torch.testing.assert_close(comps.components, direct.components)
        assert lc.explained_variance_ratio == sorted(lc.explained_variance_ratio, reverse=True)
        for j in range(3):
            scores = comps.components[j] @ E.T  # independent projection
            assert lc.positive[j][0] == vocab.words[int(scores.argmax())]
            assert lc.negative[j][0] == vocab.words[int(scores.argmin())]
            assert len(lc.positive[j]) == len(lc.negative[j]) == 4
            assert lc.labels[j].concept in expl.categories("concept")
            assert lc.labels[j].level in expl.categories("level")
    assert expl.fingerprint["model_type"] == family
    assert expl.params["labeller"]["name"] == "lexicon"


def test_jsonl_round_trip_and_self_comparison(tmp_path, llama, tok):
    expl = explain_ffn(llama, tok, k=3, top_n=4, labeller_options={"lexicons": LEX}, progress=False)
    path = write_ffn_jsonl(tmp_path / "ffn.jsonl", expl)
    assert (tmp_path / "ffn.components.npz").is_file()
    header = json.loads(path.read_text().splitlines()[0])
    assert header["type"] == "header" and header["params"]["k"] == 3
    back = read_ffn_jsonl(path)
    assert back.layers == expl.layers and back.concepts == expl.concepts
    for a, b in zip(back.components, expl.components):
        torch.testing.assert_close(a.components, b.components)
        torch.testing.assert_close(a.mean, b.mean)
    cmp = compare_ffn(expl, back)
    assert max(max(a) for a in cmp.angles) < 1e-3
    for layer_matches in cmp.matches:
        assert [m.tuned_index for m in layer_matches] == [0, 1, 2]
        assert all(m.cosine > 0.9999 and m.word_overlap == 1.0 and not m.label_changed for m in layer_matches)
    for g in cmp.proportions:
        assert g.base_counts == g.tuned_counts and all(p == 1.0 for p in g.z_p)
    without = read_ffn_jsonl(path, load_components=False)
    with pytest.raises(ValueError, match="no component vectors"):
        compare_ffn(expl, without)


def test_compare_detects_rotation_in_changed_layer_only(tmp_path, llama, tok):
    tuned = copy.deepcopy(llama)
    W = get_adapter(tuned).down_proj_weight(1)  # a view of the parameter: changing it changes the model
    W.add_(3 * W.std() * torch.randn(W.shape, generator=torch.Generator().manual_seed(0)))
    base_e = explain_ffn(llama, tok, k=3, top_n=4, labeller_options={"lexicons": LEX}, progress=False)
    tuned_e = explain_ffn(tuned, tok, k=3, top_n=4, labeller_options={"lexicons": LEX}, progress=False)
    cmp = compare_ffn(base_e, tuned_e)
    assert cmp.mean_angles[0] < 1e-3
    assert cmp.mean_angles[1] > 10
    assert len(cmp.to_dict()["mean_angles"]) == 2
    table = table_markdown(table5(cmp))
    assert "| coding |" in table and "first layers 0-0" in table and "chi-square p" in table
    for kind in ("concept", "level"):
        assert len(plots.ffn_concept_proportions(cmp, kind=kind)) > 1000
    assert len(plots.ffn_rotation(cmp)) > 1000
    with pytest.raises(ValueError, match="base explains layers \\[0, 1\\] but tuned explains \\[1\\]"):
        compare_ffn(
            base_e,
            explain_ffn(
                tuned, tok, k=3, top_n=4, layers="1", labeller_options={"lexicons": LEX}, progress=False
            ),
        )


def _synthetic(concepts_per_layer: list[list[str]]) -> FFNExplanation:
    k = len(concepts_per_layer[0])
    gen = torch.Generator().manual_seed(0)
    layers, comps = [], []
    for i, concepts in enumerate(concepts_per_layer):
        q, _ = torch.linalg.qr(torch.randn(8, k, generator=gen))
        comps.append(FFNComponents(q.T.contiguous(), torch.ones(k), torch.full((k,), 0.1), torch.zeros(8)))
        layers.append(
            FFNLayerConcepts(
                i, [0.1] * k, [["a"]] * k, [["b"]] * k, [ConceptLabel(concept=c) for c in concepts]
            )
        )
    return FFNExplanation({}, {"k": k}, len(layers), ["coding", "math"], [], layers, comps)


def test_group_proportions_and_tests_against_hand_computation():
    base = _synthetic([["coding"] * 8 + ["other"] * 2, ["math"] * 10, ["math"] * 10])
    tuned = _synthetic([["coding"] * 2 + ["other"] * 8, ["math"] * 10, ["math"] * 5 + ["coding"] * 5])
    cmp = compare_ffn(base, tuned)
    first = next(g for g in cmp.proportions if g.kind == "concept" and g.group == "first")
    # an old file's "other" label is pooled with "none" (no concept)
    assert first.categories == ["coding", "math", "none"] and first.layers == [0]
    assert first.base_shares() == [0.8, 0.0, 0.2] and first.tuned_shares() == [0.2, 0.0, 0.8]
    # pooled two-proportion z: p = 0.5, se = sqrt(0.25 * (1/10 + 1/10)), z = 0.6 / se
    z = 0.6 / math.sqrt(0.25 * 0.2)
    expected_p = math.erfc(z / math.sqrt(2))
    assert first.z_p[0] == pytest.approx(expected_p, rel=1e-9)
    assert first.z_p[1] == 1.0  # 0 % in both
    # for a 2 x 2 table (math empty in both is dropped) chi-square without correction equals z^2
    assert first.chi2 == pytest.approx(z * z, rel=1e-9) and first.chi2_p == pytest.approx(
        expected_p, rel=1e-9
    )
    last = next(g for g in cmp.proportions if g.kind == "concept" and g.group == "last")
    assert last.base_counts == [0, 10, 0] and last.tuned_counts == [5, 5, 0]
    assert cmp.per_layer_shares["tuned"]["concept"]["coding"] == [0.2, 0.0, 0.5]
    table = table_markdown(table5(cmp))
    assert "| coding | 80.0 -> 20.0 (p=0.00729) | 0.0 -> 0.0 (p=1) | 0.0 -> 50.0" in table
    assert table_markdown(table5(cmp, kind="level")).count("| none |") == 1


def test_component_cache_round_trip_and_invalidation(tmp_path, tok, monkeypatch, caplog, tiny_model):
    model = tiny_model("qwen2", tokenizer=tok, **SMALL)
    first = load_or_compute_components(model, 3, tmp_path, "tiny/qwen2", progress=False)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and "tiny_qwen2_k3" in files[0].name
    with np.load(files[0], allow_pickle=False) as data:  # plain arrays, no pickle
        assert data["components"].shape == (2, 3, 32)

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    with monkeypatch.context() as m:
        m.setattr(ef, "ffn_pca", fail)
        again = load_or_compute_components(model, 3, tmp_path, "tiny/qwen2", progress=False)
    for a, b in zip(first, again):
        assert torch.equal(a.components, b.components) and torch.equal(
            a.explained_variance, b.explained_variance
        )
    # another k is another entry
    assert load_or_compute_components(model, 2, tmp_path, "tiny/qwen2", progress=False)[0].k == 2
    # changed weights under the same identity miss the cache
    with torch.no_grad():
        get_adapter(model).down_proj_weight(0).mul_(-0.5).add_(0.01)
    changed = load_or_compute_components(model, 3, tmp_path, "tiny/qwen2", progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 3
    assert not torch.allclose(changed[0].mean, first[0].mean)
    torch.testing.assert_close(changed[1].components, first[1].components)  # layer 1 untouched
    # a corrupt file is recomputed with a warning
    path = max(tmp_path.glob("*.npz"), key=lambda p: p.stat().st_mtime)
    path.write_bytes(b"not a zip")
    with caplog.at_level("WARNING"):
        fixed = load_or_compute_components(model, 3, tmp_path, "tiny/qwen2", progress=False)
    assert "unreadable" in caplog.text
    torch.testing.assert_close(fixed[0].components, changed[0].components)
    with pytest.raises(ValueError, match="model_identity is empty"):
        load_or_compute_components(model, 3, tmp_path, "", progress=False)


def test_cache_file_names_are_cut_between_words():
    """The readable part of a cache file name ends the model path and starts with a whole word."""
    identity = "/work/wt/report/lm_interp_plugin/data/demo_pair/checkpoints/instruction-tuned"
    name = ef.readable_name(identity)
    assert len(name) <= ef.NAME_CHARS and identity.replace("/", "_").endswith(name)
    assert name == "interp_plugin_data_demo_pair_checkpoints_instruction-tuned"  # not "p_plugin_..."
    assert ef.readable_name("org/model") == "org_model"  # short: whole
    assert ef.readable_name("x" * 80) == "x" * ef.NAME_CHARS  # one long word: its end
    path = ef.component_cache_path("/c", identity, 3, "float32", "abc")
    assert path.name.startswith("ffn_components_interp_plugin_data_") and path.name.endswith(".npz")


def test_concept_cache_writes_labels_next_to_components(tmp_path, llama, tok):
    _, labels = load_or_compute_concepts(
        llama, tok, 3, tmp_path, "tiny/llama", top_n=4, labeller_options={"lexicons": LEX}, progress=False
    )
    label_files = list(tmp_path.glob("*.labels_*.json"))
    assert len(label_files) == 1 and len(labels) == 2 and all(len(x) == 3 for x in labels)
    stored = json.loads(label_files[0].read_text())
    assert stored["labels"] == [[x.to_dict() for x in layer] for layer in labels]
    # the cached labels are what explain_ffn computes for the same settings
    expl = explain_ffn(
        llama,
        tok,
        k=3,
        top_n=4,
        labeller_options={"lexicons": LEX},
        progress=False,
        cache_dir=tmp_path,
        model_identity="tiny/llama",
    )
    assert [lc.labels for lc in expl.layers] == labels
    _, again = load_or_compute_concepts(
        llama, tok, 3, tmp_path, "tiny/llama", top_n=4, labeller_options={"lexicons": LEX}, progress=False
    )
    assert again == labels
    # other labeller settings get their own file
    load_or_compute_concepts(
        llama,
        tok,
        3,
        tmp_path,
        "tiny/llama",
        top_n=4,
        labeller_options={"lexicons": LEX, "alpha": 0.1},
        progress=False,
    )
    assert len(list(tmp_path.glob("*.labels_*.json"))) == 2
