"""One identity for a model and its tokenizer, used by the records of a run and by the global explanations.

A record may be reused, and two explanations may be compared, only when they come from the same computation.
The name of a model says little (a folder gets new weights, a hub branch moves), so the identity hashes what
the model computes with: every parameter (its float64 sum and absolute sum, which see a change anywhere, and a
strided sample, which sees changes the sums could cancel), the config that shapes the forward pass, and the
tokenizer's full definition (vocabulary, merges, normalisation, special tokens). Reading every weight once
costs about what one forward pass does; it happens once per run.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from ._version import __version__

FINGERPRINT_VERSION = 1
_SAMPLES_PER_TENSOR = 4096
# config entries that name or place the model rather than define what it computes
_CONFIG_IGNORED = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash")
# fingerprint fields that describe a model's identity but not the computation (left out of `identity_hash`)
NOT_IDENTITY = ("plugin_version",)


def _digest(h: Any) -> str:
    return h.hexdigest()[:16]


@torch.no_grad()
def weights_hash(model: torch.nn.Module) -> str:
    """Hash of every parameter: name, shape, dtype, float64 sum and absolute sum, and a strided sample.

    Parameters on the ``meta`` device (offloaded by accelerate) contribute their name and shape only.
    """
    h = hashlib.sha256()
    for name, param in model.named_parameters():
        h.update(f"{name}|{tuple(param.shape)}|{param.dtype}|".encode())
        if param.device.type == "meta" or param.numel() == 0:
            continue
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
        sample = flat[::step][:_SAMPLES_PER_TENSOR]
        h.update(sample.float().cpu().contiguous().numpy().tobytes())
        sums = torch.stack([torch.sum(flat, dtype=torch.float64), torch.sum(flat.abs(), dtype=torch.float64)])
        h.update(sums.cpu().numpy().tobytes())
    return _digest(h)


def config_hash(model: torch.nn.Module) -> str | None:
    """Hash of the model config, without the entries that only name or place it."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return None
    data = {
        k: v
        for k, v in config.to_dict().items()
        if k not in _CONFIG_IGNORED and not k.startswith("_attn_implementation")
    }
    return _digest(hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()))


def tokenizer_hash(tokenizer: Any) -> str | None:
    """Hash of the tokenizer's definition: its class, its full backend (vocabulary, merges, normaliser,
    pre-tokeniser, post-processor) or else its vocabulary, and its special tokens."""
    if tokenizer is None:
        return None
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        h.update(backend.to_str().encode())
    elif hasattr(tokenizer, "get_vocab"):
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    special = getattr(tokenizer, "special_tokens_map", {}) or {}
    h.update(json.dumps(special, sort_keys=True, default=str).encode())
    for attr in ("add_bos_token", "add_eos_token"):
        h.update(f"{attr}={getattr(tokenizer, attr, None)}".encode())
    return _digest(h)


def model_fingerprint(
    model: torch.nn.Module, tokenizer: Any = None, revision: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """The identity of a model and tokenizer, as plain JSON data.

    Args:
        model: the model (any device; offloaded parameters count by name and shape).
        tokenizer: its tokenizer (None: no tokenizer fields).
        revision: the hub revision it was loaded from, when known.
        name: what the user called it (path or hub id); default: the model's ``name_or_path``.

    Returns:
        ``model, revision, commit (the resolved hub commit, if any), model_type, dtype, n_parameters,
        tokenizer_name, tokenizer_hash, weight_hash, config_hash, fingerprint_version, plugin_version``.
    """
    config = getattr(model, "config", None)
    first = next(model.parameters(), None)
    return {
        "model": name
        or getattr(model, "name_or_path", None)
        or getattr(config, "_name_or_path", None)
        or type(model).__name__,
        "revision": revision,
        "commit": getattr(config, "_commit_hash", None),
        "model_type": getattr(config, "model_type", None),
        "dtype": str(first.dtype).replace("torch.", "") if first is not None else None,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "tokenizer_name": getattr(tokenizer, "name_or_path", None) if tokenizer is not None else None,
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "weight_hash": weights_hash(model),
        "config_hash": config_hash(model),
        "fingerprint_version": FINGERPRINT_VERSION,
        "plugin_version": __version__,
    }


def identity_hash(
    fingerprint: dict[str, Any], ignore: tuple[str, ...] = ("model", "revision", "tokenizer_name")
) -> str:
    """One hash of what a fingerprint says about the computation.

    The names of the model and tokenizer and the revision asked for are left out by default: the same weights
    under a new path compute the same numbers, and new weights under the same path are caught by
    ``weight_hash`` (and a new tokenizer by ``tokenizer_hash``).
    """
    data = {k: v for k, v in fingerprint.items() if k not in ignore and k not in NOT_IDENTITY}
    return _digest(hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()))


def differing_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The fingerprint fields whose values differ between `a` and `b` (absent counts as a value)."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
