"""The capture vocabulary: activations of the pass's one primal forward that a signal can ask for by name.

TransformerLens names hook points (``blocks.{l}.hook_mlp_out``); here a signal names what it needs
(`Signal.needs`) and `CAPTURE_POINTS` resolves the name to modules of the loaded model through its
`arch.ArchAdapter` (the only place that knows module names). The pass registers one forward hook per module
around exactly the primal forward, keeps each output at the last ``target_len`` positions (the ones that
predict the targets), detached, and hands them to the signals as ``ctx.captured[name]``: a list with one
tensor per module (``1 x target_len x width``). A hybrid's mixer (SSM, linear-attention) layers have no
softmax attention, so ``attn_out`` has fewer entries than ``resid_post`` there.

| name | modules | one entry per |
|---|---|---|
| ``mlp_out`` | each FFN (`ArchAdapter.mlp_module`) | layer with an FFN (`ArchAdapter.ffn_layers`) |
| ``attn_out`` | each attention (`ArchAdapter.attention_module`) | attention layer (`attention_layers`) |
| ``logits`` | the output head (``get_output_embeddings``): the next-token logits | model (one) |
| ``resid_post`` | each decoder layer (`ArchAdapter.layers`): the residual stream after the layer | layer |
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from ..arch import ArchAdapter, get_adapter


def _layers(
    module_of: Callable[[ArchAdapter, int], torch.nn.Module],
    which: Callable[[ArchAdapter], list[int]] = lambda adapter: list(range(adapter.num_layers)),
):
    def resolve(model: torch.nn.Module) -> list[torch.nn.Module]:
        adapter = get_adapter(model)
        return [module_of(adapter, layer) for layer in which(adapter)]

    return resolve


def _output_head(model: torch.nn.Module) -> list[torch.nn.Module]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Module):
        raise ValueError(f"{type(model).__name__} has no output head (get_output_embeddings): no logits")
    return [head]


#: name -> the modules whose forward outputs it is, in order (raises `UnsupportedArchitectureError` for a
#: family `arch` does not know)
CAPTURE_POINTS: dict[str, Callable[[torch.nn.Module], list[torch.nn.Module]]] = {
    "mlp_out": _layers(ArchAdapter.mlp_module, lambda adapter: adapter.ffn_layers),
    "attn_out": _layers(ArchAdapter.attention_module, lambda adapter: adapter.attention_layers),
    "logits": _output_head,
    "resid_post": lambda model: get_adapter(model).layers(),
}


def _output_tensor(args: tuple[Any, ...], output: Any) -> torch.Tensor | None:
    """The module's activation (``1 x seq x width``), or None for a call that is not one (a head that is
    also the input embedding, called on token ids)."""
    out = output[0] if isinstance(output, tuple) else output
    if isinstance(out, torch.Tensor) and out.ndim == 2:  # tokens x width (OPT's fc2, Llama 4's MoE)
        out = out.unsqueeze(0)
    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.ndim != 3:
        return None
    if args and isinstance(args[0], torch.Tensor) and not args[0].is_floating_point():
        return None
    return out


@contextlib.contextmanager
def capture(
    model: torch.nn.Module, names: Sequence[str], keep_last: int, into: dict[str, list[torch.Tensor]]
) -> Iterator[None]:
    """Record the named activations during the forward run inside (hooks removed on exit, also on error):
    ``into[name][i]`` is module i's output at the last `keep_last` positions, detached (None if it never ran;
    `context.PassContext.activations` says so). A module called more than once keeps its first call."""
    unknown = [name for name in names if name not in CAPTURE_POINTS]
    if unknown:
        raise ValueError(f"unknown capture point(s) {unknown}; known: {', '.join(CAPTURE_POINTS)}")
    handles = []

    def hook_for(slots: list[torch.Tensor | None], index: int):
        def hook(_module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            out = _output_tensor(args, output)
            if out is not None and slots[index] is None:
                slots[index] = out.detach()[:, -keep_last:]

        return hook

    slots_of: dict[str, list[torch.Tensor | None]] = {}
    try:
        for name in dict.fromkeys(names):
            modules = CAPTURE_POINTS[name](model)
            slots = slots_of[name] = [None] * len(modules)
            for index, module in enumerate(modules):
                handles.append(module.register_forward_hook(hook_for(slots, index)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for name, slots in slots_of.items():
            into[name] = slots  # type: ignore[assignment]  (None where a module never ran)
