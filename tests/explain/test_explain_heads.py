"""explain_heads end to end on tiny models of every family, JSONL round trip, loading, a planted pair."""

from __future__ import annotations

import json

import pytest
import torch

from lm_interp_plugin.explain.heads import (
    compare_heads,
    explain_heads,
    load_model_for_explain,
    parse_layers,
    read_heads_jsonl,
    write_heads_jsonl,
)
from lm_interp_plugin.methods.head_pairs import normalise_like_norm
from lm_interp_plugin.report.render import table_markdown
from lm_interp_plugin.report.sections.heads import table3
from lm_interp_plugin.testing.tiny import (
    TINY_FAMILIES,
    save_tiny,
)

#: the vocabulary of the `tok` fixture (conftest)
TOKENIZER_VOCAB = 400


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_explain_heads_every_family_round_trips(family, tok, tmp_path, tiny_model):
    model = tiny_model(family, tokenizer=tok)
    expl = explain_heads(model, tok, top_k=3, neighbors=5, max_words=30, progress=False)
    assert (expl.num_layers, expl.num_heads) == (2, 4)
    assert [(h.layer, h.head) for h in expl.heads] == [(layer, h) for layer in range(2) for h in range(4)]
    assert expl.fingerprint["model_type"] == family and expl.params["vocab_size"] == 30
    assert sum(len(h.pairs) for h in expl.heads) > 0
    for head in expl.heads:
        for dim in head.dims:
            assert dim.pairs and len(dim.query_words) <= 3 and dim.sign in (1, -1)
        assert all(c >= 1 for _, _, c, _ in head.pairs)
    path = write_heads_jsonl(tmp_path / "heads.jsonl", expl)
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 8 and json.loads(lines[0])["type"] == "header"
    back = read_heads_jsonl(path)
    assert back == expl


def test_planted_pair_in_a_real_model_is_recovered(tok, tiny_model):
    """Layer 0 of a llama: only head 0 dimension 2 has query/key weights, aimed at ' river' and ' green'."""
    words = ["river", "green", "seven", "apple", "blue", "city", "number", "fast", "slow", "five", "mat"]
    model = tiny_model("llama", tokenizer=tok)
    ids = {w: tok.encode(" " + w, add_special_tokens=False)[0] for w in words}
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[ids["green"]] = 0.8 * emb[ids["river"]] + 0.6 * emb[ids["green"]]  # related words
        gain = torch.linspace(0.2, 3.0, 64)[torch.randperm(64, generator=torch.Generator().manual_seed(0))]
        model.model.layers[0].input_layernorm.weight.copy_(gain)
        normed = normalise_like_norm(emb[[ids["river"], ids["green"]]], "rms")
        attn.q_proj.weight.zero_()
        attn.k_proj.weight.zero_()
        attn.q_proj.weight[2] = normed[0] / gain  # after folding the norm weight: the river direction
        attn.k_proj.weight[2] = normed[1] / gain  # kv head 0 serves query heads 0 and 1
    expl = explain_heads(model, tok, top_k=1, vocab=words, layers="0", neighbors=2, progress=False)
    by_head = {h.head: h for h in expl.heads}
    assert set(by_head) == {0, 1, 2, 3}
    # the positive side of dimension 2 is exactly the planted pair, and it is the head's strongest pair; the
    # negative side may add the word most opposed to both directions (paired with itself)
    assert by_head[0].pairs[0][:3] == ("river", "green", 1)
    assert {d.dim for d in by_head[0].dims} == {2}
    positive = [d for d in by_head[0].dims if d.sign == 1]
    assert len(positive) == 1 and positive[0].word_pairs() == [("river", "green")]
    assert all(not by_head[h].pairs for h in (1, 2, 3))


def test_load_model_for_explain_from_folder(tok, tmp_path, tiny_model):
    model = tiny_model("gpt2", tokenizer=tok)
    folder = save_tiny(model, tok, tmp_path / "tiny-gpt2")
    loaded, loaded_tok = load_model_for_explain(folder, dtype="float32", device="cpu")
    assert next(loaded.parameters()).dtype == torch.float32 and not loaded.training
    assert loaded_tok.get_vocab() == tok.get_vocab()
    a = explain_heads(model, tok, top_k=2, max_words=20, layers=[1], progress=False)
    b = explain_heads(loaded, loaded_tok, top_k=2, max_words=20, layers=[1], progress=False)
    assert a.fingerprint["weight_hash"] == b.fingerprint["weight_hash"]
    assert a.heads == b.heads
    with pytest.raises(ValueError, match="dtype"):
        load_model_for_explain(folder, dtype="int3", device="cpu")


def test_table3_from_two_files(tok, tmp_path, tiny_model):
    paths = []
    for name, seed in (("base", 0), ("tuned", 1)):
        model = tiny_model("qwen2", tokenizer=tok, seed=seed)
        expl = explain_heads(model, tok, top_k=4, neighbors=5, progress=False)
        paths.append(write_heads_jsonl(tmp_path / f"{name}.jsonl", expl))
    base, tuned = (read_heads_jsonl(p) for p in paths)
    table = table3(compare_heads(base, tuned))
    assert table.headers == ["verbs", "first layers (0-0)", "middle layers (1-1)", "last layers (none)"]
    firsts = [row[0].split(" (")[0] for row in table.rows]
    assert firsts == ["instruction verbs", "general verbs", "Welch t-test"]
    analysis = compare_heads(base, tuned, ["list", "write"], ["fast", "slow"])
    lines = table_markdown(table3(analysis)).splitlines()
    assert sum(line.startswith("| ") for line in lines) == 4  # header and 3 rows


def test_parse_layers_and_bad_files(tmp_path):
    assert parse_layers("0-2,5", 8) == [0, 1, 2, 5]
    assert parse_layers(None, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="out of range"):
        parse_layers([9], 4)
    with pytest.raises(ValueError, match="0-3,7"):
        parse_layers("a-b", 4)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "head"}\n')
    with pytest.raises(ValueError, match="header"):
        read_heads_jsonl(bad)
    with pytest.raises(FileNotFoundError, match="explain-heads"):
        read_heads_jsonl(tmp_path / "missing.jsonl")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_explain_heads_on_gpu_matches_cpu(tok, tiny_model):
    model = tiny_model("mistral", tokenizer=tok)
    cpu = explain_heads(model, tok, top_k=3, neighbors=5, max_words=30, progress=False)
    gpu = explain_heads(model.to("cuda"), tok, top_k=3, neighbors=5, max_words=30, progress=False)
    assert [h.dims for h in gpu.heads] == [h.dims for h in cpu.heads]
