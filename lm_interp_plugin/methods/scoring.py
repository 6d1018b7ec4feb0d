"""The one target scorer: ``log p(y_n | x, y_<n)`` from a causal LM, and the objectives built on it.

Attribution, integrated gradients, ablation and deletion curves all score the same thing, so they share this
code: a float32 log-softmax over the vocabulary at exactly the positions that predict the targets (the LM head
runs only there, through transformers' ``logits_to_keep``), gathered at the target ids. Gradients are always
taken of log p; for the ``prob`` objective (the paper's) the derivative is multiplied by p afterwards, in
float32 (`derivative_scale`): d p / d e = p * d log p / d e, the same value, but a half-precision backward
then carries well-scaled log-prob gradients instead of ones scaled by p (about 1e-5 for a 32k vocabulary),
which underflow in float16.

Every scoring forward is fed ``input_ids`` and the embeddings to differentiate (`embedding_output`): the
input-embedding module's output is swapped for them, so a model whose forward reads its token ids (hash
routing, byte patching, per-layer token embeddings, prepended prompt tokens) runs as it does in lm-eval,
and every family takes the same path. The swapped tensor is what the embedding module returns, so scaling
applied after it (Gemma's ``sqrt(d_model)``) stays in the graph exactly as with ``inputs_embeds``.

Shapes: ``rows x seq`` inputs (``rows x seq x hidden`` embeddings), ``target_len`` (N) targets per row.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

Objective = Literal["prob", "logprob"]
OBJECTIVES: tuple[str, ...] = ("prob", "logprob")


def token_logprobs(logits: Tensor, target_ids: Tensor) -> Tensor:
    """Float32 ``log p`` of `target_ids` under `logits` (``... x N x vocab`` -> ``... x N``).

    The ids follow the logits to their device (the LM head may sit on another device when sharded).
    """
    logp = logits.float().log_softmax(-1)
    ids = target_ids.to(logp.device).expand(logp.shape[:-1])
    return logp.gather(-1, ids[..., None]).squeeze(-1)


def objective_values(logprobs: Tensor, objective: str) -> Tensor:
    """f(y_n): the probability (``prob``) or the log-probability (``logprob``)."""
    return logprobs.exp() if objective == "prob" else logprobs


def derivative_scale(logprobs: Tensor, objective: str) -> Tensor:
    """The float32 factor that turns d log p into d f: p for ``prob``, 1 for ``logprob`` (no grad)."""
    detached = logprobs.detach().float()
    return detached.exp() if objective == "prob" else torch.ones_like(detached)


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def forward_kwargs(model: torch.nn.Module) -> dict[str, Any]:
    """Extra keyword arguments for a scoring forward: no KV cache for HF models (it only costs memory)."""
    config = getattr(model, "config", None)
    return {"use_cache": False} if hasattr(config, "use_cache") else {}


class EmbeddingSwapError(RuntimeError):
    """The model's forward never called its input-embedding module on the ids it was given."""


@contextlib.contextmanager
def embedding_output(model: torch.nn.Module, input_ids: Tensor, inputs_embeds: Tensor) -> Iterator[None]:
    """While active, the one call of ``model.get_input_embeddings()`` on `input_ids` returns `inputs_embeds`.

    The call replaced is the first whose ids end with `input_ids` (a forward that prepends its own prompt
    tokens, CPM-Ant, keeps their embeddings) or, failing that, begin with them (a forward that pads them
    after, Reformer, keeps the padding's embeddings); later calls (a second lookup of the same ids) are
    left alone.
    The tensor returned is a copy (a forward that adds to its embeddings in place, BLT, must not write into
    the caller's tensor); its gradient flows to `inputs_embeds` unchanged.

    Raises:
        EmbeddingSwapError: on leaving, when no call was replaced (the attribution would not reach the
            embeddings), naming the model.
    """
    embed = model.get_input_embeddings()
    width = int(input_ids.shape[-1])
    swapped: list[bool] = []

    def hook(_module: torch.nn.Module, args: tuple, output: Any) -> Any:
        ids = args[0] if args else None
        if swapped or not isinstance(ids, Tensor) or not isinstance(output, Tensor) or ids.dim() != 2:
            return None
        if ids.shape[0] != input_ids.shape[0] or ids.shape[1] < width:
            return None
        start = ids.shape[1] - width
        if not torch.equal(ids[:, start:].to(input_ids), input_ids):
            if not torch.equal(ids[:, :width].to(input_ids), input_ids):
                return None
            start = 0  # padded after the ids (Reformer pads to a multiple of its chunk length)
        swapped.append(True)
        mine = inputs_embeds.to(output.dtype).clone()
        if ids.shape[1] == width:
            return mine
        return torch.cat([output[:, :start], mine, output[:, start + width :]], dim=1)

    handle = embed.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
    if not swapped:
        raise EmbeddingSwapError(
            f"{type(model).__name__}'s forward never called its input embeddings ({type(embed).__name__}, "
            "model.get_input_embeddings()) on the input ids, so the attribution cannot reach the token "
            "embeddings; report this model with its config"
        )


def last_positions_logprobs(
    model: torch.nn.Module,
    inputs_embeds: Tensor,
    target_ids: Tensor,
    trailing: int = 0,
    attention_mask: Tensor | None = None,
    input_ids: Tensor | None = None,
    **kwargs: Any,
) -> tuple[Tensor, Any]:
    """``log p`` of N targets predicted by the positions ``seq - N - trailing .. seq - 1 - trailing`` of every
    row (one forward); returns ``rows x N`` float32 and the model output (for its other fields).

    Attribution feeds ``prompt + y_<N`` (``trailing=0``); integrated gradients feeds the whole target
    (``trailing=1``: the last position predicts nothing). A model without ``logits_to_keep`` returns every
    position's logits; the same positions are read from them.

    With `input_ids` (``1 x seq`` or ``rows x seq``: the tokens the embeddings stand for, or interpolate
    from) the model is fed the ids and the embeddings through `embedding_output`; without, ``inputs_embeds``.
    """
    n = int(target_ids.shape[-1])
    keep = n + trailing
    if _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if input_ids is None:
        out = model(inputs_embeds=inputs_embeds, **{**forward_kwargs(model), **kwargs})
    else:
        ids = input_ids.to(inputs_embeds.device).expand(inputs_embeds.shape[0], -1)
        with embedding_output(model, ids, inputs_embeds):
            out = model(input_ids=ids, **{**forward_kwargs(model), **kwargs})
    logits = out.logits[:, -keep:][:, :n]
    return token_logprobs(logits, target_ids), out


def padded_logprobs(
    model: torch.nn.Module, requests: Sequence[tuple[Tensor, Tensor]], fill: int, device: torch.device
) -> list[Tensor]:
    """Per-token ``log p`` of each (prompt, target) pair, all in one right-padded forward (``input_ids``).

    With right padding and an attention mask a causal model's real tokens keep their unpadded positions, so
    each row equals its single run. The LM head runs only at the positions that predict some row's targets
    (their union), not at every position of every row.
    """
    seqs = [torch.cat([prompt, target]) for prompt, target in requests]
    width = max(s.numel() for s in seqs)
    ids = torch.full((len(seqs), width), fill, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : seq.numel()] = seq
        mask[row, : seq.numel()] = 1
    spans = [(p.numel() - 1, p.numel() + t.numel() - 1) for p, t in requests]
    kept = torch.unique(torch.cat([torch.arange(a, b) for a, b in spans]))
    kwargs: dict[str, Any] = {}
    if _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = kept.to(device)
    logits = model(
        input_ids=ids.to(device), attention_mask=mask.to(device), **forward_kwargs(model), **kwargs
    )
    logits = logits.logits
    out = []
    for row, ((a, b), (_, target)) in enumerate(zip(spans, requests)):
        if logits.shape[1] == width:  # the model returned every position
            rows = logits[row, a:b]
        else:
            rows = logits[row, torch.searchsorted(kept, torch.arange(a, b)).to(logits.device)]
        out.append(token_logprobs(rows, target).cpu())
    return out
