"""The paper's post-processing (quantise, sparsify, density, instruction importance) and its Tables 1 and 2.

Every formula is checked against a separate element-by-element loop; the paper reproduction reads the
released matrices from ``../shared/paper-data`` (or ``$LM_INTERP_PAPER_DATA``) and skips when absent.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from lm_interp_plugin.methods.importance import (
    ImportanceParams,
    importance_density,
    instruction_importance,
    part_shares,
    quantise,
    sparsify,
)
from lm_interp_plugin.methods.stats import welch_t_test

# ---------------------------------------------------------------- independent loop implementations


def ref_quantise(raw, L=10, eps=1e-7):
    M, N = raw.shape
    out = np.zeros((M, N), dtype=int)
    for n in range(N):
        col_max = 0.0
        for m in range(M):
            col_max = max(col_max, max(float(raw[m, n]), 0.0))
        for m in range(M):
            out[m, n] = math.ceil(L * max(float(raw[m, n]), 0.0) / (col_max + eps))
    return out


def ref_density(S, b=7, p=4.0):
    M, N = S.shape
    dens = []
    for m in range(M):
        row = [float(S[m, n]) if S[m, n] > b else 0.0 for n in range(N)]
        l1 = sum(abs(v) for v in row)
        lp = max(row, default=0.0) if math.isinf(p) else sum(abs(v) ** p for v in row) ** (1 / p)
        dens.append(l1 / lp if lp > 0 else 0.0)
    top = max(dens, default=0.0)
    return [d / top if top > 0 else 0.0 for d in dens]


def ref_instruction_importance(S, mask, b=7, p=4.0):
    dens = ref_density(S, b, p)
    n_instr = sum(1 for f in mask if f)
    total = sum(d for d, f in zip(dens, mask) if f)
    return total / math.log2(2 + n_instr)


def random_raw(rng, M, N):
    """Raw attributions with mixed signs, heavy tails, an all-negative column and a zero row."""
    raw = rng.standard_normal((M, N)) * np.exp(rng.normal(0, 2, size=(1, N)))
    if N > 1:
        raw[:, 0] = -np.abs(raw[:, 0])
    if M > 2:
        raw[1, :] = 0.0
    return raw


SHAPES = [(1, 1), (5, 3), (17, 9), (40, 60)]


# ---------------------------------------------------------------- formulas vs loops


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("L", [1, 10, 16])
def test_quantise_matches_loop(shape, L):
    rng = np.random.default_rng(hash((shape, L)) % 2**32)
    raw = random_raw(rng, *shape)
    S = quantise(raw, L=L)
    np.testing.assert_array_equal(S, ref_quantise(raw, L=L))
    assert S.dtype.kind == "i" and S.min() >= 0 and S.max() <= L


def test_quantise_levels_and_zero_column():
    raw = np.array([[2.0, 0.0, -1.0], [1.0, 0.0, -3.0], [1e-9, 0.0, -2.0], [-5.0, 0.0, -0.5]])
    S = quantise(raw)
    np.testing.assert_array_equal(S[:, 0], [10, 5, 1, 0])  # max -> L; tiny positive -> 1; negative -> 0
    assert not S[:, 1:].any(), "all-zero and all-negative columns stay zero (eps avoids 0/0)"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("b,p", [(0, 4.0), (3, 2.0), (7, 4.0), (7, math.inf), (5, 1.5)])
def test_density_and_score_match_loop(shape, b, p):
    rng = np.random.default_rng(hash((shape, b, p)) % 2**32)
    S = quantise(random_raw(rng, *shape))
    dens = importance_density(S, b=b, p=p)
    np.testing.assert_allclose(dens, ref_density(S, b, p), rtol=1e-12, atol=1e-15)
    assert dens.shape == (shape[0],) and dens.min() >= 0 and dens.max() <= 1 + 1e-12
    mask = rng.integers(0, 2, size=shape[0])
    got = instruction_importance(S, mask, b=b, p=p)
    assert isinstance(got, float)
    assert got == pytest.approx(ref_instruction_importance(S, mask, b, p), rel=1e-12, abs=1e-15)


def test_density_known_values():
    # row 0: two entries at 10 -> 20 / 2**(1/4); row 1: one entry at 10 -> 1; row 2: all <= 7 -> 0
    S = np.array([[10, 10, 0], [0, 10, 7], [7, 3, 1]])
    expected = np.array([1.0, 1 / 2 ** (3 / 4), 0.0])
    np.testing.assert_allclose(importance_density(S), expected)
    # instruction = rows 0 and 2 -> (1 + 0) / log2(4)
    assert instruction_importance(S, [1, 0, 1]) == pytest.approx(0.5)
    assert instruction_importance(S, [True, True, False]) == pytest.approx((1 + 2 ** (-3 / 4)) / 2)


def test_sparsify_keeps_strictly_above_b():
    S = np.array([[8, 7, 10], [0, 9, 1]], dtype=np.uint8)
    out = sparsify(S, b=7)
    np.testing.assert_array_equal(out, [[8, 0, 10], [0, 9, 0]])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(S, [[8, 7, 10], [0, 9, 1]])  # the input is not modified
    np.testing.assert_array_equal(sparsify(S, b=0), S)


# ---------------------------------------------------------------- edge cases


def test_empty_target_scores_zero():
    S = np.zeros((6, 0), dtype=np.uint8)
    np.testing.assert_array_equal(importance_density(S), np.zeros(6))
    assert instruction_importance(S, [1, 1, 0, 0, 1, 0]) == 0.0
    assert part_shares(S, ["instruction"] * 3 + ["content"] * 3) == {"instruction": 0.0, "content": 0.0}
    assert quantise(np.zeros((6, 0))).shape == (6, 0)


def test_all_rows_sparsified_away_gives_zeros():
    S = np.full((4, 5), 7)
    np.testing.assert_array_equal(importance_density(S, b=7), np.zeros(4))
    assert instruction_importance(S, [1, 1, 1, 1], b=7) == 0.0
    # with b below the level, every row is uniform -> every density equal -> all 1 after normalisation
    np.testing.assert_allclose(importance_density(S, b=6), np.ones(4))


def test_empty_instruction_scores_zero():
    S = quantise(np.random.default_rng(0).random((5, 4)))
    assert instruction_importance(S, [0] * 5, b=0) == 0.0


def test_part_shares_match_loop_and_sum_to_one():
    rng = np.random.default_rng(3)
    S = quantise(random_raw(rng, 30, 20))
    parts = list(rng.choice(["instruction", "content", "template"], size=30))
    shares = part_shares(S, parts, b=5)
    dens = ref_density(S, b=5)
    total = sum(dens)
    for label in ("instruction", "content", "template"):
        expected = sum(d for d, lab in zip(dens, parts) if lab == label) / total
        assert shares[label] == pytest.approx(expected, rel=1e-12)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert list(shares) == list(dict.fromkeys(parts)), "labels in order of first appearance"


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"L": 0}, r"L .*>= 1"),
        ({"b": 10}, r"b .*0 <= b < L = 10"),
        ({"b": -1}, r"b .*0 <= b < L"),
        ({"p": 1.0}, r"p .*> 1"),
        ({"eps": 0.0}, r"eps .*> 0"),
        ({"L": 2.5}, r"L .*integer"),
    ],
)
def test_params_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImportanceParams(**kwargs)


def test_params_defaults_are_the_papers():
    params = ImportanceParams()
    assert params.to_dict() == {"L": 10, "b": 7, "p": 4.0, "eps": 1e-7}


def test_input_validation_messages():
    with pytest.raises(ValueError, match=r"raw .*non-finite"):
        quantise(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match=r"raw .*inf|raw .*non-finite"):
        quantise(np.array([[np.inf, 1.0]]))
    with pytest.raises(ValueError, match=r"raw must be a 2-D matrix.*\(3,\)"):
        quantise(np.ones(3))
    with pytest.raises(ValueError, match=r"S must be a 2-D"):
        importance_density(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match=r"length 3 but S has prompt_len = 4"):
        instruction_importance(np.ones((4, 2)), [1, 0, 1])
    with pytest.raises(ValueError, match=r"token_parts has length 2 but S has prompt_len = 4"):
        part_shares(np.ones((4, 2)), ["a", "b"])
    with pytest.raises(ValueError, match=r"negative entries.*quantise\(raw\)"):
        instruction_importance(np.array([[-0.5, 1.0]]), [1])
    with pytest.raises(ValueError, match=r"0/1"):
        instruction_importance(np.ones((2, 2)), [2, 0])
    with pytest.raises(ValueError, match=r"p .*> 1"):
        importance_density(np.ones((2, 2)), p=0.5)
    with pytest.raises(ValueError, match=r"b .*>= 0"):
        sparsify(np.ones((2, 2)), b=-1)


# ---------------------------------------------------------------- the paper's Tables 1 and 2

PAPER_TABLE2 = {  # group: (Vicuna mean, LLaMA mean, one-sided Welch p, LLaMA < Vicuna)
    "user": (1.1302, 0.9394, 1.9e-5),
    "lima": (1.5579, 1.2683, 2.5e-14),
    "mtbench": (1.3440, 1.1777, 0.0382),
}
PAPER_TABLE1 = {  # group: (Vicuna followed mean, Vicuna not-followed mean)
    "user": (1.2283, 0.8917),
    "lima": (1.6173, 1.2799),
    "mtbench": (1.4584, 0.9290),
}
MODELS = ("llama_7b", "vicuna_7b")
# "outputs under 5 tokens dropped" means: fewer than 5 LLaMA-SentencePiece output tokens in Vicuna's response
# (= fewer than 5 columns of its matrix). Thresholds 4 and 6 give different Self-Instruct means (1.2166,
# 1.2319), so the convention is pinned down by the data.
MIN_OUTPUT_TOKENS = 5


def _paper_dir() -> Path:
    override = os.environ.get("LM_INTERP_PAPER_DATA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3] / "shared" / "paper-data"


@pytest.fixture(scope="module")
def paper():
    """Every example's metadata and both models' scores (b = 7, p = 4) from the released matrices."""
    root = _paper_dir()
    needed = [root / "examples.jsonl"] + [root / f"attributions_{m}.npz" for m in MODELS]
    if not all(p.is_file() for p in needed):
        pytest.skip(f"paper data not found under {root} (set LM_INTERP_PAPER_DATA)")
    with open(root / "examples.jsonl", encoding="utf-8") as f:
        examples = [json.loads(line) for line in f]
    scores: dict[str, dict[str, float]] = {}
    for model in MODELS:
        with np.load(root / f"attributions_{model}.npz") as npz:
            scores[model] = {
                ex["id"]: instruction_importance(npz[ex["id"]], ex[model]["instruction_mask"], b=7, p=4)
                for ex in examples
            }
    return examples, scores


def _round_sig(x: float, digits: int) -> float:
    return float(f"{x:.{digits - 1}e}")


@pytest.mark.parametrize("group", list(PAPER_TABLE2))
def test_paper_table2_means_and_welch(paper, group):
    examples, scores = paper
    ids = [ex["id"] for ex in examples if ex["group"] == group]
    vicuna = np.array([scores["vicuna_7b"][i] for i in ids])
    llama = np.array([scores["llama_7b"][i] for i in ids])
    exp_v, exp_l, exp_p = PAPER_TABLE2[group]
    assert round(vicuna.mean(), 4) == pytest.approx(exp_v, abs=1e-9)
    assert round(llama.mean(), 4) == pytest.approx(exp_l, abs=1e-9)
    result = welch_t_test(llama, vicuna, alternative="less")
    assert _round_sig(result.p_value, 2) == _round_sig(exp_p, 2)


def test_paper_empty_output_counts_as_zero(paper):
    """The one empty LLaMA response scores 0 and stays in its group's mean (dropping it breaks Table 2)."""
    examples, scores = paper
    root = _paper_dir()
    with np.load(root / "attributions_llama_7b.npz") as npz:
        empty = [ex for ex in examples if npz[ex["id"]].shape[1] == 0]
    assert [ex["id"] for ex in empty] == ["user_oriented_task_93"]
    assert scores["llama_7b"]["user_oriented_task_93"] == 0.0
    kept = [scores["llama_7b"][ex["id"]] for ex in examples if ex["group"] == "user" and ex not in empty]
    assert round(float(np.mean(kept)), 4) != PAPER_TABLE2["user"][1]


def _table1_means(examples, scores, group, min_tokens):
    followed, not_followed = [], []
    for ex in examples:
        if ex["group"] != group or len(ex["vicuna_7b"]["output_tokens"]) < min_tokens:
            continue
        rating = ex["vicuna_rating"]
        if rating >= 2:
            followed.append(scores["vicuna_7b"][ex["id"]])
        elif rating == 1:
            not_followed.append(scores["vicuna_7b"][ex["id"]])
    return float(np.mean(followed)), float(np.mean(not_followed))


@pytest.mark.parametrize("group", list(PAPER_TABLE1))
def test_paper_table1_followed_vs_not(paper, group):
    examples, scores = paper
    followed, not_followed = _table1_means(examples, scores, group, MIN_OUTPUT_TOKENS)
    assert (round(followed, 4), round(not_followed, 4)) == pytest.approx(PAPER_TABLE1[group], abs=1e-9)


def test_paper_table1_token_threshold_is_pinned(paper):
    examples, scores = paper
    for other in (MIN_OUTPUT_TOKENS - 1, MIN_OUTPUT_TOKENS + 1):
        assert _table1_means(examples, scores, "user", other) != pytest.approx(PAPER_TABLE1["user"], abs=5e-5)
