"""Answer-emergence layer: the logit lens at the target positions.

The logit lens (nostalgebraist, 2020) reads each decoder layer's residual stream as if it were the last: the
model's own final norm and output projection turn the residual after layer l into next-token logits. At the
positions that predict the target tokens it gives, per layer, the rank of the target token, and the first
layer at which the target is the top-1 token (where the answer "appears"); comparing that layer between a base
model and its tuned version shows whether tuning makes the answer emerge earlier or later.

The residuals come from the pass's own primal forward (the ``resid_post`` capture point of
`interpret.capture`: forward hooks on the decoder layers that `arch` finds), so the lens costs one final
norm and one ``d_model x vocab`` projection per layer and target position, never an extra forward. The last
layer's lens is the model's own logits (before any final logit soft-capping, which is monotonic and changes
no rank).

Shapes: ``layers x target_len x d_model`` residuals, ``layers x target_len`` ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..arch import ArchAdapter

#: logits held at once by `logit_lens` (floats): 64M = 256 MB in float32
LENS_LOGITS_PER_CALL = 64 * 2**20


class LogitLensError(ValueError):
    """The lens cannot be read (nothing captured, or shapes that do not match the targets)."""


@dataclass
class LensResult:
    """The logit lens at the target positions of one request.

    Attributes:
        ranks: ``layers x target_len``: per layer, how many tokens the lens scores strictly above the target
            (0 = top-1).
        first_layer: per target position, the first layer (0-based) whose lens ranks the target top-1, or None
            when no layer does.
        num_layers: the model's decoder layers.
    """

    ranks: list[list[int]]
    first_layer: list[int | None]
    num_layers: int

    @property
    def answer_layer(self) -> int | None:
        """The first layer at which the first target token is top-1 (None when no layer ranks it first)."""
        return self.first_layer[0] if self.first_layer else None

    @property
    def answer_depth(self) -> float | None:
        """`answer_layer` as a share of the model's depth, ``(layer + 1) / layers`` in (0, 1]: comparable
        across models of different depths."""
        layer = self.answer_layer
        return None if layer is None else (layer + 1) / self.num_layers

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for a record's extras."""
        return {"ranks": self.ranks, "first_layer": self.first_layer, "num_layers": self.num_layers}


def logit_lens(adapter: ArchAdapter, residuals: Tensor, target_ids: Sequence[int] | Tensor) -> LensResult:
    """Rank of each target token under every layer's logit lens, and its first top-1 layer.

    Args:
        adapter: the model's `arch` adapter (final norm and output projection).
        residuals: ``layers x N x d_model`` residuals after each decoder layer at the N target-predicting
            positions (the ``resid_post`` capture).
        target_ids: the N target token ids.
    """
    target = torch.as_tensor(target_ids, dtype=torch.long)
    if residuals.ndim != 3 or residuals.shape[1] != len(target):
        raise LogitLensError(
            f"residuals {tuple(residuals.shape)} must be layers x {len(target)} x d_model: one row per target"
        )
    norm, head = adapter.final_norm_module(), adapter.output_head_module()
    dtype = head.weight.dtype
    layers, n = int(residuals.shape[0]), len(target)
    vocab = int(head.weight.shape[0])
    # several layers per projection: the head's weight is read once per group, not once per layer (on a CPU
    # the lens is bound by that read), with at most LENS_LOGITS_PER_CALL logits in memory at a time
    group = max(1, min(layers, LENS_LOGITS_PER_CALL // max(1, n * vocab)))
    ranks: list[list[int]] = []
    with torch.no_grad():
        ids = target.to(head.weight.device).repeat(group)
        for start in range(0, layers, group):
            block = residuals[start : start + group]
            hidden = block.reshape(-1, block.shape[-1]).to(head.weight.device, dtype)
            logits = head(norm(hidden)).float()  # (group * N) x V
            chosen = logits.gather(-1, ids[: len(hidden), None])
            counts = (logits > chosen).sum(-1).view(len(block), n)
            ranks.extend([int(r) for r in row] for row in counts)
    first: list[int | None] = []
    for position in range(n):
        top = [layer for layer, row in enumerate(ranks) if row[position] == 0]
        first.append(top[0] if top else None)
    return LensResult(ranks=ranks, first_layer=first, num_layers=layers)
