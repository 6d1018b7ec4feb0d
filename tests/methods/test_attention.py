"""Instruction attention, head word pairs and the instruction-verb analysis (pure methods)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from lm_interp_plugin.methods.attention import instruction_attention, target_query_positions
from lm_interp_plugin.methods.head_pairs import (
    DimensionWords,
    HeadsExplanation,
    HeadWordPairs,
    fold_norm,
    layer_word_pairs,
    normalise_like_norm,
)
from lm_interp_plugin.methods.verbs import layer_groups, load_verbs, verb_analysis
from lm_interp_plugin.methods.vocab import WordRelatedness, whole_word_vocab, word_list_vocab
from lm_interp_plugin.report.render import table_markdown
from lm_interp_plugin.report.sections.heads import table3

#: the vocabulary of the `tok` fixture (conftest)
TOKENIZER_VOCAB = 400


# -------------------------------------------------------------------------------------- instruction attention
def _causal_attention(layers, heads, seq, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(layers, heads, seq, seq, generator=g)
    logits = logits.masked_fill(torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1), -math.inf)
    return logits.softmax(-1)


def test_target_query_positions():
    assert target_query_positions(5, 3) == [4, 5, 6]
    assert target_query_positions(1, 1) == [0]
    with pytest.raises(ValueError, match="target_len"):
        target_query_positions(4, 0)


def test_instruction_attention_matches_hand_loop():
    attn = _causal_attention(3, 4, 9)
    mask = [0, 1, 1, 0, 1, 0]  # prompt_len 6, 3 instruction tokens
    pos = target_query_positions(6, 3)  # [5, 6, 7]
    res = instruction_attention(attn, mask, pos, top_n=3)
    expected = np.zeros((3, 4))
    for layer in range(3):
        for head in range(4):
            total = 0.0
            for q in pos:
                total += sum(float(attn[layer, head, q, m]) for m in range(6) if mask[m])
            expected[layer, head] = total / len(pos)
    assert np.allclose(res.mass.numpy(), expected, atol=1e-6)
    assert res.uniform_share == pytest.approx(0.5)
    assert np.allclose(res.lift.numpy(), expected / 0.5, atol=1e-6)
    assert res.mean_mass == pytest.approx(expected.mean(), abs=1e-6)
    assert res.layer_mass == pytest.approx(expected.mean(1).tolist(), abs=1e-6)
    best = np.unravel_index(np.argmax(expected), expected.shape)
    assert res.top_heads[0][:2] == (int(best[0]), int(best[1]))
    assert [t[3] for t in res.top_heads] == sorted([t[3] for t in res.top_heads], reverse=True)
    d = res.to_dict()
    assert len(d["instruction_attention"]) == 3 and len(d["instruction_attention"][0]) == 4


def test_uniform_attention_over_prompt_has_lift_one():
    seq, prompt_len = 6, 4
    attn = torch.zeros(1, 2, seq, seq)
    attn[..., :prompt_len] = 1 / prompt_len  # every query spreads evenly over the prompt
    res = instruction_attention(attn, [1, 0, 0, 1], [3, 4])
    assert torch.allclose(res.lift, torch.ones(1, 2))


def test_instruction_attention_rejects_bad_input():
    attn = _causal_attention(1, 1, 5)
    with pytest.raises(ValueError, match="no instruction token"):
        instruction_attention(attn, [0, 0, 0], [2])
    with pytest.raises(ValueError, match="within"):
        instruction_attention(attn, [1, 0, 0], [7])
    with pytest.raises(ValueError, match="only 5 positions"):
        instruction_attention(attn, [1] * 6, [2])
    with pytest.raises(ValueError, match="layers x heads x seq x seq"):
        instruction_attention(attn[0], [1, 0], [1])


# ---------------------------------------------------------------------------------------------- vocabularies
def test_whole_word_vocab(tok):
    vocab = whole_word_vocab(tok)
    assert len(vocab.words) > 10
    assert len({w.lower() for w in vocab.words}) == len(vocab.words)
    for tid, word in zip(vocab.token_ids, vocab.words):
        assert word.isalpha() and len(word) >= 2
        assert tok.decode([tid]) == " " + word
    assert tok.bos_token_id not in vocab.token_ids
    assert len(whole_word_vocab(tok, max_words=5).words) == 5


def test_word_list_vocab_warns_about_multi_token_words(tok, caplog):
    with caplog.at_level(logging.WARNING):
        vocab = word_list_vocab(tok, ["the", "river", "xylophonequark"])
    assert vocab.words == ["the", "river"]
    assert tok.decode(vocab.token_ids) == " the river"
    assert "xylophonequark" in caplog.text
    with pytest.raises(ValueError, match="single token"):
        word_list_vocab(tok, ["xylophonequark"])


# ---------------------------------------------------------------------------------------------- word pairs
WORDS = ["write", "essay", "cat", "dog", "river", "green", "seven", "apple"]


def _planted_embeddings():
    """Orthonormal word directions, except that 'essay' leans on 'write' (related words)."""
    d = 16
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(1)))
    emb = q[: len(WORDS)].clone() * 3.0
    emb[1] = 0.8 * emb[0] + 0.6 * emb[1]  # essay ~ write
    return emb


def test_fold_norm_and_normalise():
    w = torch.randn(2, 3, 4)
    g = torch.tensor([1.0, 2.0, 0.0, -1.0])
    s = torch.tensor([1.0, 0.5, 3.0])
    folded = fold_norm(w, g, s)
    for h in range(2):
        for e in range(3):
            for i in range(4):
                assert folded[h, e, i] == pytest.approx(float(w[h, e, i] * g[i] * s[e]))
    x = torch.randn(5, 4) * 3 + 1
    rms = normalise_like_norm(x, "rms")
    assert torch.allclose(rms.pow(2).mean(-1), torch.ones(5), atol=1e-4)
    ln = normalise_like_norm(x, "layer")
    assert torch.allclose(ln, torch.nn.functional.layer_norm(x, (4,), eps=1e-6), atol=1e-5)
    with pytest.raises(ValueError, match="norm_type"):
        normalise_like_norm(x, "batch")


def test_relatedness_neighbors_and_cosine():
    emb = _planted_embeddings()
    rel = WordRelatedness(emb, mode="neighbors", neighbors=1)
    a, b = torch.tensor([0, 0, 2]), torch.tensor([1, 2, 3])
    assert rel.related(a, b).tolist() == [True, False, False]
    cos = WordRelatedness(emb, mode="cosine", min_similarity=0.5)
    assert cos.related(a, b).tolist() == [True, False, False]
    # the centred cosine of the planted pair, computed independently
    c = emb - emb.mean(0)
    expect = float(c[0] @ c[1] / (c[0].norm() * c[1].norm()))
    assert float(rel.similarity(torch.tensor(0), torch.tensor(1))) == pytest.approx(expect, abs=1e-5)
    with pytest.raises(ValueError, match="mode"):
        WordRelatedness(emb, mode="glove")


def test_planted_word_pair_is_recovered_with_both_signs():
    emb = _planted_embeddings()
    normed = normalise_like_norm(emb, "rms")
    heads, head_dim, d = 2, 4, emb.shape[1]
    wq = torch.zeros(heads, head_dim, d)
    wk = torch.zeros(heads, head_dim, d)
    write, essay, cat = (
        normed[0] / normed[0].norm(),
        normed[1] / normed[1].norm(),
        normed[2] / normed[2].norm(),
    )
    wq[0, 1], wk[0, 1] = write, essay  # positive side: q(write) > 0, k(essay) > 0
    wq[0, 3], wk[0, 3] = -write, -essay  # negative side: both most negative -> product positive
    wq[1, 0], wk[1, 0] = write, cat  # an unrelated pair: filtered out
    wq[1, 2], wk[1, 2] = write, -essay  # opposite signs: product negative, never a pair
    rel = WordRelatedness(emb, mode="neighbors", neighbors=1)
    out = layer_word_pairs(wq, wk, normed, WORDS, rel, layer=7, top_k=1)
    assert [(h.layer, h.head) for h in out] == [(7, 0), (7, 1)]
    h0, h1 = out
    assert [(q, k, c) for q, k, c, _ in h0.pairs] == [("write", "essay", 2)]
    expected_score = 2 * float((normed[0] @ write) * (normed[1] @ essay))
    assert h0.pairs[0][3] == pytest.approx(expected_score, rel=1e-4)
    assert [(dw.dim, dw.sign) for dw in h0.dims] == [(1, 1), (3, -1)]
    assert all(dw.word_pairs() == [("write", "essay")] for dw in h0.dims)
    assert h0.word_counts() == {"write": 2, "essay": 2}
    assert h1.pairs == [] and h1.dims == []
    # with every dimension kept, head 1's dimension 0 shows the unrelated words but no pair
    full = layer_word_pairs(wq, wk, normed, WORDS, rel, layer=7, top_k=1, keep_all_dimensions=True)
    d0 = next(dw for dw in full[1].dims if dw.dim == 0 and dw.sign == 1)
    assert (d0.query_words, d0.key_words, d0.pairs) == (["write"], ["cat"], [])
    assert HeadWordPairs.from_dict(h0.to_dict()) == h0


def test_every_kth_neighbour_is_related_whatever_the_reduction_order():
    """The k-th neighbour sits exactly on its word's threshold: `related` (elementwise sum) and
    `related_lists` (einsum) must keep it although they round differently from the matrix product the
    threshold came from."""
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(300, 96, generator=g)
    k = 7
    rel = WordRelatedness(emb, mode="neighbors", neighbors=k)
    sims = rel.unit @ rel.unit.T
    sims.fill_diagonal_(-math.inf)
    kth = sims.topk(k, dim=-1).indices  # 300 x k, the last column is each word's k-th neighbour
    words = torch.arange(300)[:, None].expand_as(kth)
    assert bool(rel.related(words, kth).all())
    lists = rel.related_lists(words[:, :1], kth)  # 300 x 1 x k
    assert bool(lists.all())
    # and far words stay unrelated: the tolerance is a few ulps, not a loosened cut
    far = sims.topk(k + 40, dim=-1).indices[:, -1:]
    assert not bool(rel.related(words[:, :1], far).any())


def test_layer_word_pairs_checks_shapes():
    emb = _planted_embeddings()
    rel = WordRelatedness(emb)
    with pytest.raises(ValueError, match="expand GQA"):
        layer_word_pairs(torch.zeros(4, 2, 16), torch.zeros(2, 2, 16), emb, WORDS, rel, layer=0)


# ---------------------------------------------------------------------------------------------- verb analysis
INSTR = ["write", "summarize", "list"]
GENERAL = ["go", "eat", "run"]


def _explanation(counts: dict[tuple[int, int], dict[str, int]], layers=3, heads=2) -> HeadsExplanation:
    """Heads whose word counts are exactly `counts` (each occurrence as a self-pair counts twice, so
    halve)."""
    out = []
    for layer in range(layers):
        for head in range(heads):
            dims = []
            for word, n in counts.get((layer, head), {}).items():
                for e in range(n):
                    dims.append(DimensionWords(e, 1, [word], ["filler"], [(0, 0)]))
            out.append(HeadWordPairs(layer, head, [], dims))
    return HeadsExplanation({}, {}, layers, heads, out)


def test_verb_analysis_shares_and_welch_test():
    base = _explanation({(0, 0): {"write": 1, "go": 2}, (1, 0): {"list": 3}, (2, 1): {"eat": 1}})
    tuned = _explanation(
        {
            (0, 0): {"write": 2, "go": 1, "summarize": 1},  # write, summarize rise; go falls
            (0, 1): {"write": 1, "list": 1, "run": 1},  # write, list, run rise
            (1, 0): {"list": 3, "eat": 1},  # list equal (no rise); eat rises
            (2, 0): {"summarize": 4, "list": 1},
            (2, 1): {"write": 1, "summarize": 1, "eat": 1},  # eat equal
        }
    )
    res = verb_analysis(base, tuned, INSTR, GENERAL)
    assert res.groups == {"first": [0], "middle": [1], "last": [2]}
    assert res.heads_per_group == {"first": 2, "middle": 2, "last": 2}
    first = res.verb_shares["first"]
    assert first == {"write": 1.0, "summarize": 0.5, "list": 0.5, "go": 0.0, "eat": 0.0, "run": 0.5}
    assert res.verb_shares["middle"] == {"write": 0, "summarize": 0, "list": 0, "go": 0, "eat": 0.5, "run": 0}
    assert res.verb_shares["last"] == {
        "write": 0.5,
        "summarize": 1.0,
        "list": 0.5,
        "go": 0,
        "eat": 0,
        "run": 0,
    }
    assert res.instruction_mean["first"] == pytest.approx(2 / 3)
    assert res.general_mean["first"] == pytest.approx(1 / 6)
    # Welch's t by its formula
    a, g = np.array([1.0, 0.5, 0.5]), np.array([0.0, 0.0, 0.5])
    se = math.sqrt(a.var(ddof=1) / 3 + g.var(ddof=1) / 3)
    assert res.t_stat["first"] == pytest.approx((a.mean() - g.mean()) / se)
    assert res.t_stat["first"] > 0 and res.t_stat["middle"] < 0
    assert 0 < res.p_value["first"] < 1
    table = table_markdown(table3(res))
    assert "| instruction verbs (n=3) | 66.7% | 0.0% | 66.7% |" in table
    assert "| general verbs (n=3) | 16.7% | 16.7% | 0.0% |" in table
    assert "first layers (0-0)" in table and "t = " in table


def test_verb_analysis_rejects_mismatched_models():
    with pytest.raises(ValueError, match="same architecture"):
        verb_analysis(_explanation({}, layers=3), _explanation({}, layers=4), INSTR, GENERAL)
    with pytest.raises(ValueError, match="non-empty"):
        verb_analysis(_explanation({}), _explanation({}), [], GENERAL)


def test_layer_groups_and_verb_file(tmp_path):
    assert layer_groups(7) == {"first": [0, 1, 2], "middle": [3, 4], "last": [5, 6]}
    assert layer_groups(2)["last"] == []
    instr, general = load_verbs()
    assert instr and general and not set(instr) & set(general)
    with pytest.raises(FileNotFoundError, match="instruction_verbs"):
        load_verbs(tmp_path / "none.json")
