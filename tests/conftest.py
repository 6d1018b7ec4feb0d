"""Shared fixtures: a tokenizer trained locally and tiny models saved as ordinary HF folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Under pytest-xdist (`-n auto`), share the cores between the workers instead of oversubscribing them:
    each worker's torch gets cores / workers threads (at least 1)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


@pytest.fixture(autouse=True)
def _seed_every_test():
    """Every test starts from the same global RNG state, whatever ran before it (order-independent inputs)."""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def lm_tokenizer():
    """A byte-level BPE tokenizer with BOS, trained on the shipped task text (vocab 800)."""
    from lm_interp_plugin.testing.tiny import task_corpus, train_tokenizer

    return train_tokenizer(task_corpus(), vocab_size=800)


@pytest.fixture(scope="session")
def _small_tokenizers():
    """Tokenizers trained on the sample corpus, one per vocabulary size, each trained once per session."""
    from lm_interp_plugin.testing.tiny import sample_corpus, train_tokenizer

    made: dict[int, object] = {}

    def get(vocab_size: int):
        if vocab_size not in made:
            made[vocab_size] = train_tokenizer(sample_corpus(), vocab_size=vocab_size)
        return made[vocab_size]

    return get


@pytest.fixture(scope="module")
def tok(request, _small_tokenizers):
    """A small tokenizer (sample corpus, vocabulary ``TOKENIZER_VOCAB`` of the test module, else 300) for
    models with few embedding rows; shared by every module that asks for the same size, so a test must not
    change it."""
    return _small_tokenizers(getattr(request.module, "TOKENIZER_VOCAB", 300))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, lm_tokenizer, tiny_model) -> Path:
    """A tiny random Llama saved with save_pretrained: loads through from_pretrained like a hub model."""
    from lm_interp_plugin.testing.tiny import save_tiny

    return save_tiny(
        tiny_model("llama", seed=0), lm_tokenizer, tmp_path_factory.mktemp("models") / "tiny-llama"
    )


@pytest.fixture(scope="session")
def tiny_model(lm_tokenizer):
    """A factory of tiny random models on the shared tokenizer: ``tiny_model("llama", seed=1)`` (any family
    of `lm_interp_plugin.testing.tiny`), built fresh on each call, so a test may change it. A test that needs
    another tokenizer (a smaller vocabulary) passes ``tokenizer=``; config keywords (``layers=1``) pass on."""
    from lm_interp_plugin.testing.tiny import build_tiny_model

    def build(family: str = "llama", seed: int = 0, tokenizer=None, **kwargs):
        return build_tiny_model(family, lm_tokenizer if tokenizer is None else tokenizer, seed=seed, **kwargs)

    return build
