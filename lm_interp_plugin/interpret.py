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
        chunk_size: VJPs/JVPs per batched pass (default: from free memory on a GPU, 32 on a CPU).
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
) -> PassResult:
    """Attribute `target_ids` onto `prompt_ids` and derive the per-example metrics.

    Args:
        model: a Hugging Face causal LM.
        prompt_ids / target_ids: token ids as the model scored them (BOS included where added).
        labels: one part label per prompt token (see `spans.label_tokens`).
        settings: what to compute.
        ffn_probe: an object with ``capture()`` (context manager recording FFN outputs at target positions)
            and ``metrics(target_len)`` (per-example concept activation), or None.
    """
    prompt = torch.as_tensor(list(prompt_ids), dtype=torch.long)
    target = torch.as_tensor(list(target_ids), dtype=torch.long)
    if len(labels) != len(prompt):
        raise ValueError(f"got {len(labels)} part labels for {len(prompt)} prompt tokens")
    params = settings.importance
    notes: list[str] = []
    with eager_attention(model):
        out = gradient_x_input(
            model,
            prompt,
            target,
            objective=settings.objective,
            mode=settings.mode,
            chunk_size=settings.chunk_size,
            output_attentions=settings.attention and len(target) > 0,
            capture=ffn_probe.capture if (ffn_probe is not None and len(target) > 0) else None,
        )
    raw = out.raw.numpy()
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
        extras=extras,
        metrics=metrics,
        raw=raw,
        quantised=S,
        target_logprobs=out.target_logprobs.numpy(),
        mode=out.mode,
        attention=attention,
        ffn=ffn,
        notes=notes,
    )
