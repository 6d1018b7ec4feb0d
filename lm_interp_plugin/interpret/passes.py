"""One interpretation pass over a (prompt, target) pair: attribution, instruction attention, FFN concepts.

This is the model-agnostic core shared by the lm-eval model (`harness.model`) and the Python API
(`lm_interp_plugin.attribute`). It never imports lm-eval. Every temporary change it makes to a model
(attention implementation, hooks, requires_grad) is undone on exit, also on error.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import metric_names as names
from ..arch import UnsupportedArchitectureError
from ..methods.attention import target_query_positions
from ..methods.attention_probe import (
    AttentionProbeError,
    InstructionAttentionProbe,
    NoAttentionError,
    log_once,
)
from ..methods.attribution import choose_mode, gradient_x_input
from ..methods.importance import ImportanceParams, instruction_importance, part_shares, quantise
from ..methods.model_state import HALF_DTYPES, eager_attention, in_float32
from ..spans import instruction_mask
from .precision import float32_comparison
from .probes import Probe
from .settings import InterpSettings

logger = logging.getLogger(__name__)


@dataclass
class PassResult:
    """What one pass computed for a request, before it becomes a record."""

    metrics: dict[str, float]
    raw: np.ndarray
    quantised: np.ndarray
    target_logprobs: np.ndarray
    mode: str
    attention: dict[str, Any] = field(default_factory=dict)
    ffn: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


def faithful_metrics(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    target: torch.Tensor,
    labels: Sequence[str],
    raw: np.ndarray,
    settings: InterpSettings,
    metrics: dict[str, float],
    neutral_token_id: int | None,
    original_logprobs: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Issue-8 signals beside the paper's score: instruction ablation, integrated gradients, deletion curves.

    Adds scalars to `metrics` in place; returns the per-token detail for the record's ``extras``.
    `original_logprobs` (the attribution forward's own target log-probabilities, same model and dtype)
    spares the ablation its forward of the unablated prompt.
    """
    from ..methods.importance import importance_density

    extras: dict[str, Any] = {}
    mask = torch.from_numpy(instruction_mask(labels))
    if len(target) == 0:
        return extras
    if settings.ablation and bool(mask.any()) and not bool(mask.all()):
        from ..methods.ablation import instruction_ablation

        ablation = instruction_ablation(
            model,
            prompt,
            target,
            mask,
            neutral_token_id=neutral_token_id,
            original_logprobs=original_logprobs,
        )
        metrics[names.ABLATION_DROP_REMOVED] = float(ablation.drop_removed)
        metrics[names.ABLATION_DROP_REPLACED] = float(ablation.drop_replaced)
        metrics[names.ABLATION_DROP_REMOVED_PER_TOKEN] = float(ablation.drop_removed) / len(target)
        extras["ablation"] = ablation.to_dict()
    scores = {"gxi": importance_density(quantise(raw, L=settings.L, eps=settings.eps), b=0, p=settings.p)}
    if settings.ig:
        from ..methods.integrated_gradients import integrated_gradients

        ig = integrated_gradients(
            model, prompt, target, baseline="zero", steps=settings.ig_steps, objective=settings.objective
        )
        ig_raw = (
            ig.attributions.float().numpy()
            if hasattr(ig.attributions, "numpy")
            else np.asarray(ig.attributions)
        )
        S_ig = quantise(ig_raw, L=settings.L, eps=settings.eps)
        for key, value in attribution_metrics(S_ig, labels, settings.importance).items():
            metrics[names.IG_PREFIX + key] = value
        metrics[names.IG_COMPLETENESS_ERROR] = float(ig.completeness_rel_error_total)
        scores["ig"] = importance_density(S_ig, b=0, p=settings.p)
        extras["ig"] = {
            "raw": ig_raw.tolist(),
            "completeness_rel_error_total": float(ig.completeness_rel_error_total),
        }
    if settings.deletion:
        from ..methods.faithfulness import deletion_curve

        for method, density in scores.items():
            curve = deletion_curve(model, prompt, target, torch.as_tensor(density, dtype=torch.float32))
            metrics[names.DELETION_AREA_PREFIX + method] = float(curve.area)
            if curve.area_gain is not None:
                metrics[names.DELETION_GAIN_PREFIX + method] = float(curve.area_gain)
            extras[f"deletion_{method}"] = curve.to_dict()
    return extras


def attribution_metrics(S: np.ndarray, labels: Sequence[str], params: ImportanceParams) -> dict[str, float]:
    """The paper's instruction importance plus the share of density mass on each prompt part."""
    mask = instruction_mask(labels)
    metrics: dict[str, float] = {}
    if mask.any():
        metrics[names.INSTRUCTION_IMPORTANCE] = float(instruction_importance(S, mask, b=params.b, p=params.p))
    for part, share in part_shares(S, list(labels), b=params.b, p=params.p).items():
        metrics[names.ATTRIBUTION_SHARE_PREFIX + part] = float(share)
    return metrics


def attention_metrics(
    attentions: torch.Tensor, labels: Sequence[str], prompt_len: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """Instruction attention per layer x head from the primal forward's full attention probabilities (the
    fallback for families the attention probe does not know)."""
    from ..methods.attention import instruction_attention

    mask = torch.from_numpy(instruction_mask(labels))
    if not bool(mask.any()):
        return {}, {}
    target_len = attentions.shape[-1] - prompt_len + 1
    return _attention_outputs(
        instruction_attention(attentions, mask, target_query_positions(prompt_len, target_len))
    )


def _attention_outputs(result) -> tuple[dict[str, float], dict[str, Any]]:
    per_head = {
        names.INSTRUCTION_ATTENTION: result.mass.tolist(),
        names.INSTRUCTION_ATTENTION_LIFT: result.lift.tolist(),
    }
    if getattr(result, "layers", None) is not None:  # the model layer of each row (hybrids: softmax layers)
        per_head["layers"] = list(result.layers)
    scalars = {
        names.INSTRUCTION_ATTENTION: float(result.mean_mass),
        names.INSTRUCTION_ATTENTION_LIFT: float(result.mean_lift),
    }
    return scalars, per_head


def _attention_probe(
    model: torch.nn.Module, labels: Sequence[str], prompt_len: int, target_len: int
) -> tuple[InstructionAttentionProbe | None, bool]:
    """``(probe, eager_fallback)``: the layer-by-layer probe; or None and True where the attention is outside
    transformers' interface (the pass reads every layer's eager probabilities); or None and False where the
    model has no softmax attention. Each case is said once per run."""
    mask = torch.tensor([label == "instruction" for label in labels], dtype=torch.bool)
    kind = type(model).__name__
    try:
        return InstructionAttentionProbe(model, mask, target_query_positions(prompt_len, target_len)), False
    except NoAttentionError as err:
        log_once(f"no-attention:{kind}", "instruction attention left out: %s", err)
        return None, False
    except UnsupportedArchitectureError as err:
        log_once(f"eager:{kind}", "instruction attention through eager attention probabilities: %s", err)
        return None, True


@contextlib.contextmanager
def _all(captures: Sequence[Callable[[], contextlib.AbstractContextManager]]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for capture in captures:
            stack.enter_context(capture())
        yield


def _precision_record(
    model: torch.nn.Module, precision: dict[str, Any], mode: str, eager: bool
) -> dict[str, Any]:
    """How this request was computed, for its record: the dtype the attribution ran in (with float32
    accumulation), its checked error against float32 where this request was checked, and the attention
    implementation of the derivative passes."""
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    config = getattr(model, "config", None)
    record: dict[str, Any] = {
        "dtype": "float32" if "precision" in precision else dtype,
        "accumulation": "float32",
        "mode": mode,
        "attention": "eager" if eager else str(getattr(config, "_attn_implementation", None) or "eager"),
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32) if torch.cuda.is_available() else False,
    }
    check = precision.get("fp32_check")
    record["fp32_checked"] = check is not None  # half precision: every interp_fp32_check-th request
    if check is not None:
        record["checked_rel_error"] = check["rel_error"]
        record["checked_max_abs_error_rel"] = check["max_abs_error_rel"]
    return record


def run_pass(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    target_ids: Sequence[int],
    labels: Sequence[str],
    settings: InterpSettings,
    ffn_probe: Probe | None = None,
    neutral_token_id: int | None = None,
    check_fp32: bool = False,
) -> PassResult:
    """Attribute `target_ids` onto `prompt_ids` and derive the per-example metrics.

    Args:
        model: a Hugging Face causal LM.
        prompt_ids / target_ids: token ids as the model scored them (BOS included where added).
        labels: one part label per prompt token (see `spans.label_tokens`).
        settings: what to compute.
        ffn_probe: an object with ``capture(keep_last=target_len)`` (context manager recording FFN outputs
            at the last positions) and ``metrics(target_len)`` (per-example concept activation), or None.
        check_fp32: for a half-precision model, also attribute in float32 and record the relative error
            (``extras["fp32_check"]``). Independently of it, a half-precision pass that gives NaN or inf is
            re-run in float32 and says so in ``notes`` and ``extras["precision"]``.
    """
    prompt = torch.as_tensor(list(prompt_ids), dtype=torch.long)
    target = torch.as_tensor(list(target_ids), dtype=torch.long)
    if len(labels) != len(prompt):
        raise ValueError(f"got {len(labels)} part labels for {len(prompt)} prompt tokens")
    params = settings.importance
    notes: list[str] = []
    precision: dict[str, Any] = {}

    n_targets = len(target)
    run_mode = choose_mode(len(prompt), n_targets, settings.mode) if n_targets else "reverse"
    has_instruction = any(label == "instruction" for label in labels)
    probe, full_attentions = None, False
    if settings.attention and n_targets and has_instruction:
        probe, full_attentions = _attention_probe(model, labels, len(prompt), n_targets)
    # Reverse mode runs under the model's own attention (SDPA/flash); forward mode (JVP) needs eager, and so
    # does the fallback that reads every layer's probabilities.
    eager = run_mode == "forward" or full_attentions

    def attribute(**extra: Any):
        with eager_attention(model) if eager else contextlib.nullcontext():
            return gradient_x_input(
                model,
                prompt,
                target,
                objective=settings.objective,
                mode=settings.mode,
                chunk_size=settings.chunk_size,
                memory_budget=settings.memory_budget_bytes,
                checkpoint=settings.checkpoint,
                **extra,
            )

    captures = []
    if ffn_probe is not None and n_targets > 0:
        captures.append(lambda: ffn_probe.capture(keep_last=n_targets))
    if probe is not None:
        captures.append(probe.capture)
    out = attribute(output_attentions=full_attentions, capture=(lambda: _all(captures)) if captures else None)
    raw, target_logprobs = out.raw.numpy(), out.target_logprobs
    dtype = next(model.parameters()).dtype
    if dtype in HALF_DTYPES and len(target) > 0:
        dtype_name = str(dtype).replace("torch.", "")
        finite = bool(np.isfinite(raw).all()) and bool(torch.isfinite(target_logprobs).all())
        if not finite or check_fp32:
            try:
                with in_float32(model):
                    full = attribute()
            except (torch.OutOfMemoryError, RuntimeError) as err:
                if "out of memory" not in str(err).lower():
                    raise
                notes.append(
                    f"float32 {'re-run' if not finite else 'check'} skipped: out of memory ({err})"[:300]
                )
                full = None
            if full is not None and not finite:
                notes.append(f"{dtype_name} attribution gave NaN/inf: this request was re-run in float32")
                raw, target_logprobs = full.raw.numpy(), full.target_logprobs
                precision["precision"] = "float32 (re-run after non-finite " + dtype_name + ")"
            elif full is not None:
                precision["fp32_check"] = float32_comparison(
                    raw, full.raw.numpy(), labels, params, dtype_name
                )
    if not np.isfinite(raw).all():
        notes.append("non-finite attribution values were set to 0")
        raw = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
    S = quantise(raw, L=params.L, eps=params.eps)
    metrics = attribution_metrics(S, labels, params) if len(target) else {}
    if not len(target):  # nothing is attributed: every attribution score is undefined, not 0
        notes.append("empty target (e.g. an empty generation): attribution and instruction metrics undefined")
    attention: dict[str, Any] = {}
    if probe is not None:
        try:
            scalars, attention = _attention_outputs(probe.result())
            metrics.update(scalars)
        except AttentionProbeError as err:  # left out, said once; the run goes on
            log_once(f"probe:{type(model).__name__}", "instruction attention left out: %s", err)
    elif full_attentions and out.attentions is None:
        log_once(
            f"no-probs:{type(model).__name__}",
            "instruction attention left out: %s returned no seq x seq attention probabilities under eager",
            type(model).__name__,
        )
    elif out.attentions is not None:
        scalars, attention = attention_metrics(out.attentions, labels, len(prompt))
        metrics.update(scalars)
    ffn: dict[str, Any] = {}
    if ffn_probe is not None and len(target) > 0:
        try:
            scalars, ffn = ffn_probe.metrics(len(target))
            metrics.update(scalars)
        except RuntimeError as err:  # a layer's FFN did not run (e.g. skipped cross-attention layers)
            log_once(f"ffn:{type(model).__name__}", "FFN concepts left out: %s", err)
    # the attribution forward scored the unablated prompt already (unless float32 replaced its numbers)
    reuse = out.target_logprobs if "precision" not in precision else None
    extras = faithful_metrics(
        model, prompt, target, labels, raw, settings, metrics, neutral_token_id, original_logprobs=reuse
    )
    extras["precision_used"] = _precision_record(model, precision, run_mode, eager)
    return PassResult(
        extras={**precision, **extras},
        metrics=metrics,
        raw=raw,
        quantised=S,
        target_logprobs=target_logprobs.numpy(),
        mode=out.mode,
        attention=attention,
        ffn=ffn,
        notes=notes,
    )
