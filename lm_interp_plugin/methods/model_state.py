"""Every temporary change the project makes to a model, each a context manager that restores it on exit.

Attribution needs gradients to the input embeddings only, eval mode, sometimes eager attention (attention
probabilities, forward-mode AD), float32 weights (the precision check) or checkpointed decoder layers
(memory). Each change lives here once, with ``try/finally``, so that an exception never leaves the model
altered.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

HALF_DTYPES = (torch.float16, torch.bfloat16)


class ModelStateError(ValueError):
    """A requested model change does not apply to this model (the message names the model and the fix)."""


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put `model` in eval mode for the block (no dropout, deterministic) and restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def frozen_parameters(model: torch.nn.Module) -> Iterator[None]:
    """Turn off parameter gradients for the duration (restored on exit, also on error)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def inputs_only_grad(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode, gradients enabled, and every parameter's ``requires_grad`` off for the block (restored
    after).

    Autograd then builds graphs only back to the input embeddings: no parameter ``.grad`` is written and no
    memory is spent on weight gradients.
    """
    with frozen_parameters(model), eval_mode(model), torch.enable_grad():
        yield model


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


@contextlib.contextmanager
def in_float32(model: torch.nn.Module) -> Iterator[None]:
    """Cast every floating parameter and buffer to float32 in place for the duration; restore each one's
    dtype.

    bf16/fp16 -> float32 -> bf16/fp16 is exact, so the model comes back bit-identical. Costs the float32
    copy's memory while it lasts (twice the half-precision weights).
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


@contextlib.contextmanager
def activation_checkpointing(model: torch.nn.Module) -> Iterator[int]:
    """Checkpoint every decoder layer for the duration: keep only its input, recompute it in the backward.

    Works on any transformers model whose decoder layers derive from ``GradientCheckpointingLayer`` (all
    current causal LMs). Unlike ``model.gradient_checkpointing_enable()`` it needs no training mode (which
    would switch dropout on). Yields the number of layers wrapped; restores the original ``forward`` on exit.
    """
    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise ModelStateError(
            f"activation checkpointing found no decoder layers (transformers GradientCheckpointingLayer) in "
            f"{type(model).__name__}; run without interp_checkpoint"
        )

    def wrap(original):
        def forward(*args, **kwargs):
            return checkpoint(functools.partial(original, **kwargs), *args, use_reentrant=False)

        return forward

    try:
        for layer in layers:
            layer.forward = wrap(layer.forward)
        yield len(layers)
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)
