"""Checks `interp-hf` makes once, before lm-eval's long passes: where records go, and whether the model is a
finite, causal decoder (`preflight` checks the command line, before lm-eval starts).

Why: each of these otherwise fails late or not at all. An unwritable ``records_dir`` failed only after the
whole loglikelihood pass, naming no argument; NaN weights gave an FFN error on a float32 model, or a JSON
error while writing a record; a BERT folder ran to exit 0 with numbers that mean nothing (its attention sees
the answer from the prompt, so there is no "attribution of the answer onto the prompt").
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from .preflight import PreflightError

logger = logging.getLogger(__name__)

#: Up to this many non-finite tensors are named in the error (then a count).
NAMED = 5


def check_records_dir(path: Path) -> None:
    """Create `path` and write a probe file in it, or raise naming ``records_dir``.

    Raises:
        PreflightError: the folder cannot be created or written.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".lm-interp-write-check-"):
            pass
    except OSError as err:
        raise PreflightError(
            f"records_dir={path} cannot be written ({err.strerror or err}); pass a writable folder with "
            "--model_args ...,records_dir=DIR (or --output_path under lm-interp run)"
        ) from err


def nonfinite_parameters(model: Any) -> list[tuple[str, int]]:
    """``(name, count)`` of every parameter or buffer holding NaN or inf, in module order."""
    import torch

    out: list[tuple[str, int]] = []
    tensors = [*model.named_parameters(), *model.named_buffers()]
    with torch.no_grad():
        for name, tensor in tensors:
            if not tensor.is_floating_point():
                continue
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                out.append((name, bad))
    return out


def check_model(model: Any, tokenizer: Any, name: str) -> None:
    """Refuse a model whose weights or outputs are not finite, that is not causal, or whose family lm-interp
    cannot attribute (`arch.NOT_ATTRIBUTABLE`).

    The output checks run one forward of a short probe sentence and one with its last token changed: the
    logits must be finite, and those before the change must not move (a causal decoder cannot see later
    tokens; an encoder such as BERT does).

    Raises:
        PreflightError: naming the model, what is wrong (the tensors, up to `NAMED`) and the fix.
    """
    import torch

    from ..arch import UnsupportedArchitectureError, check_attributable

    try:  # before any forward: a draft model (Gemma 4 assistant) cannot even score the probe sentence
        check_attributable(model)
    except UnsupportedArchitectureError as err:
        raise PreflightError(f"{name}: {err}; interp-hf cannot interpret this model") from err
    bad = nonfinite_parameters(model)
    if bad:
        named = ", ".join(f"{n} ({c} values)" for n, c in bad[:NAMED])
        more = f" and {len(bad) - NAMED} more" if len(bad) > NAMED else ""
        raise PreflightError(
            f"{name}: {len(bad)} weight tensor(s) hold NaN or inf: {named}{more}; every score of this model "
            "would be undefined: check the checkpoint (a broken conversion or training run?)"
        )
    ids = tokenizer("The cat sat on the mat and looked at the door", add_special_tokens=False)["input_ids"]
    ids = list(ids)[:12]
    if len(ids) < 3:
        return
    device = next(model.parameters()).device
    changed = [*ids[:-1], (ids[-1] + 1) % max(int(getattr(model.config, "vocab_size", 0) or 0), ids[-1] + 2)]
    with torch.no_grad():
        batch = torch.tensor([ids, changed], device=device)
        logits = model(input_ids=batch).logits.float()
    if not bool(torch.isfinite(logits).all()):
        raise PreflightError(
            f"{name}: the model's outputs are NaN or inf on a short probe sentence (its weights are finite); "
            "in float16 this is an overflow: load it with dtype=float32 or bfloat16"
        )
    before = logits[:, : len(ids) - 1]
    scale = float(before.abs().max()) or 1.0
    if float((before[0] - before[1]).abs().max()) > 1e-3 * scale:
        raise PreflightError(
            f"{name} ({type(model).__name__}) is not a causal decoder: its outputs at a token change when "
            "a later token changes (an encoder such as BERT). interp-hf attributes the answer of a causal "
            "language model onto its prompt; use a decoder-only model"
        )
