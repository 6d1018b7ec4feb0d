"""Instruction ablation checked against plain unbatched forwards on hand-edited sequences."""

from __future__ import annotations

import pytest
import torch

from lm_interp_plugin.methods.ablation import AblationResult, instruction_ablation, target_logprobs

from tolerances import LOGPROB_ATOL

pytestmark = pytest.mark.float_sensitive  # float comparisons across kernels and orders


@pytest.fixture(scope="module")
def llama(tok, tiny_model):
    return tiny_model("llama", tokenizer=tok, seed=1)


def _plain_logprobs(model, prompt: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Independent reference: one unpadded forward with input_ids, no attention mask."""
    ids = torch.cat([prompt, target])[None]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    m = prompt.numel()
    logp = torch.log_softmax(logits, -1)
    return torch.stack([logp[m - 1 + n, t] for n, t in enumerate(target.tolist())]).float()


def _request(tok, text: str, answer: str, instruction: str):
    prompt = tok(text, return_tensors="pt").input_ids[0]
    target = tok(answer, add_special_tokens=False, return_tensors="pt").input_ids[0]
    # instruction mask from character offsets, as spans.py does
    enc = tok(text, return_offsets_mapping=True)
    start = text.index(instruction)
    end = start + len(instruction)
    mask = torch.tensor([s < end and e > start and e > s for s, e in enc["offset_mapping"]])
    return prompt, target, mask


def test_ablation_matches_unbatched_edits(tok, llama):
    text = "Translate the sentence in French.\n\nInput: the cat sat on the mat.\n\nOutput:"
    prompt, target, mask = _request(tok, text, " tam eht no tas", "Translate the sentence in French.")
    assert 0 < int(mask.sum()) < prompt.numel() and not bool(mask[0])
    res = instruction_ablation(llama, prompt, target, mask, neutral_token_id=tok.pad_token_id, batch_size=2)
    assert isinstance(res, AblationResult)

    removed = torch.tensor([t for t, m in zip(prompt.tolist(), mask.tolist()) if not m])
    replaced = torch.tensor([tok.pad_token_id if m else t for t, m in zip(prompt.tolist(), mask.tolist())])
    ref_orig = _plain_logprobs(llama, prompt, target)
    ref_rem = _plain_logprobs(llama, removed, target)
    ref_rep = _plain_logprobs(llama, replaced, target)

    torch.testing.assert_close(res.token_logprobs_original, ref_orig, atol=LOGPROB_ATOL, rtol=0)
    torch.testing.assert_close(res.token_logprobs_removed, ref_rem, atol=LOGPROB_ATOL, rtol=0)
    torch.testing.assert_close(res.token_logprobs_replaced, ref_rep, atol=LOGPROB_ATOL, rtol=0)
    sum_atol = LOGPROB_ATOL * target.numel()  # a sum of per-token log-probs; a drop is a difference of two
    assert res.logprob_original == pytest.approx(float(ref_orig.sum()), abs=sum_atol)
    assert res.drop_removed == pytest.approx(float(ref_orig.sum() - ref_rem.sum()), abs=2 * sum_atol)
    assert res.drop_replaced == pytest.approx(float(ref_orig.sum() - ref_rep.sum()), abs=2 * sum_atol)
    torch.testing.assert_close(res.token_drops_removed, ref_orig - ref_rem, atol=2 * LOGPROB_ATOL, rtol=0)
    assert res.instruction_len == int(mask.sum())
    # a random model still reacts to the edit: the three scores are not all the same
    assert abs(res.drop_removed) > 1e-3 and abs(res.drop_replaced) > 1e-3

    d = res.to_dict()
    assert (
        isinstance(d["token_logprobs_removed"], list) and len(d["token_logprobs_removed"]) == target.numel()
    )
    assert d["neutral_token_id"] == tok.pad_token_id


def test_default_neutral_is_config_pad(tok, llama):
    prompt, target, mask = _request(
        tok, "Answer the question.\n\nInput: five", " seven", "Answer the question."
    )
    res = instruction_ablation(llama, prompt, target, mask)
    assert res.neutral_token_id == llama.config.pad_token_id == tok.pad_token_id


def test_batch_of_requests_equals_single_runs(tok, llama):
    """Requests of different lengths share padded batches; padding must not change any log-prob."""
    reqs = [
        _request(
            tok, "Summarize the story concisely.\n\nInput: a dog", " god a", "Summarize the story concisely."
        ),
        _request(
            tok,
            "List the code.\n\nInput: the green apple is fast and the blue river is slow",
            " wols",
            "List",
        ),
        _request(tok, "Explain the poem for a child.\n\nInput: seven", " neves si", "for a child"),
    ]
    lengths = {p.numel() + t.numel() for p, t, _ in reqs}
    assert len(lengths) == 3  # genuinely different lengths, so padding happens
    batched = instruction_ablation(
        llama, [r[0] for r in reqs], [r[1] for r in reqs], [r[2] for r in reqs], batch_size=4
    )
    assert isinstance(batched, list) and len(batched) == 3
    for (p, t, m), res in zip(reqs, batched):
        single = instruction_ablation(llama, p, t, m, batch_size=1)
        torch.testing.assert_close(
            res.token_logprobs_original, single.token_logprobs_original, atol=LOGPROB_ATOL, rtol=0
        )
        torch.testing.assert_close(
            res.token_logprobs_removed, single.token_logprobs_removed, atol=LOGPROB_ATOL, rtol=0
        )
        torch.testing.assert_close(
            res.token_logprobs_replaced, single.token_logprobs_replaced, atol=LOGPROB_ATOL, rtol=0
        )
        torch.testing.assert_close(
            res.token_logprobs_original, _plain_logprobs(llama, p, t), atol=LOGPROB_ATOL, rtol=0
        )


def test_target_logprobs_padding_invariance_gemma(tok, tiny_model):
    """Right padding keeps positions for a second family too (gemma scales embeddings inside the model)."""
    gemma = tiny_model("gemma", tokenizer=tok, seed=2)
    short = (tok("a cat", return_tensors="pt").input_ids[0], torch.tensor([10, 11]))
    long = (
        tok("the river city number five seven apple", return_tensors="pt").input_ids[0],
        torch.tensor([12]),
    )
    together = target_logprobs(gemma, [short, long], batch_size=2)
    for req, got in zip([short, long], together):
        torch.testing.assert_close(got, _plain_logprobs(gemma, *req), atol=LOGPROB_ATOL, rtol=0)


def test_bad_inputs_raise_clear_errors(tok, llama):
    prompt, target, mask = _request(
        tok, "Answer the question.\n\nInput: five", " seven", "Answer the question."
    )
    with pytest.raises(ValueError, match="selects no prompt token"):
        instruction_ablation(llama, prompt, target, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="covers the whole prompt"):
        instruction_ablation(llama, prompt, target, torch.ones_like(mask))
    with pytest.raises(ValueError, match="one entry per prompt token"):
        instruction_ablation(llama, prompt, target, mask[:-1])
    with pytest.raises(ValueError, match="target_ids is empty"):
        instruction_ablation(llama, prompt, target[:0], mask)
    with pytest.raises(ValueError, match="neutral_token_id must be a token id"):
        instruction_ablation(llama, prompt, target, mask, neutral_token_id=10**6)
    with pytest.raises(ValueError, match="batch_size"):
        instruction_ablation(llama, prompt, target, mask, batch_size=0)
    with pytest.raises(ValueError, match="equal length"):
        instruction_ablation(llama, [prompt, prompt], [target], [mask, mask])
