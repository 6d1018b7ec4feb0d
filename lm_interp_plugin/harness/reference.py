"""The reference model of a base-vs-tuned run: ``interp_reference=PATH`` on interp-hf.

The reference (the base model when the tuned one is evaluated, or the other way round) is loaded once, beside
the evaluated model, on the same device and in the same dtype, in eval mode with frozen weights: each
interpreted request costs it one teacher-forced forward without gradients (`methods.shift.target_logits`).
PATH is a hub id or a folder, as ``pretrained`` is; ``interp_reference_gguf_file`` names a GGUF file in it, as
``gguf_file`` does for the evaluated model.

The two models must share a tokenizer: the shift is read token by token at the same ids, so another vocabulary
would compare unrelated tokens. `check_same_vocab` compares the two vocabularies (token -> id) and fails with
the first differences, once, at load time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


class ReferenceModelError(ValueError):
    """The model cannot serve as this run's reference (another tokenizer, or it fails to load)."""


def vocab_differences(evaluated: dict[str, int], reference: dict[str, int], limit: int = 5) -> list[str]:
    """The first `limit` differences of two vocabularies (token -> id), as readable lines; [] when equal."""
    lines: list[str] = []
    if len(evaluated) != len(reference):
        lines.append(
            f"{len(evaluated)} tokens in the evaluated model's vocabulary, "
            f"{len(reference)} in the reference's"
        )
    for token, index in sorted(evaluated.items(), key=lambda item: item[1]):
        other = reference.get(token)
        if other != index:
            where = "missing" if other is None else f"id {other}"
            lines.append(f"token {token!r}: id {index} in the evaluated model, {where} in the reference")
        if len(lines) >= limit:
            break
    if not lines:
        extra = sorted(set(reference) - set(evaluated))[:limit]
        lines += [f"token {token!r} only in the reference" for token in extra]
    return lines[:limit]


def check_same_vocab(evaluated_tokenizer: Any, reference_tokenizer: Any, reference_name: str) -> None:
    """Raise `ReferenceModelError` naming the first differing tokens when the vocabularies differ."""
    diffs = vocab_differences(evaluated_tokenizer.get_vocab(), reference_tokenizer.get_vocab())
    if diffs:
        raise ReferenceModelError(
            f"interp_reference={reference_name}: its tokenizer differs from the evaluated model's ("
            + "; ".join(diffs)
            + "). The reference shift compares the two models token by token, so both need the same "
            "tokenizer: pass the base (or tuned) model of the same family, or leave interp_reference out."
        )


#: the signal `interp_reference` turns on (`interpret.signals.reference_shift`)
REFERENCE_SIGNAL = "reference_shift"


def with_reference_signal(interp_kwargs: dict[str, Any]) -> dict[str, Any]:
    """interp-hf's ``interp_*`` arguments with the reference shift signal added when a reference is given;
    a reference shift asked for without a reference is an error that says what to add."""
    reference = str(interp_kwargs.get("interp_reference") or "").strip()
    signals = [s for s in str(interp_kwargs.get("interp_signals") or "").replace(",", "+").split("+") if s]
    has_reference = reference.lower() not in ("", "none")
    if has_reference and REFERENCE_SIGNAL not in signals:
        return {**interp_kwargs, "interp_signals": "+".join([*signals, REFERENCE_SIGNAL])}
    if not has_reference and REFERENCE_SIGNAL in signals:
        raise ReferenceModelError(
            f"interp_signals={interp_kwargs['interp_signals']} asks for {REFERENCE_SIGNAL}, which compares "
            "the model with a reference: add interp_reference=PATH (a hub id or folder of the base or tuned "
            "model)"
        )
    return interp_kwargs


@dataclass
class Reference:
    """A loaded reference model and what identifies it in the records."""

    model: Any
    name: str
    fingerprint: dict[str, Any]


def load_reference(
    path: str,
    evaluated_model: Any,
    evaluated_tokenizer: Any,
    gguf_file: str | None = None,
    revision: str = "main",
    trust_remote_code: bool = False,
) -> Reference:
    """Load the reference from a hub id or folder (or a GGUF file in it) on the evaluated model's device
    and dtype, check that it shares the evaluated model's tokenizer, and fingerprint it (its identity goes
    into the run hash, so records computed against another reference are recomputed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..fingerprint import model_fingerprint

    extra: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if gguf_file:
        extra["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **extra)
    except (OSError, ValueError) as err:
        raise ReferenceModelError(
            f"interp_reference={path}: its tokenizer could not be loaded ({err}); give a hub id or a folder "
            "with a tokenizer (and interp_reference_gguf_file=FILE for a GGUF checkpoint)"
        ) from err
    check_same_vocab(evaluated_tokenizer, tokenizer, path)
    param = next(evaluated_model.parameters())
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=param.dtype, **extra)
    except (OSError, ValueError) as err:
        raise ReferenceModelError(f"interp_reference={path}: the model could not be loaded ({err})") from err
    rows = [m.get_output_embeddings().weight.shape[0] for m in (evaluated_model, model)]
    if rows[0] != rows[1]:
        raise ReferenceModelError(
            f"interp_reference={path}: its output layer scores {rows[1]} tokens, the evaluated model's "
            f"{rows[0]}; the shift compares the two distributions token by token, so both need the same "
            "vocabulary size (a tuned model with added tokens needs a base resized to match)"
        )
    model.to(param.device)
    model.eval()
    for weight in model.parameters():
        weight.requires_grad_(False)
    with torch.no_grad():
        fingerprint = model_fingerprint(model, tokenizer, revision=revision, name=path)
    logger.info(
        "interp-hf: reference model %s loaded (%s, %s): one teacher-forced forward per interpreted request",
        path,
        str(param.dtype).replace("torch.", ""),
        param.device,
    )
    return Reference(model=model, name=path, fingerprint=fingerprint)
