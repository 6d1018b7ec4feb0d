"""What one pass knows about its request, computed once and read by every method and signal.

`PassContext` holds the inputs (ids, part labels, the instruction mask), the resolved tokens (neutral, BOS)
and resources (the FFN concept probe), and after the primary attribution its outputs (the raw and quantised
matrices, the target log-probabilities, the captured activations). `PassResult` is what the pass returns:
scalars, the typed detail of each signal, and their record form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..methods.attribution import FoilOutput
from ..spans import instruction_mask
from .registry import Detail, MethodAttribution
from .settings import InterpSettings


@dataclass
class TokenRoles:
    """Token ids the signals need beyond the request: the neutral replacement (ablation) and BOS (never
    deleted by a deletion curve). From the tokenizer where the model's config has none."""

    neutral: int | None = None
    bos: int | None = None
    pad: int | None = None


@dataclass
class PassContext:
    """One request inside one pass (see module docstring). Shapes: ``prompt_len`` (M), ``target_len`` (N)."""

    model: torch.nn.Module
    prompt: torch.Tensor
    target: torch.Tensor
    labels: list[str]
    settings: InterpSettings
    tokens: TokenRoles = field(default_factory=TokenRoles)
    resources: dict[str, Any] = field(default_factory=dict)
    check_fp32: bool = False
    # set before the primal forward (by signals' `prepare`)
    captures: list[Callable[[], AbstractContextManager[Any]]] = field(default_factory=list)
    capture_names: list[str] = field(default_factory=list)
    output_attentions: bool = False
    #: a second continuation the primary attribution also attributes, as one more row of its backward (the
    #: contrastive signal's foil; `methods.attribution.gradient_x_input`'s ``foil_ids``)
    foil: torch.Tensor | None = None
    # set by the primary attribution
    raw: np.ndarray | None = None
    quantised: np.ndarray | None = None
    target_logprobs: torch.Tensor | None = None
    reusable_logprobs: torch.Tensor | None = None
    attentions: torch.Tensor | None = None
    mode: str = "none"
    foil_output: FoilOutput | None = None
    foil_skipped: str | None = None
    captured: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    precision: dict[str, Any] = field(default_factory=dict)
    precision_used: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # per-pass state of the signals, by signal name
    # filled as the pass goes
    attributions: dict[str, MethodAttribution] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Detail] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.prompt):
            raise ValueError(f"got {len(self.labels)} part labels for {len(self.prompt)} prompt tokens")
        self.mask = instruction_mask(self.labels)  # numpy bool, once per pass
        self.mask_tensor = torch.from_numpy(self.mask)

    @classmethod
    def create(
        cls,
        model: torch.nn.Module,
        prompt_ids: Sequence[int],
        target_ids: Sequence[int],
        labels: Sequence[str],
        settings: InterpSettings,
        **kwargs: Any,
    ) -> PassContext:
        return cls(
            model=model,
            prompt=torch.as_tensor(list(prompt_ids), dtype=torch.long),
            target=torch.as_tensor(list(target_ids), dtype=torch.long),
            labels=list(labels),
            settings=settings,
            **kwargs,
        )

    def activations(self, name: str) -> list[torch.Tensor]:
        """The captured activation `name` (see `capture.CAPTURE_POINTS`), one tensor per module; an error
        naming what is missing when the primal forward did not run every module (or did not run)."""
        slots = self.captured.get(name)
        if slots is None:
            raise RuntimeError(f"no {name!r} activations were captured: did a signal name it in `needs`?")
        missing = [i for i, slot in enumerate(slots) if slot is None]
        if missing:
            raise RuntimeError(
                f"the primal forward did not run {len(missing)} of the {len(slots)} modules of {name!r} "
                f"(first: {missing[0]}); this model's family is not captured correctly (see arch.py)"
            )
        return slots

    @property
    def n_targets(self) -> int:
        return int(self.target.numel())

    @property
    def has_instruction(self) -> bool:
        return bool(self.mask.any())


@dataclass
class PassResult:
    """What one pass computed for a request, before it becomes a record (`records.InterpRecord.from_pass`).

    Attributes:
        metrics: the per-example scalars (lm-eval's samples), in record order.
        raw / quantised: the primary method's matrices (``prompt_len x target_len``).
        target_logprobs: log p of each target token from the primal forward.
        mode: ``reverse``, ``forward`` or ``none`` (empty target).
        details: each signal's and secondary method's typed detail, by name.
        attention / ffn / extras: the details' JSON form, as the record's fields hold them.
        notes: what a reader should know (a float32 re-run, an empty target, ...).
        method: the primary method's long name (the record's ``params["method"]``).
    """

    metrics: dict[str, float]
    raw: np.ndarray
    quantised: np.ndarray
    target_logprobs: np.ndarray
    mode: str
    attention: dict[str, Any] = field(default_factory=dict)
    ffn: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Detail] = field(default_factory=dict)
    method: str = "gradient_x_input"
