"""Gradient x input, the paper's attribution and the pass's primary method.

Its one primal forward carries every capture the signals asked for (instruction attention, FFN outputs,
logits); a half-precision model whose attribution gives NaN/inf is re-run in float32, and every
``fp32_check``-th request is checked against float32 (`interpret.precision`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch

from ...methods.attribution import AttributionOutput, choose_mode, gradient_x_input
from ...methods.model_state import HALF_DTYPES, eager_attention, in_float32
from ..context import PassContext
from ..precision import float32_comparison
from ..registry import AttributionMethod, MethodAttribution, register_method
from .scoring import score


@contextlib.contextmanager
def _all(captures: Sequence[Callable[[], AbstractContextManager[Any]]]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for capture in captures:
            stack.enter_context(capture())
        yield


def precision_record(
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


@register_method
class GradientXInput(AttributionMethod):
    """I[m, n] = <d f(y_n) / d e_m, e_m>, batched VJPs (or JVPs) after one primal forward."""

    name = "gxi"
    long_name = "gradient_x_input"
    parameters = ("objective", "mode", "chunk_size", "memory_budget", "checkpoint", "fp32_check")
    order = 0

    def attribute(self, ctx: PassContext) -> MethodAttribution:
        model, settings = ctx.model, ctx.settings
        run_mode = choose_mode(len(ctx.prompt), ctx.n_targets, settings.mode) if ctx.n_targets else "reverse"
        # Reverse mode runs under the model's own attention (SDPA/flash); forward mode (JVP) needs eager, and
        # so does the fallback that reads every layer's attention probabilities.
        eager = run_mode == "forward" or ctx.output_attentions

        def run(**extra: Any) -> AttributionOutput:
            with eager_attention(model) if eager else contextlib.nullcontext():
                return gradient_x_input(
                    model,
                    ctx.prompt,
                    ctx.target,
                    objective=settings.objective,
                    mode=settings.mode,
                    chunk_size=settings.chunk_size,
                    memory_budget=settings.memory_budget_bytes,
                    checkpoint=settings.checkpoint,
                    **extra,
                )

        captures = list(ctx.captures)
        out = run(
            output_attentions=ctx.output_attentions,
            capture=(lambda: _all(captures)) if captures else None,
            foil_ids=ctx.foil,  # not in the float32 re-runs and checks: their foil would be discarded
        )
        raw, target_logprobs = self._precision(ctx, run, out)
        if not np.isfinite(raw).all():
            ctx.notes.append("non-finite attribution values were set to 0")
            raw = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
        if not ctx.n_targets:  # nothing is attributed: every attribution score is undefined, not 0
            ctx.notes.append(
                "empty target (e.g. an empty generation): attribution and instruction metrics undefined"
            )
        ctx.target_logprobs, ctx.mode, ctx.attentions = target_logprobs, out.mode, out.attentions
        # the attribution forward scored the unablated prompt already (unless float32 replaced its numbers)
        ctx.reusable_logprobs = out.target_logprobs if "precision" not in ctx.precision else None
        if "precision" in ctx.precision and ctx.foil is not None:  # the foil's row was of the discarded run
            ctx.foil_skipped = "the attribution was re-run in float32"
        else:
            ctx.foil_output, ctx.foil_skipped = out.foil, out.foil_skipped
        ctx.precision_used = precision_record(model, ctx.precision, run_mode, eager)
        result = score(ctx, raw)
        ctx.raw, ctx.quantised = result.raw, result.quantised
        return result

    @staticmethod
    def _precision(
        ctx: PassContext, run: Callable[..., AttributionOutput], out: AttributionOutput
    ) -> tuple[np.ndarray, torch.Tensor]:
        """Half precision: re-run in float32 after NaN/inf, or check against float32 where asked."""
        raw, target_logprobs = out.raw.numpy(), out.target_logprobs
        dtype = next(ctx.model.parameters()).dtype
        if dtype not in HALF_DTYPES or not ctx.n_targets:
            return raw, target_logprobs
        dtype_name = str(dtype).replace("torch.", "")
        finite = bool(np.isfinite(raw).all()) and bool(torch.isfinite(target_logprobs).all())
        if finite and not ctx.check_fp32:
            return raw, target_logprobs
        try:
            with in_float32(ctx.model):
                full = run()
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if "out of memory" not in str(err).lower():
                raise
            what = "re-run" if not finite else "check"
            ctx.notes.append(f"float32 {what} skipped: out of memory ({err})"[:300])
            return raw, target_logprobs
        if not finite:
            ctx.notes.append(f"{dtype_name} attribution gave NaN/inf: this request was re-run in float32")
            ctx.precision["precision"] = "float32 (re-run after non-finite " + dtype_name + ")"
            return full.raw.numpy(), full.target_logprobs
        ctx.precision["fp32_check"] = float32_comparison(
            raw, full.raw.numpy(), ctx.labels, ctx.settings.importance, dtype_name
        )
        return raw, target_logprobs
