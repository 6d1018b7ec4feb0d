"""Instruction attention of one example: how much each layer and head attends from the answer to the
instruction.

Pure torch: attention probabilities (``layers x heads x seq x seq`` for one sequence, prompt + target) and an
instruction mask in, a dataclass out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import metric_names as names

logger = logging.getLogger(__name__)


def target_query_positions(prompt_len: int, target_len: int) -> list[int]:
    """Query positions that predict the target tokens: ``prompt_len - 1 .. prompt_len + target_len - 2``.

    Target token n (1-based) sits at position ``prompt_len + n - 1`` and is predicted from the position before
    it, so "attention from the answer" is the attention of the positions that produce the answer: the last
    prompt token (which predicts the first target token) through the second-to-last target token.
    """
    if prompt_len < 1 or target_len < 1:
        raise ValueError(f"need prompt_len >= 1 and target_len >= 1, got {prompt_len} and {target_len}")
    return list(range(prompt_len - 1, prompt_len + target_len - 1))


@dataclass
class InstructionAttention:
    """Attention mass on instruction tokens, per layer and head, for one example.

    Attributes:
        mass: ``layers x heads``: mean over target query positions of the attention probability summed over
            instruction key positions.
        lift: ``layers x heads``: ``mass / uniform_share``; 1.0 is what uniform attention over the prompt
        gives.
        uniform_share: ``|instruction| / prompt_len``.
        mean_mass: mean of `mass` over layers and heads.
        mean_lift: mean of `lift` over layers and heads.
        layer_mass: per-layer mean of `mass` over heads.
        top_heads: the heads with the largest lift, as ``(layer, head, mass, lift)``, best first.
        query_positions: the query positions averaged over.
    """

    mass: Tensor
    lift: Tensor
    uniform_share: float
    mean_mass: float
    mean_lift: float
    layer_mass: list[float]
    top_heads: list[tuple[int, int, float, float]]
    query_positions: list[int]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for records)."""
        return {
            names.INSTRUCTION_ATTENTION: self.mass.tolist(),
            names.INSTRUCTION_ATTENTION_LIFT: self.lift.tolist(),
            "uniform_share": self.uniform_share,
            "mean_mass": self.mean_mass,
            "mean_lift": self.mean_lift,
            "layer_mass": self.layer_mass,
            "top_heads": [list(t) for t in self.top_heads],
            "query_positions": self.query_positions,
        }


def instruction_attention(
    attn: Tensor,
    instruction_mask: Sequence[int] | Sequence[bool] | Tensor,
    target_positions: Sequence[int] | Tensor,
    top_n: int = 5,
) -> InstructionAttention:
    """Mean attention mass that the answer-producing positions put on the instruction tokens.

    Args:
        attn: attention probabilities of one sequence, ``layers x heads x seq x seq`` (query, key).
        instruction_mask: one entry per *prompt* token (length prompt_len), true on instruction tokens.
        target_positions: the query positions to average over, usually `target_query_positions`.
        top_n: how many heads to list in ``top_heads``.

    Returns:
        An `InstructionAttention` with per-head mass and lift over the uniform share ``|instruction| /
        prompt_len``.
    """
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must be layers x heads x seq x seq, got shape {tuple(attn.shape)}")
    mask = torch.as_tensor(instruction_mask, device=attn.device).bool().flatten()
    prompt_len, seq = int(mask.numel()), int(attn.shape[-1])
    if prompt_len > seq:
        raise ValueError(
            f"instruction_mask has {prompt_len} entries but the sequence has only {seq} positions"
        )
    n_instr = int(mask.sum())
    if n_instr == 0:
        raise ValueError(
            "instruction_mask marks no instruction token; check the instruction span of the prompt"
        )
    pos = torch.as_tensor(target_positions, device=attn.device, dtype=torch.long).flatten()
    if pos.numel() == 0 or int(pos.min()) < 0 or int(pos.max()) >= seq:
        raise ValueError(f"target_positions must be non-empty and within [0, {seq}), got {pos.tolist()}")
    key_mask = torch.zeros(seq, dtype=attn.dtype, device=attn.device)
    key_mask[:prompt_len] = mask.to(attn.dtype)
    rows = attn.float()[:, :, pos, :]  # layers x heads x targets x seq
    mass = (rows * key_mask.float()).sum(-1).mean(-1).cpu()  # layers x heads
    return from_mass(mass, n_instr / prompt_len, pos.cpu().tolist(), top_n)


def from_mass(
    mass: Tensor, uniform_share: float, query_positions: Sequence[int], top_n: int = 5
) -> InstructionAttention:
    """The `InstructionAttention` of a ``layers x heads`` mass (mean over `query_positions` of the probability
    summed over instruction keys), however it was reduced: from full probabilities (`instruction_attention`)
    or layer by layer inside the forward (`attention_probe`)."""
    mass = mass.float().cpu()
    lift = mass / uniform_share
    flat = lift.flatten()
    order = torch.argsort(flat, descending=True, stable=True)[: min(top_n, flat.numel())]  # ties: lower index
    n_heads = mass.shape[1]
    top = [
        (int(i) // n_heads, int(i) % n_heads, float(mass.flatten()[i]), float(flat[i]))
        for i in order.tolist()
    ]
    return InstructionAttention(
        mass=mass,
        lift=lift,
        uniform_share=uniform_share,
        mean_mass=float(mass.mean()),
        mean_lift=float(lift.mean()),
        layer_mass=mass.mean(1).tolist(),
        top_heads=top,
        query_positions=[int(p) for p in query_positions],
    )
