"""Loading a model for a global explanation, choosing its layers, and the explained model's identity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..arch import NOT_DECODER_ONLY, UnsupportedArchitectureError
from ..fingerprint import model_fingerprint

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["load_model_for_explain", "model_fingerprint", "model_source", "parse_layers"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def model_source(path_or_hub_id: str | Path, gguf_file: str | None = None) -> tuple[str, dict[str, Any]]:
    """Where transformers loads a model from: ``(folder or hub id, {"gguf_file": name} or {})``.

    A path to a ``.gguf`` file is split into its folder and file name (``explain-heads model.gguf`` works as
    ``explain-heads . --gguf_file model.gguf`` does).
    """
    path = Path(str(path_or_hub_id))
    if gguf_file is None and path.suffix == ".gguf" and path.is_file():
        return str(path.parent), {"gguf_file": path.name}
    return str(path_or_hub_id), ({"gguf_file": gguf_file} if gguf_file else {})


def load_model_for_explain(
    path_or_hub_id: str | Path,
    dtype: str | torch.dtype = "auto",
    device: str | None = None,
    revision: str | None = None,
    gguf_file: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer (local folder, hub id or GGUF file) in eval mode on `device`.

    Args:
        path_or_hub_id: a folder written by ``save_pretrained``, a hub id, or a ``.gguf`` file.
        dtype: ``"auto"`` (the checkpoint's dtype on GPU, float32 on CPU), ``"float32"``, ``"bfloat16"``,
            ``"float16"`` or a `torch.dtype`.
        device: ``"cuda"``, ``"cpu"``, ... (default: cuda when available).
        revision: hub revision (branch, tag or commit).
        gguf_file: a GGUF file inside `path_or_hub_id` (transformers dequantises it to float; needs the
            ``gguf`` package). The model's name (and so its fingerprint) is then the file's path.

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
    source, gguf = model_source(path_or_hub_id, gguf_file)
    kwargs: dict[str, Any] = {"revision": revision} if revision else {}
    kwargs.update(gguf)
    check_explainable(source, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    if gguf:  # the fingerprint's name: the file, not the folder it sits in
        model.name_or_path = str(Path(source) / gguf["gguf_file"])
    model.to(device)
    model.eval()
    return model, tokenizer


def check_explainable(path_or_hub_id: str | Path, **kwargs: Any) -> None:
    """Refuse, from the config alone (before any weight is read), a model that is not a causal LM (BERT,
    T5, ...): one clear message instead of a traceback after loading. The layout itself is found after
    loading (`arch.detect`), which names the modules it saw when it cannot.

    Raises:
        UnsupportedArchitectureError: naming the model, its model_type and the supported families.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = AutoConfig.from_pretrained(str(path_or_hub_id), **kwargs)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    model_type = getattr(text, "model_type", None) or getattr(config, "model_type", None)
    causal = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or model_type in (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    )
    if not causal or config.model_type in NOT_DECODER_ONLY or model_type in NOT_DECODER_ONLY:
        raise UnsupportedArchitectureError(
            f"{path_or_hub_id} is a {config.model_type!r} model, not a causal (decoder-only) language model; "
            "lm-interp explains causal LMs"
        )


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
