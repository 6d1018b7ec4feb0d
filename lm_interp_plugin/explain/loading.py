"""Loading a model for a global explanation, choosing its layers, and the explained model's identity."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._version import __version__
from ..arch import ArchAdapter, get_adapter

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model_for_explain(
    path_or_hub_id: str | Path,
    dtype: str | torch.dtype = "auto",
    device: str | None = None,
    revision: str | None = None,
):
    """Load a causal LM and its tokenizer (local folder or hub id) in eval mode on `device`.

    Args:
        path_or_hub_id: a folder written by ``save_pretrained`` or a hub id.
        dtype: ``"auto"`` (the checkpoint's dtype on GPU, float32 on CPU), ``"float32"``, ``"bfloat16"``,
            ``"float16"`` or a `torch.dtype`.
        device: ``"cuda"``, ``"cpu"``, ... (default: cuda when available).
        revision: hub revision (branch, tag or commit).

    Returns:
        ``(model, tokenizer)``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(dtype, str):
        if dtype == "auto":
            torch_dtype: Any = "auto" if device != "cpu" else torch.float32
        elif dtype in _DTYPES:
            torch_dtype = _DTYPES[dtype]
        else:
            raise ValueError(f"dtype {dtype!r} is not one of auto, {', '.join(_DTYPES)}")
    else:
        torch_dtype = dtype
    kwargs: dict[str, Any] = {"revision": revision} if revision else {}
    tokenizer = AutoTokenizer.from_pretrained(str(path_or_hub_id), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(path_or_hub_id), dtype=torch_dtype, **kwargs)
    model.to(device)
    model.eval()
    return model, tokenizer


def parse_layers(layers: str | Sequence[int] | None, num_layers: int) -> list[int]:
    """Layer selection: None (all), a list of ints, or a CLI string such as ``"0-3,7"``."""
    if layers is None:
        return list(range(num_layers))
    if isinstance(layers, str):
        out: list[int] = []
        for part in layers.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part:
                    lo, hi = (int(x) for x in part.split("-", 1))
                    out.extend(range(lo, hi + 1))
                else:
                    out.append(int(part))
            except ValueError:
                raise ValueError(f"cannot read layers {layers!r}; write e.g. '0-3,7'") from None
    else:
        out = [int(x) for x in layers]
    bad = [x for x in out if not 0 <= x < num_layers]
    if bad:
        raise ValueError(
            f"layers {bad} are out of range: the model has {num_layers} layers (0..{num_layers - 1})"
        )
    return sorted(set(out))


def model_fingerprint(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, adapter: ArchAdapter | None = None
) -> dict[str, Any]:
    """Identity of the explained model: id, type, dtype, size, tokenizer, and a hash of sampled weights."""
    adapter = adapter or get_adapter(model)
    h = hashlib.sha256()
    emb = adapter.input_embedding_matrix()
    h.update(emb[:256].float().cpu().numpy().tobytes())
    for layer in sorted({0, adapter.num_layers - 1}):
        for w in adapter.qk_weights(layer):
            h.update(w.float().cpu().numpy().tobytes())
    first = next(model.parameters())
    return {
        "model": getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None),
        "model_type": getattr(model.config, "model_type", None),
        "dtype": str(first.dtype).replace("torch.", ""),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "tokenizer": getattr(tokenizer, "name_or_path", None),
        "weight_hash": h.hexdigest()[:16],
        "plugin_version": __version__,
    }
