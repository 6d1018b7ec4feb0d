"""Deletion curves: exact against hand-edited forwards, and a model whose answer hangs on ONE prompt token."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lm_interp_plugin.methods.faithfulness import curve_area, deletion_curve
from lm_interp_plugin.methods.integrated_gradients import integrated_gradients

from tolerances import LOGPROB_ATOL

KEY, ANSWER, VOCAB, HIDDEN = 5, 3, 16, 4


class KeyTokenLM(nn.Module):
    """A causal "LM" whose logit for ANSWER at position t is 4 * (number of KEY tokens up to t) - 2.

    Only hidden dimension 0 matters, and only the KEY token's embedding is non-zero there, so the answer
    depends on that one prompt token and on nothing else. Follows the HF interface the methods use.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        with torch.no_grad():
            self.embed.weight[:, 0] = 0.0
            self.embed.weight[KEY, 0] = 1.0
        self.config = SimpleNamespace(bos_token_id=0, pad_token_id=2)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, **_):
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        signal = x[..., 0] if attention_mask is None else x[..., 0] * attention_mask.to(x.dtype)
        count = signal.cumsum(dim=1)  # causal: position t sees tokens 0..t
        logits = torch.zeros(*x.shape[:2], VOCAB, dtype=x.dtype) + (4 * count - 2)[
            ..., None
        ] * torch.nn.functional.one_hot(torch.tensor(ANSWER), VOCAB).to(x.dtype)
        return SimpleNamespace(logits=logits)


PROMPT = torch.tensor([0, 7, 8, 9, 10, KEY, 11, 12, 13, 14])  # BOS first, KEY at position 5
TARGET = torch.tensor([ANSWER, ANSWER])


def test_ig_finds_the_one_token_and_its_deletion_curve_beats_random():
    model = KeyTokenLM()
    ig = integrated_gradients(model, PROMPT, TARGET, steps=16)
    row = ig.prompt_scores()
    assert int(row.argmax()) == 5
    assert bool((row[torch.arange(10) != 5].abs() < 1e-9).all())
    assert ig.completeness_rel_error_total < 1e-4  # f is smooth along this path (float32 round-off)

    curve = deletion_curve(model, PROMPT, TARGET, row, fraction_steps=9, n_random=16)
    assert curve.protected == [0] and 0 not in curve.order.tolist()
    assert int(curve.order[0]) == 5
    # the first deletion step removes KEY: the log-prob falls at once and stays down
    assert float(curve.logprobs[1]) < float(curve.logprobs[0]) - 3
    assert torch.allclose(curve.logprobs[1:], curve.logprobs[1].expand(curve.logprobs.numel() - 1))
    assert curve.beats_random and curve.area_gain > 0
    assert curve.area < curve.random_area - curve.random_area_std  # well below the random mean


def test_correct_scores_beat_random_and_wrong_scores_do_not():
    model = KeyTokenLM()
    right = torch.zeros(10)
    right[5] = 1.0
    good = deletion_curve(model, PROMPT, TARGET, right, replace_with=2, n_random=8, seed=1)
    bad = deletion_curve(model, PROMPT, TARGET, -right, replace_with=2, n_random=8, seed=1)
    assert good.beats_random and not bad.beats_random
    assert good.random_area == pytest.approx(bad.random_area)  # same seed, same random orders
    assert int(bad.order[-1]) == 5
    assert good.area < bad.area


def _plain_total(model, prompt, target) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.cat([prompt, target])[None]).logits[0].double()
    m = prompt.numel()
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[m - 1 + n, t] for n, t in enumerate(target.tolist())))


@pytest.mark.float_sensitive
@pytest.mark.parametrize("replace_with", ["remove", 2])
def test_curve_matches_hand_edited_forwards(tok, replace_with, tiny_model):
    model = tiny_model("llama", tokenizer=tok, seed=4)
    prompt = tok("Rewrite the code step by step.\n\nInput: blue", return_tensors="pt").input_ids[0]
    target = tok(" eulb", add_special_tokens=False, return_tensors="pt").input_ids[0]
    scores = torch.randn(prompt.numel(), generator=torch.Generator().manual_seed(0))
    curve = deletion_curve(
        model,
        prompt,
        target,
        scores,
        fraction_steps=[0.25, 0.5, 1.0],
        replace_with=replace_with,
        n_random=2,
        batch_size=3,
    )
    deletable = prompt.numel() - 1  # BOS protected
    assert curve.counts.tolist() == [0, round(0.25 * deletable), round(0.5 * deletable), deletable]
    expected_order = [i for i in sorted(range(1, prompt.numel()), key=lambda i: -float(scores[i]))]
    assert curve.order.tolist() == expected_order
    for k, count in enumerate(curve.counts.tolist()):
        gone = set(expected_order[:count])
        if replace_with == "remove":
            edited = torch.tensor([t for i, t in enumerate(prompt.tolist()) if i not in gone])
        else:
            edited = torch.tensor([2 if i in gone else t for i, t in enumerate(prompt.tolist())])
        assert float(curve.logprobs[k]) == pytest.approx(
            _plain_total(model, edited, target), abs=LOGPROB_ATOL * target.numel()
        )  # a padded batch against a plain forward: a sum of per-token log-probs
    # the area is the trapezoid of the drop over the deleted fraction
    frac = curve.counts.double() / deletable
    drop = (curve.logprobs - curve.logprobs[0]).tolist()
    by_hand = sum((frac[i + 1] - frac[i]) * (drop[i] + drop[i + 1]) / 2 for i in range(len(drop) - 1))
    assert curve.area == pytest.approx(float(by_hand), abs=1e-9)
    assert curve.random_logprobs.shape == (2, 4)
    assert curve.random_area == pytest.approx(float(curve_area(frac, curve.random_logprobs).mean()))
    json.dumps(curve.to_dict(), allow_nan=False)


def test_no_random_baseline_and_no_protection():
    model = KeyTokenLM()
    curve = deletion_curve(
        model, PROMPT, TARGET, torch.arange(10.0), protect_mask=torch.zeros(10, dtype=torch.bool), n_random=0
    )
    assert curve.random_area is None and curve.beats_random is None and curve.protected == []
    assert int(curve.counts[-1]) == 9  # one token kept so the prompt stays scorable
    json.dumps(curve.to_dict(), allow_nan=False)


def test_bad_inputs():
    model = KeyTokenLM()
    with pytest.raises(ValueError, match="one value per prompt token"):
        deletion_curve(model, PROMPT, TARGET, torch.zeros(10, 2))
    with pytest.raises(ValueError, match="NaN"):
        deletion_curve(model, PROMPT, TARGET, torch.full((10,), float("nan")))
    with pytest.raises(ValueError, match="replace_with"):
        deletion_curve(model, PROMPT, TARGET, torch.zeros(10), replace_with="mask")
    with pytest.raises(ValueError, match="fraction_steps"):
        deletion_curve(model, PROMPT, TARGET, torch.zeros(10), fraction_steps=[1.5])
    with pytest.raises(ValueError, match="protects every prompt token"):
        deletion_curve(model, PROMPT, TARGET, torch.zeros(10), protect_mask=torch.ones(10, dtype=torch.bool))
