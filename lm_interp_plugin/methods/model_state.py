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
    # every config's own setting, so that a composite checkpoint whose towers refuse the previous
    # implementation by name (Gemma 4's audio tower and "sdpa") gets each one back as it was
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None}
    before = [(c, getattr(c, "_attn_implementation", None)) for c in configs.values()]
    try:
        if switch:
            model.set_attn_implementation("eager")
        yield
    finally:
        if switch:
            try:
                model.set_attn_implementation(previous)
            except (ValueError, ImportError):
                for c, value in before:
                    c._attn_implementation = value


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


class HeadSplit:
    """What `split_at_output_head` saw: the output head's input (``hidden``, still attached to the body's
    graph) and the detached leaf the head computed from instead (``detached``)."""

    def __init__(self) -> None:
        self.hidden: torch.Tensor | None = None
        self.detached: torch.Tensor | None = None


def _output_head(model: torch.nn.Module) -> torch.nn.Module | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head if isinstance(head, torch.nn.Module) else None


@contextlib.contextmanager
def split_at_output_head(model: torch.nn.Module, leaf_grad: bool = False) -> Iterator[HeadSplit]:
    """Cut the autograd graph between the decoder body and the output head (LM head) for the block.

    The head's input (the final hidden state at the kept positions) is recorded and replaced by a detached
    leaf, so the logits' graph ends there: derivatives of the target scores with respect to the final hidden
    state come from one small backward through the head, and the batched input derivatives are then seeded
    at the final hidden state (no ``[chunk, N, vocab]`` softmax backward per chunk). ``hidden`` stays None
    when the model has no output-embedding module or does not call it. With `leaf_grad` the leaf requires
    grad even when the body built no graph (forward mode: only the head's derivative is wanted).
    """
    split = HeadSplit()
    head = _output_head(model)
    if head is None:
        yield split
        return

    def pre_hook(_module, args):
        if not args or not isinstance(args[0], torch.Tensor) or split.hidden is not None:
            return None
        if not args[0].is_floating_point():  # a head module that is also the input embedding, fed ids
            return None
        split.hidden = args[0]
        split.detached = args[0].detach().requires_grad_(leaf_grad or args[0].requires_grad)
        return (split.detached, *args[1:])

    handle = head.register_forward_pre_hook(pre_hook)
    try:
        yield split
    finally:
        handle.remove()


class HeadReached(Exception):
    """Raised by `stop_at_output_head` when the forward reaches the head (its input is recorded)."""


@contextlib.contextmanager
def stop_at_output_head(model: torch.nn.Module) -> Iterator[HeadSplit]:
    """Record the output head's input and stop the forward there (`HeadReached`): the final hidden state
    without the ``[N, vocab]`` logits. ``hidden`` stays None when the model has no output-embedding module.
    """
    split = HeadSplit()
    head = _output_head(model)
    if head is None:
        yield split
        return

    def pre_hook(_module, args):
        if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
            return None
        split.hidden = args[0]
        raise HeadReached

    handle = head.register_forward_pre_hook(pre_hook)
    try:
        yield split
    finally:
        handle.remove()
