"""One interpretation pass over a (prompt, target) pair: attribution, instruction attention, FFN concepts.

This is the model-agnostic core shared by the lm-eval model (`harness.model`) and the Python API
(`lm_interp_plugin.attribute`). It never imports lm-eval. Every temporary change it makes to a model (attention
implementation, hooks, requires_grad) is undone on exit, also on error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import metric_names as names
from .methods.attribution import gradient_x_input
from .methods.importance import ImportanceParams, instruction_importance, part_shares, quantise

logger = logging.getLogger(__name__)


@dataclass
class InterpSettings:
    """What the interpretation pass computes; each field is a `--model_args` key of `interp-hf`.

    Attributes:
        L: quantisation levels of the normalised matrix (paper: 10).
        b: sparsification threshold for the scores (paper: 7).
        p: norm of the importance density (paper: 4).
        eps: the normaliser's epsilon (paper: 1e-7).
        objective: ``prob`` (the paper's gradient of the probability) or ``logprob``.
        mode: ``auto`` (cheaper of reverse/forward), ``reverse`` or ``forward``.
        chunk_size: VJPs/JVPs per batched pass (default: from `memory_budget`, else half the free memory on a
            GPU and at most 8 on a CPU, fewer for long prompts); halved and retried on out-of-memory.
        memory_budget: memory the batched derivative passes may use, e.g. ``8GB``, ``512MiB`` or bytes.
        checkpoint: activation checkpointing of the decoder layers in reverse mode (long prompts: less memory,
            one extra forward per chunk).
        fp32_check: half-precision models only: every `fp32_check`-th interpreted request (the first one
            included) is attributed again in float32 and the relative error goes into its record; 0 = never.
        attention: compute per-example instruction attention (layers x heads).
        ffn: compute per-example FFN concept activation (needs the FFN components of the model).
        ffn_k: number of principal components per layer for the FFN concepts.
        ablation: instruction ablation: the target's log-prob drop when the instruction is removed / replaced.
        ig: integrated gradients (zero baseline) as a second attribution method, with the paper's score on it.
        ig_steps: interpolation steps of integrated gradients.
        deletion: deletion curves (faithfulness) of each attribution method, against random orders.
        choices: ``gold`` interprets the reference answer of multiple-choice docs (and every generation);
            ``all`` interprets every choice.
        store_matrices: keep the raw and quantised matrices in the records (they dominate the file size).
    """

    L: int = 10
    b: int = 7
    p: float = 4.0
    eps: float = 1e-7
    objective: str = "prob"
    mode: str = "auto"
    chunk_size: int | None = None
    memory_budget: str | None = None
    checkpoint: bool = False
    fp32_check: int = 50
    attention: bool = True
    ffn: bool = True
    ffn_k: int = 8
    choices: str = "gold"
    store_matrices: bool = True
    ablation: bool = True
    ig: bool = False
    ig_steps: int = 32
    deletion: bool = False

    def __post_init__(self) -> None:
        ImportanceParams(L=self.L, b=self.b, p=self.p, eps=self.eps)  # validates
        allowed = {"objective": ("prob", "logprob"), "mode": ("auto", "reverse", "forward"),
                   "choices": ("gold", "all")}
        for key, values in allowed.items():
            if getattr(self, key) not in values:
                raise ValueError(f"interp_{key}={getattr(self, key)!r} is not valid; use one of {values}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"interp_chunk_size must be a positive integer, got {self.chunk_size}")
        if self.fp32_check < 0:
            raise ValueError(f"interp_fp32_check must be 0 (never) or a positive N (every N-th request), "
                             f"got {self.fp32_check}")
        _ = self.memory_budget_bytes  # validates the size string

    @property
    def memory_budget_bytes(self) -> int | None:
        return None if self.memory_budget in (None, "", "none", "None") else parse_bytes(self.memory_budget)

    @property
    def importance(self) -> ImportanceParams:
        return ImportanceParams(L=self.L, b=self.b, p=self.p, eps=self.eps)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any], prefix: str = "interp_") -> InterpSettings:
        """Build from ``interp_<field>`` keyword arguments; unknown ``interp_`` keys get a did-you-mean error."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in kwargs.items():
            name = key[len(prefix):]
            if name not in fields:
                options = [prefix + f for f in fields]
                guess = difflib.get_close_matches(key, options, n=1)
                hint = f" Did you mean {guess[0]!r}?" if guess else ""
                raise ValueError(f"unknown model argument {key!r} for interp-hf.{hint} Valid: {', '.join(options)}")
            values[name] = _coerce(value, fields[name].type)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str | int) -> int:
    """``"8GB"``, ``"512MiB"``, ``"1.5gb"`` or a plain number of bytes -> bytes."""
    import re

    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"interp_memory_budget={text!r} is not a size; write it like 8GB, 512MiB or 2000000000")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value < 1:
        raise ValueError(f"interp_memory_budget must be positive, got {text!r}")
    return value


def _coerce(value: Any, annotation: str) -> Any:
    if value is None or not isinstance(value, str):
        return value
    if "bool" in annotation:
        return value.strip().lower() in ("1", "true", "yes", "on")
    if annotation.startswith("int"):
        return None if value.lower() == "none" else int(value)
    if annotation.startswith("float"):
        return float(value)
    return value


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Run under eager attention (probabilities are returned; forward-mode AD works), then restore."""
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    switch = previous not in (None, "eager") and hasattr(model, "set_attn_implementation")
    try:
        if switch:
            model.set_attn_implementation("eager")
        yield
    finally:
        if switch:
            model.set_attn_implementation(previous)


HALF_DTYPES = (torch.float16, torch.bfloat16)


@contextlib.contextmanager
def in_float32(model: torch.nn.Module) -> Iterator[None]:
    """Cast every floating parameter and buffer to float32 in place for the duration; restore each one's dtype.

    bf16/fp16 -> float32 -> bf16/fp16 is exact, so the model comes back bit-identical. Costs the float32 copy's
    memory while it lasts (twice the half-precision weights).
    """
    params: list[tuple[torch.nn.Parameter, torch.dtype]] = []
    buffers: list[tuple[torch.nn.Module, str, torch.dtype]] = []
    try:
        for module in model.modules():
            for param in module.parameters(recurse=False):
                if param.is_floating_point() and param.dtype != torch.float32:
                    params.append((param, param.dtype))
                    param.data = param.data.float()
            for name, buffer in list(module.named_buffers(recurse=False)):
                if buffer is not None and buffer.is_floating_point() and buffer.dtype != torch.float32:
                    buffers.append((module, name, buffer.dtype))
                    module._buffers[name] = buffer.float()
        yield
    finally:
        for param, dtype in params:
            param.data = param.data.to(dtype)
        for module, name, dtype in buffers:
            module._buffers[name] = module._buffers[name].to(dtype)


def float32_comparison(half: np.ndarray, full: np.ndarray, labels: Sequence[str], params: ImportanceParams,
                       dtype: str) -> dict[str, Any]:
    """How far a half-precision attribution is from float32: relative Frobenius error, largest entry error,
    and the instruction importance computed from each."""
    scale = float(np.linalg.norm(full)) or 1.0
    result: dict[str, Any] = {
        "dtype": dtype,
        "rel_error": float(np.linalg.norm(half - full)) / scale,
        "max_abs_error_rel": float(np.abs(half - full).max() / (np.abs(full).max() or 1.0)) if full.size else 0.0,
    }
    mask = np.array([label == "instruction" for label in labels], dtype=bool)
    if mask.any() and full.size:
        result["instruction_importance"] = float(instruction_importance(
            quantise(half, L=params.L, eps=params.eps), mask, b=params.b, p=params.p))
        result["instruction_importance_float32"] = float(instruction_importance(
            quantise(full, L=params.L, eps=params.eps), mask, b=params.b, p=params.p))
    return result


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


def faithful_metrics(model, prompt, target, labels, raw, settings, metrics, neutral_token_id) -> dict[str, Any]:
    """Issue-8 signals beside the paper's score: instruction ablation, integrated gradients, deletion curves.

    Adds scalars to `metrics` in place; returns the per-token detail for the record's ``extras``.
    """
    from .methods.importance import importance_density

    extras: dict[str, Any] = {}
    mask = torch.tensor([label == "instruction" for label in labels], dtype=torch.bool)
    if len(target) == 0:
        return extras
    if settings.ablation and bool(mask.any()) and not bool(mask.all()):
        from .methods.ablation import instruction_ablation

        ablation = instruction_ablation(model, prompt, target, mask, neutral_token_id=neutral_token_id)
        metrics["ablation_drop_removed"] = float(ablation.drop_removed)
        metrics["ablation_drop_replaced"] = float(ablation.drop_replaced)
        metrics["ablation_drop_removed_per_token"] = float(ablation.drop_removed) / len(target)
        extras["ablation"] = ablation.to_dict()
    scores = {"gxi": importance_density(quantise(raw, L=settings.L, eps=settings.eps), b=0, p=settings.p)}
    if settings.ig:
        from .methods.integrated_gradients import integrated_gradients

        ig = integrated_gradients(model, prompt, target, baseline="zero", steps=settings.ig_steps,
                                  objective=settings.objective)
        ig_raw = ig.attributions.float().numpy() if hasattr(ig.attributions, "numpy") else np.asarray(ig.attributions)
        S_ig = quantise(ig_raw, L=settings.L, eps=settings.eps)
        for key, value in attribution_metrics(S_ig, labels, settings.importance).items():
            metrics["ig_" + key] = value
        metrics["ig_completeness_error"] = float(ig.completeness_rel_error_total)
        scores["ig"] = importance_density(S_ig, b=0, p=settings.p)
        extras["ig"] = {"raw": ig_raw.tolist(), "completeness_rel_error_total": float(ig.completeness_rel_error_total)}
    if settings.deletion:
        from .methods.faithfulness import deletion_curve

        for method, density in scores.items():
            curve = deletion_curve(model, prompt, target, torch.as_tensor(density, dtype=torch.float32))
            metrics[f"deletion_area_{method}"] = float(curve.area)
            if curve.area_gain is not None:
                metrics[f"deletion_gain_{method}"] = float(curve.area_gain)
            extras[f"deletion_{method}"] = curve.to_dict()
    return extras


def attribution_metrics(S: np.ndarray, labels: Sequence[str], params: ImportanceParams) -> dict[str, float]:
    """The paper's instruction importance plus the share of density mass on each prompt part."""
    mask = np.array([label == "instruction" for label in labels], dtype=bool)
    metrics: dict[str, float] = {}
    if mask.any():
        metrics[names.INSTRUCTION_IMPORTANCE] = float(instruction_importance(S, mask, b=params.b, p=params.p))
    for part, share in part_shares(S, list(labels), b=params.b, p=params.p).items():
        metrics[names.ATTRIBUTION_SHARE_PREFIX + part] = float(share)
    return metrics


def attention_metrics(attentions: torch.Tensor, labels: Sequence[str], prompt_len: int):
    """Instruction attention per layer x head from the primal forward's attention probabilities."""
    from .methods.attention import instruction_attention, target_query_positions

    mask = torch.tensor([label == "instruction" for label in labels], dtype=torch.bool)
    if not bool(mask.any()):
        return {}, {}
    target_len = attentions.shape[-1] - prompt_len + 1
    result = instruction_attention(attentions, mask, target_query_positions(prompt_len, target_len))
    per_head = {
        names.INSTRUCTION_ATTENTION: result.mass.tolist(),
        names.INSTRUCTION_ATTENTION_LIFT: result.lift.tolist(),
    }
    scalars = {
        names.INSTRUCTION_ATTENTION: float(result.mean_mass),
        names.INSTRUCTION_ATTENTION_LIFT: float(result.mean_lift),
    }
    return scalars, per_head


def run_pass(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    target_ids: Sequence[int],
    labels: Sequence[str],
    settings: InterpSettings,
    ffn_probe: Any | None = None,
    neutral_token_id: int | None = None,
    check_fp32: bool = False,
) -> PassResult:
    """Attribute `target_ids` onto `prompt_ids` and derive the per-example metrics.

    Args:
        model: a Hugging Face causal LM.
        prompt_ids / target_ids: token ids as the model scored them (BOS included where added).
        labels: one part label per prompt token (see `spans.label_tokens`).
        settings: what to compute.
        ffn_probe: an object with ``capture()`` (context manager recording FFN outputs at target positions)
            and ``metrics(target_len)`` (per-example concept activation), or None.
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

    def attribute(**extra: Any):
        with eager_attention(model):
            return gradient_x_input(
                model, prompt, target, objective=settings.objective, mode=settings.mode,
                chunk_size=settings.chunk_size, memory_budget=settings.memory_budget_bytes,
                checkpoint=settings.checkpoint, **extra,
            )

    out = attribute(
        output_attentions=settings.attention and len(target) > 0,
        capture=ffn_probe.capture if (ffn_probe is not None and len(target) > 0) else None,
    )
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
                notes.append(f"float32 {'re-run' if not finite else 'check'} skipped: out of memory ({err})"[:300])
                full = None
            if full is not None and not finite:
                notes.append(f"{dtype_name} attribution gave NaN/inf: this request was re-run in float32")
                raw, target_logprobs = full.raw.numpy(), full.target_logprobs
                precision["precision"] = "float32 (re-run after non-finite " + dtype_name + ")"
            elif full is not None:
                precision["fp32_check"] = float32_comparison(raw, full.raw.numpy(), labels, params, dtype_name)
    if not np.isfinite(raw).all():
        notes.append("non-finite attribution values were set to 0")
        raw = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
    S = quantise(raw, L=params.L, eps=params.eps)
    metrics = attribution_metrics(S, labels, params)
    attention: dict[str, Any] = {}
    if out.attentions is not None:
        scalars, attention = attention_metrics(out.attentions, labels, len(prompt))
        metrics.update(scalars)
    ffn: dict[str, Any] = {}
    if ffn_probe is not None and len(target) > 0:
        scalars, ffn = ffn_probe.metrics(len(target))
        metrics.update(scalars)
    extras = faithful_metrics(model, prompt, target, labels, raw, settings, metrics, neutral_token_id)
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
