"""Gradient x input attribution of every target token onto every prompt token, batched.

The raw matrix (``prompt_len x target_len``) is

    I[m, n] = < d f(y_n | x, y_<n) / d e_m , e_m >,   f = p (the paper's default) or log p,

with e_m the input embedding of prompt token m. Because the score is a signed sum over the hidden dimension,

* a column I[:, n] is one input-only vector-Jacobian product (reverse mode: a backward from target n), and
* a row I[m, :] is one Jacobian-vector product along e_m at position m (forward mode: the directional
  derivative of every target's score),

so a request costs about min(prompt_len, target_len) passes. Both modes are batched (``is_grads_batched`` for
reverse, ``torch.func.vmap`` over ``jvp`` for forward) and chunked so memory stays bounded; neither computes a
parameter gradient. Forward mode needs an attention implementation with forward-mode derivatives (``eager``);
`harness` runs the interpretation pass under eager attention anyway.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch

logger = logging.getLogger(__name__)

Objective = Literal["prob", "logprob"]
Mode = Literal["auto", "reverse", "forward"]


class AttributionError(ValueError):
    """A request that cannot be attributed (empty prompt, bad shapes, unknown option)."""


@dataclass
class AttributionOutput:
    """Result of one attribution pass.

    Attributes:
        raw: I, ``prompt_len x target_len``, float32 on the CPU.
        target_logprobs: log p(y_n | x, y_<n) per target token (``target_len``), float32 on the CPU.
        mode: the mode that ran (``"reverse"`` or ``"forward"``).
        passes: number of VJPs or JVPs computed (= target_len in reverse, prompt_len in forward mode).
        attentions: attention probabilities of the primal forward, ``layers x heads x seq x seq`` (seq =
            prompt_len + target_len - 1), when requested; else None.
    """

    raw: torch.Tensor
    target_logprobs: torch.Tensor
    mode: str
    passes: int
    attentions: torch.Tensor | None = None


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


def choose_mode(prompt_len: int, target_len: int, mode: Mode = "auto") -> str:
    """The cheaper exact mode: reverse when the target is shorter than the prompt, forward otherwise."""
    if mode not in ("auto", "reverse", "forward"):
        raise AttributionError(f"unknown attribution mode {mode!r}; use 'auto', 'reverse' or 'forward'")
    if mode != "auto":
        return mode
    return "reverse" if target_len <= prompt_len else "forward"


def default_chunk_size(model: torch.nn.Module, seq_len: int) -> int:
    """How many VJPs/JVPs to batch at once: from free device memory on a GPU, a fixed 8 on a CPU (measured best).

    On a GPU one batched pass holds roughly the activations of one forward per batch row; we budget a third of
    the free memory for them.
    """
    param = next(model.parameters())
    if param.device.type != "cuda":
        return 8  # benchmarks/RESULTS.md: 8 ties the frozen loop on CPU, 32 is ~8% slower
    free, _ = torch.cuda.mem_get_info(param.device)
    cfg = getattr(model, "config", None)
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0) or 4096)
    layers = int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0) or 32)
    per_row = max(1, seq_len * hidden * layers * 16 * param.element_size())
    return int(max(1, min(512, free // 3 // per_row)))


def _target_scores(
    model: torch.nn.Module,
    prompt_embeds: torch.Tensor,
    target_embeds: torch.Tensor,
    target_ids: torch.Tensor,
    objective: Objective,
    output_attentions: bool = False,
):
    """f(y_n) for each target token from one forward; the LM head runs only at the target positions."""
    n_targets = target_ids.shape[0]
    embeds = torch.cat([prompt_embeds, target_embeds], dim=1)
    kwargs = {"inputs_embeds": embeds, "use_cache": False, "logits_to_keep": n_targets}
    if output_attentions:
        kwargs["output_attentions"] = True
    out = model(**kwargs)
    logits = out.logits[0, -n_targets:].float()
    logprobs = logits.log_softmax(-1).gather(-1, target_ids[:, None])[:, 0]
    scores = logprobs.exp() if objective == "prob" else logprobs
    return scores, logprobs, (out.attentions if output_attentions else None)


def gradient_x_input(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    target_ids: torch.Tensor,
    objective: Objective = "prob",
    mode: Mode = "auto",
    chunk_size: int | None = None,
    output_attentions: bool = False,
    capture: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> AttributionOutput:
    """The raw gradient x input matrix of `target_ids` onto `prompt_ids` (1-D token id tensors).

    Args:
        model: a Hugging Face causal LM (any family; only its generic API is used).
        prompt_ids: ``prompt_len`` ids, BOS included where the tokenizer adds one.
        target_ids: ``target_len`` ids of the continuation, as the model scored them.
        objective: ``"prob"`` (the paper) or ``"logprob"``.
        mode: ``"reverse"`` (one VJP per target), ``"forward"`` (one JVP per prompt token) or ``"auto"``.
        chunk_size: VJPs/JVPs per batched pass; default from `default_chunk_size`.
        output_attentions: also return the attention probabilities of the primal forward (needs eager
            attention; under SDPA transformers returns none).
        capture: a factory of a context manager entered around exactly the one primal forward (for hooks
            that record FFN outputs, say); it never sees the batched derivative passes.
    """
    if objective not in ("prob", "logprob"):
        raise AttributionError(f"unknown objective {objective!r}; use 'prob' (the paper) or 'logprob'")
    if prompt_ids.ndim != 1 or target_ids.ndim != 1:
        raise AttributionError("prompt_ids and target_ids must be 1-D tensors of token ids")
    prompt_len, target_len = int(prompt_ids.shape[0]), int(target_ids.shape[0])
    if prompt_len == 0:
        raise AttributionError("the prompt is empty: there is nothing to attribute to")
    device = next(model.parameters()).device
    if target_len == 0:
        return AttributionOutput(
            raw=torch.zeros(prompt_len, 0), target_logprobs=torch.zeros(0), mode="none", passes=0
        )
    run_mode = choose_mode(prompt_len, target_len, mode)
    prompt_ids, target_ids = prompt_ids.to(device), target_ids.to(device)
    chunk = chunk_size or default_chunk_size(model, prompt_len + target_len)
    capture = capture or contextlib.nullcontext

    with frozen_parameters(model):
        embed = model.get_input_embeddings()
        with torch.no_grad():
            all_embeds = embed(torch.cat([prompt_ids, target_ids[:-1]])[None])
        prompt_embeds = all_embeds[:, :prompt_len].detach()
        target_embeds = all_embeds[:, prompt_len:].detach()
        if run_mode == "reverse":
            raw, logprobs, attentions = _reverse(
                model, prompt_embeds, target_embeds, target_ids, objective, chunk, output_attentions, capture
            )
        else:
            raw, logprobs, attentions = _forward(
                model, prompt_embeds, target_embeds, target_ids, objective, chunk, output_attentions, capture
            )
    return AttributionOutput(
        raw=raw.float().cpu(),
        target_logprobs=logprobs.detach().float().cpu(),
        mode=run_mode,
        passes=target_len if run_mode == "reverse" else prompt_len,
        attentions=attentions,
    )


def _stack_attentions(attentions) -> torch.Tensor | None:
    if attentions is None or any(a is None for a in attentions):
        return None
    return torch.stack([a[0].detach().float() for a in attentions]).cpu()


def _reverse(model, prompt_embeds, target_embeds, target_ids, objective, chunk, output_attentions, capture):
    """Columns: one forward with a graph, then batched input-only VJPs, `chunk` target tokens at a time."""
    leaf = prompt_embeds.clone().requires_grad_(True)
    with torch.enable_grad(), capture():
        scores, logprobs, attentions = _target_scores(
            model, leaf, target_embeds, target_ids, objective, output_attentions
        )
    target_len = scores.shape[0]
    columns = []
    eye = torch.eye(target_len, device=scores.device, dtype=scores.dtype)
    n_chunks = math.ceil(target_len / chunk)
    for i in range(n_chunks):
        rows = eye[i * chunk : (i + 1) * chunk]
        (grads,) = torch.autograd.grad(
            scores, leaf, grad_outputs=rows, is_grads_batched=True, retain_graph=i < n_chunks - 1
        )
        # grads: [chunk, 1, prompt_len, hidden] -> [prompt_len, chunk], accumulated in float32
        columns.append(torch.einsum("cbmh,bmh->mc", grads.float(), leaf.detach().float()))
    return torch.cat(columns, dim=1).detach(), logprobs, _stack_attentions(attentions)


def _forward(model, prompt_embeds, target_embeds, target_ids, objective, chunk, output_attentions, capture):
    """Rows: batched JVPs, each along e_m at position m, `chunk` prompt tokens at a time."""
    from torch.func import jvp, vmap

    prompt_len, hidden = prompt_embeds.shape[1], prompt_embeds.shape[2]
    with torch.no_grad(), capture():
        _, logprobs, attentions = _target_scores(
            model, prompt_embeds, target_embeds, target_ids, objective, output_attentions
        )

    def scores_of(prompt):
        return _target_scores(model, prompt, target_embeds, target_ids, objective)[0]

    def directional(tangent):
        return jvp(scores_of, (prompt_embeds,), (tangent,))[1]

    rows = []
    for start in range(0, prompt_len, chunk):
        idx = torch.arange(start, min(start + chunk, prompt_len), device=prompt_embeds.device)
        tangents = torch.zeros(len(idx), 1, prompt_len, hidden, device=prompt_embeds.device,
                               dtype=prompt_embeds.dtype)
        tangents[torch.arange(len(idx)), 0, idx] = prompt_embeds[0, idx]
        try:
            with torch.no_grad():
                rows.append(vmap(directional)(tangents).float())
        except NotImplementedError as err:
            raise AttributionError(
                "forward-mode attribution needs an attention implementation with forward-mode derivatives "
                f"({err}); run it under eager attention (lm_interp_plugin.attribute does) or use mode='reverse'"
            ) from err
    return torch.cat(rows, dim=0), logprobs, _stack_attentions(attentions)


def reference_gradient_x_input(
    model: torch.nn.Module, prompt_ids: torch.Tensor, target_ids: torch.Tensor, objective: Objective = "prob"
) -> torch.Tensor:
    """The paper's loop, for tests and benchmarks: one forward, then one backward per target token.

    Parameter gradients are left as the model has them (the paper's code computes them too).
    """
    device = next(model.parameters()).device
    prompt_ids, target_ids = prompt_ids.to(device), target_ids.to(device)
    embed = model.get_input_embeddings()
    with torch.no_grad():
        all_embeds = embed(torch.cat([prompt_ids, target_ids[:-1]])[None])
    leaf = all_embeds[:, : len(prompt_ids)].clone().requires_grad_(True)
    scores, _, _ = _target_scores(model, leaf, all_embeds[:, len(prompt_ids):], target_ids, objective)
    columns = []
    for n in range(len(target_ids)):
        (grad,) = torch.autograd.grad(scores[n], leaf, retain_graph=n < len(target_ids) - 1)
        columns.append((grad.float() * leaf.detach().float()).sum(-1)[0])
    model.zero_grad(set_to_none=True)
    return torch.stack(columns, dim=1).detach().cpu()
