"""One model identity for records and explanations: it changes with the weights, the config and the tokenizer,
not with the name."""

from __future__ import annotations

import torch

from lm_interp_plugin.fingerprint import differing_fields, identity_hash, model_fingerprint


def test_identity_follows_the_weights_not_the_name(lm_tokenizer, tiny_model):
    a = tiny_model("llama", seed=0)
    same = tiny_model("llama", seed=0)
    fa = model_fingerprint(a, lm_tokenizer, name="runs/a")
    fsame = model_fingerprint(same, lm_tokenizer, name="elsewhere/a-copy")
    assert fa["weight_hash"] == fsame["weight_hash"] and identity_hash(fa) == identity_hash(fsame)
    with torch.no_grad():  # one weight, deep inside a matrix the strided sample skips
        weight = next(p for n, p in same.named_parameters() if "down_proj" in n)
        weight.view(-1)[7] += 1e-3
    changed = model_fingerprint(same, lm_tokenizer, name="runs/a")
    assert differing_fields(fa, changed) == ["weight_hash"]
    assert identity_hash(fa) != identity_hash(changed)


def test_identity_follows_the_tokenizer_and_config(lm_tokenizer, tiny_model):
    from lm_interp_plugin.testing.tiny import task_corpus, train_tokenizer

    model = tiny_model("llama", seed=0)
    other = train_tokenizer(task_corpus()[:50], vocab_size=800)
    base = model_fingerprint(model, lm_tokenizer)
    assert "tokenizer_hash" in differing_fields(base, model_fingerprint(model, other))
    model.config.rope_theta = 1234.0
    assert "config_hash" in differing_fields(base, model_fingerprint(model, lm_tokenizer))


def test_explain_and_records_share_the_fingerprint():
    from lm_interp_plugin.explain import loading
    from lm_interp_plugin.fingerprint import model_fingerprint as shared

    assert loading.model_fingerprint is shared
