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
`interpret.run_pass` switches to eager for forward mode only: reverse mode runs under the model's own
attention (SDPA/flash), and the instruction attention is reduced layer by layer inside that forward
(`attention_probe`).

LM-head shortcut (default): derivatives stop at the final hidden state. One backward through the LM head gives
d log p_n / d h_n for every target (each target's log-probability depends on the hidden state at its own
position only); reverse mode seeds its batched VJPs with those rows, forward mode contracts its JVPs with
them. No ``[chunk, N, vocab]`` float32 softmax (or its tangent) is formed per chunk; the matrix is the same
(tests).

Memory: the chunk (derivatives per batched pass) comes from a memory budget (`chunk_for_budget`), by default
half the free device memory on a GPU; a chunk that still runs out of memory is halved and retried. Long
prompts can also trade one extra forward per chunk for memory with activation checkpointing
(``checkpoint=True``: only each decoder layer's input is kept for the backward).

Precision: half-precision models run in their own dtype; the scores (log-softmax at the targets) and the
gradient x input products are accumulated in float32, and the derivative is always taken of log p (for the
``prob`` objective the column is multiplied by p afterwards, in float32), so float16 gradients do not
underflow. `interpret.run_pass` re-runs a request in float32
when half precision gives non-finite values, and checks a sample of requests against float32.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .model_state import (
    HeadReached,
    HeadSplit,
    activation_checkpointing,
    frozen_parameters,
    split_at_output_head,
    stop_at_output_head,
)
from .scoring import (
    Objective,
    derivative_scale,
    last_positions_logprobs,
    objective_values,
    token_logprobs,
)

logger = logging.getLogger(__name__)

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
    foil: FoilOutput | None = None
    foil_skipped: str | None = None


@dataclass
class FoilOutput:
    """A second continuation (a multiple-choice foil) attributed in the same pass (`gradient_x_input`'s
    ``foil_ids``): its VJP is one more row of the batched backward, seeded at the final hidden state.

    Attributes:
        raw: ``< d log p(foil) / d e_m, e_m >`` per prompt token (``prompt_len``), log p summed over the
            foil's tokens; float32 on the CPU.
        gold_raw: the same for the target (``< d log p(target) / d e_m, e_m >``: the matrix's columns before
            the ``prob`` objective's scaling by p, summed).
        logprob: log p(foil), summed over its tokens.
    """

    raw: torch.Tensor
    gold_raw: torch.Tensor
    logprob: float


def choose_mode(prompt_len: int, target_len: int, mode: Mode = "auto") -> str:
    """The cheaper exact mode: reverse when the target is shorter than the prompt, forward otherwise."""
    if mode not in ("auto", "reverse", "forward"):
        raise AttributionError(f"unknown attribution mode {mode!r}; use 'auto', 'reverse' or 'forward'")
    if mode != "auto":
        return mode
    return "reverse" if target_len <= prompt_len else "forward"


CPU_CHUNK = 8  # benchmarks/RESULTS.md: at P=128, 8 ties the frozen loop on a CPU, 32 is ~8% slower
CPU_BUDGET = 64 * 2**20  # benchmarks/RESULTS.md: for long prompts chunk 1 (a plain backward) wins on a CPU
MAX_CHUNK = 512


def _config_size(model: torch.nn.Module) -> tuple[int, int, int, int]:
    """(hidden, intermediate, heads, vocab) from the model's config, with generic fallbacks."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg

    def size(*names: str) -> int:
        """The largest value of the first field present (per-layer lists: their largest entry; a per-layer
        attribute that refuses global access counts as absent)."""
        for name in names:
            try:
                value = getattr(cfg, name, None)
            except Exception:  # transformers' heterogeneous per-layer configs raise
                value = None
            if isinstance(value, (list, tuple)):
                value = max((v for v in value if isinstance(v, int)), default=None)
            if isinstance(value, int) and value > 0:
                return value
        return 0

    hidden = size("hidden_size", "n_embd") or 4096
    inter = size("intermediate_size", "n_inner") or 4 * hidden
    heads = size("num_attention_heads", "n_head") or 32
    vocab = size("vocab_size") or 32000
    return hidden, inter, heads, vocab


def _fused_attention(model: torch.nn.Module) -> bool:
    """True when the model runs a fused attention kernel (SDPA, flash): no ``heads x seq x seq`` tensor."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) not in (None, "eager")


def row_bytes(
    model: torch.nn.Module, seq_len: int, target_len: int, head: bool = True, fused_attention: bool = False
) -> int:
    """Estimated peak bytes one batched derivative row adds (one VJP or JVP).

    A batched backward (or tangent-carrying forward) works through one layer at a time, so one row holds about
    one layer's activations: a few ``seq x hidden`` tensors, the MLP's ``seq x intermediate``, eager
    attention's ``heads x seq x seq`` probabilities (not with `fused_attention`: SDPA/flash keep O(seq)); plus
    (`head`) the float32 log-softmax over the vocabulary at the target positions (not with the LM-head
    shortcut).
    """
    hidden, inter, heads, vocab = _config_size(model)
    element = next(model.parameters()).element_size()
    attention = 0 if fused_attention else 2 * heads * seq_len * seq_len
    layer = (8 * seq_len * hidden + 3 * seq_len * inter + attention) * element
    softmax = 3 * target_len * vocab * 4 if head else 0
    return int(layer + softmax)


def chunk_for_budget(
    model: torch.nn.Module,
    seq_len: int,
    target_len: int,
    budget_bytes: int,
    head: bool = True,
    fused_attention: bool = False,
) -> int:
    """Derivatives per batched pass that fit `budget_bytes` (at least 1, at most 512)."""
    row = row_bytes(model, seq_len, target_len, head, fused_attention)
    return int(max(1, min(MAX_CHUNK, budget_bytes // max(1, row))))


def default_chunk_size(
    model: torch.nn.Module,
    seq_len: int,
    target_len: int = 1,
    memory_budget: int | None = None,
    head: bool = True,
) -> int:
    """How many VJPs/JVPs to batch at once.

    With `memory_budget` (bytes): what fits it (the conservative estimate: eager attention, LM head).
    Otherwise on a GPU half of the free memory (asked after the primal forward, so its graph is already
    counted), with the estimate of what actually runs: no ``heads x seq x seq`` term under a fused attention
    kernel, no vocabulary term when the LM-head shortcut is on (`head` False). On a CPU wide batches measured
    slower (no parallel hardware to fill, the working set falls out of cache): at most 8, and fewer when a
    row is large (long prompts), so that a batch stays within `CPU_BUDGET`.
    """
    param = next(model.parameters())
    if memory_budget is not None:
        return chunk_for_budget(model, seq_len, target_len, memory_budget)
    if param.device.type != "cuda":
        # the layer's working set decides (measured); the vocabulary term did not slow chunk 8 at N=128..512
        return min(CPU_CHUNK, chunk_for_budget(model, seq_len, target_len, CPU_BUDGET, head=False))
    free, _ = torch.cuda.mem_get_info(param.device)
    return chunk_for_budget(model, seq_len, target_len, free // 2, head, _fused_attention(model))


def _is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def _chunked(
    run_chunk: Callable[[int, int], torch.Tensor], total: int, chunk: int, what: str
) -> list[torch.Tensor]:
    """Run `run_chunk(start, stop)` over ``range(total)`` in chunks; halve the chunk on out-of-memory and
    retry."""
    parts, start = [], 0
    while start < total:
        stop = min(start + chunk, total)
        try:
            parts.append(run_chunk(start, stop))
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not _is_out_of_memory(err) or chunk == 1:
                raise
            chunk = max(1, chunk // 2)
            logger.warning(
                "attribution: out of memory with %d %s per pass; retrying with %d", stop - start, what, chunk
            )
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start = stop
    return parts


def _target_scores(
    model: torch.nn.Module,
    prompt_embeds: torch.Tensor,
    target_embeds: torch.Tensor,
    target_ids: torch.Tensor,
    objective: Objective,
    output_attentions: bool = False,
    sequence_ids: torch.Tensor | None = None,
):
    """f(y_n) for each target token from one forward (`scoring`: the LM head only at the target positions);
    `sequence_ids` (``1 x seq``, prompt + y_<N) are fed beside the embeddings (`scoring.embedding_output`)."""
    extra = {"output_attentions": True} if output_attentions else {}
    logprobs, out = last_positions_logprobs(
        model, torch.cat([prompt_embeds, target_embeds], dim=1), target_ids, input_ids=sequence_ids, **extra
    )
    logprobs = logprobs[0]
    return objective_values(logprobs, objective), logprobs, (out.attentions if output_attentions else None)


def gradient_x_input(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    target_ids: torch.Tensor,
    objective: Objective = "prob",
    mode: Mode = "auto",
    chunk_size: int | None = None,
    output_attentions: bool = False,
    capture: Callable[[], contextlib.AbstractContextManager] | None = None,
    memory_budget: int | None = None,
    checkpoint: bool = False,
    head_shortcut: bool = True,
    foil_ids: torch.Tensor | None = None,
) -> AttributionOutput:
    """The raw gradient x input matrix of `target_ids` onto `prompt_ids` (1-D token id tensors).

    Args:
        model: a Hugging Face causal LM (any family; only its generic API is used).
        prompt_ids: ``prompt_len`` ids, BOS included where the tokenizer adds one.
        target_ids: ``target_len`` ids of the continuation, as the model scored them.
        objective: ``"prob"`` (the paper) or ``"logprob"``.
        mode: ``"reverse"`` (one VJP per target), ``"forward"`` (one JVP per prompt token) or ``"auto"``.
        chunk_size: VJPs/JVPs per batched pass; default from `default_chunk_size` (halved on out-of-memory).
        output_attentions: also return the attention probabilities of the primal forward (needs eager
            attention; under SDPA transformers returns none).
        capture: a factory of a context manager entered around exactly the one primal forward (for hooks
            that record FFN outputs, say); it never sees the batched derivative passes.
        memory_budget: bytes the batched passes may use (sets the chunk when `chunk_size` is None).
        checkpoint: activation checkpointing of the decoder layers (reverse mode; less memory for long
            prompts, one extra forward per chunk).
        head_shortcut: derivatives stop at the final hidden state and use d log p / d h from one backward
            through the LM head: reverse mode seeds its VJPs there (no ``[chunk, N, vocab]`` softmax
            backward per chunk), forward mode contracts its JVPs there (no tangent of the logits). False
            differentiates through the head in every pass (the same matrix; for benchmarks).
        foil_ids: another continuation of the same prompt (a multiple-choice foil, `methods.contrastive`):
            the gradient x input of its summed log p comes back as ``foil`` from the same pass, one more row
            of the batched backward. Its first token is scored by the logits of the target's first position;
            a longer foil continues from the primal forward's prompt key/value cache (its own tokens only are
            forwarded). None with the reason in ``foil_skipped`` where that cannot be done: forward mode, a
            head that cannot be split, a cache that cannot be cut back to the prompt (sliding-window or
            linear-attention layers), activation checkpointing.
    """
    if objective not in ("prob", "logprob"):
        raise AttributionError(f"unknown objective {objective!r}; use 'prob' (the paper) or 'logprob'")
    if prompt_ids.ndim != 1 or target_ids.ndim != 1:
        raise AttributionError("prompt_ids and target_ids must be 1-D tensors of token ids")
    prompt_len, target_len = int(prompt_ids.shape[0]), int(target_ids.shape[0])
    if prompt_len == 0:
        raise AttributionError("the prompt is empty: there is nothing to attribute to")
    device = model.get_input_embeddings().weight.device  # the first shard under device_map
    if target_len == 0:
        return AttributionOutput(
            raw=torch.zeros(prompt_len, 0), target_logprobs=torch.zeros(0), mode="none", passes=0
        )
    run_mode = choose_mode(prompt_len, target_len, mode)
    prompt_ids, target_ids = prompt_ids.to(device), target_ids.to(device)
    seq_len = prompt_len + target_len - 1

    def chunk_now() -> int:  # after the primal forward, so free memory already counts its graph
        return chunk_size or default_chunk_size(model, seq_len, target_len, memory_budget, not head_shortcut)

    capture = capture or contextlib.nullcontext
    checkpointing = (
        activation_checkpointing(model) if checkpoint and run_mode == "reverse" else contextlib.nullcontext()
    )

    with frozen_parameters(model), checkpointing:
        embed = model.get_input_embeddings()
        sequence_ids = torch.cat([prompt_ids, target_ids[:-1]])[None]
        with torch.no_grad():
            all_embeds = embed(sequence_ids)
        prompt_embeds = all_embeds[:, :prompt_len].detach()
        target_embeds = all_embeds[:, prompt_len:].detach()
        args = (model, prompt_embeds, target_embeds, target_ids, objective, chunk_now)
        foil: FoilOutput | str | None = None
        if run_mode == "reverse":
            if foil_ids is not None and checkpoint:
                foil = "activation checkpointing keeps no prompt cache to continue the foil from"
            raw, logprobs, attentions, shared = _reverse(
                *args,
                output_attentions,
                capture,
                head_shortcut,
                sequence_ids=sequence_ids,
                foil_ids=foil_ids if foil is None else None,
            )
            foil = foil or shared
        else:
            raw, logprobs, attentions = _forward(
                *args, output_attentions, capture, head_shortcut, sequence_ids
            )
            if foil_ids is not None:
                foil = "forward mode (JVPs) has no backward to add the foil's row to"
    return AttributionOutput(
        raw=raw.float().cpu(),
        target_logprobs=logprobs.detach().float().cpu(),
        mode=run_mode,
        passes=target_len if run_mode == "reverse" else prompt_len,
        attentions=attentions,
        foil=foil if isinstance(foil, FoilOutput) else None,
        foil_skipped=foil if isinstance(foil, str) else None,
    )


def _stack_attentions(attentions: Sequence[torch.Tensor | None] | None) -> torch.Tensor | None:
    """The ``seq x seq`` probabilities of the layers that returned them (hybrids: the softmax layers; linear
    layers return None or block weights), or None when no layer did."""
    if attentions is None:
        return None
    square = [
        a for a in attentions if isinstance(a, torch.Tensor) and a.dim() == 4 and a.shape[-1] == a.shape[-2]
    ]
    if not square or len({tuple(a.shape[1:]) for a in square}) != 1:
        return None
    # one layer at a time to the CPU: under device_map sharding the layers sit on different devices
    return torch.stack([a[0].detach().float().cpu() for a in square])


def _reverse(
    model: torch.nn.Module,
    prompt_embeds: torch.Tensor,
    target_embeds: torch.Tensor,
    target_ids: torch.Tensor,
    objective: Objective,
    chunk: Callable[[], int],
    output_attentions: bool,
    capture: Callable[[], contextlib.AbstractContextManager] | None,
    shortcut: bool,
    sequence_ids: torch.Tensor | None = None,
    foil_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, FoilOutput | str | None]:
    """Columns: one forward with a graph, then batched input-only VJPs, ``chunk()`` target tokens at a
    time, seeded at the final hidden state (`split_at_output_head`) where the model's head allows it. With
    `foil_ids`, the foil is one more row (`gradient_x_input`); its output, or why it was skipped, is last."""
    leaf = prompt_embeds.clone().requires_grad_(True)
    target_len = int(target_ids.shape[0])
    continuation = foil_ids is not None and foil_ids.numel() > 1
    splitting = split_at_output_head(model) if shortcut else contextlib.nullcontext(HeadSplit())
    extra = {"output_attentions": True} if output_attentions else {}
    if continuation:
        extra["use_cache"] = True  # the prompt's keys and values, with their graph, for the foil's tokens
    with torch.enable_grad(), capture(), splitting as split:
        # differentiate log p, scaled by p afterwards (`derivative_scale`)
        logprobs, out = last_positions_logprobs(
            model, torch.cat([leaf, target_embeds], dim=1), target_ids, input_ids=sequence_ids, **extra
        )
        logprobs = logprobs[0]
    attentions = out.attentions if output_attentions else None
    inputs = leaf.detach().float()
    foil: _Foil | str | None = None
    if split.hidden is not None and split.hidden.requires_grad:
        if foil_ids is not None:  # before `_head_seeds` frees the head's graph
            foil = _foil_rows(model, split, out, leaf, target_len, foil_ids)
        outputs, seeds = _head_seeds(split, logprobs)
    else:  # no separable head: seed at the log-probabilities themselves
        outputs = (logprobs,)
        eye = torch.eye(target_len, device=logprobs.device, dtype=logprobs.dtype)
        seeds = lambda start, stop: (eye[start:stop],)  # noqa: E731
        if foil_ids is not None:
            foil = "the model's output head could not be separated from its body"
    rows = target_len
    if isinstance(foil, _Foil):
        outputs, seeds = foil.extend(outputs, seeds, target_len)
        rows += 1
    else:
        gold_outputs = outputs
        outputs = lambda start, stop: gold_outputs  # noqa: E731

    def columns(start: int, stop: int) -> torch.Tensor:
        # retain_graph always: a chunk halved after out-of-memory must be able to run the backward again
        batch, chunk_outputs = seeds(start, stop), outputs(start, stop)
        one = len(chunk_outputs) == 1  # the targets' rows only: one output, one seed tensor
        if stop - start == 1:  # a plain backward: no vmap machinery for a batch of one
            (grad,) = torch.autograd.grad(
                chunk_outputs[0] if one else chunk_outputs,
                leaf,
                grad_outputs=batch[0][0] if one else [b[0] for b in batch],
                retain_graph=True,
            )
            return torch.einsum("bmh,bmh->m", grad.float(), inputs)[:, None]
        (grads,) = torch.autograd.grad(
            chunk_outputs[0] if one else chunk_outputs,
            leaf,
            grad_outputs=batch[0] if one else list(batch),
            is_grads_batched=True,
            retain_graph=True,
        )
        # grads: [chunk, 1, prompt_len, hidden] -> [prompt_len, chunk], accumulated in float32
        return torch.einsum("cbmh,bmh->mc", grads.float(), inputs)

    parts = torch.cat(_chunked(columns, rows, chunk(), "target tokens"), dim=1).detach()
    unscaled = parts[:, :target_len]
    raw = unscaled * derivative_scale(logprobs, objective)[None, :]
    if isinstance(foil, _Foil):
        foil = FoilOutput(
            raw=parts[:, target_len].float().cpu(),
            gold_raw=unscaled.sum(dim=1).float().cpu(),
            logprob=float(foil.logprob),
        )
    return raw, logprobs, _stack_attentions(attentions), foil


@dataclass
class _Foil:
    """The foil's share of the batched backward: its seed at the final hidden state (its first token, which
    the target's first position predicts) and, for a longer foil, the summed log p of its other tokens from
    a forward continued from the prompt's cache (a scalar output of its own, seeded 1 on the foil's row)."""

    head_seed: torch.Tensor  # [1, kept, hidden]
    #: the continuation's final hidden state and its seed (d log p of the foil's other tokens / d h), or None
    #: for a one-token foil
    rest: tuple[torch.Tensor, torch.Tensor] | None
    logprob: float

    def extend(self, outputs, seeds, target_len: int):
        """Per chunk of rows, the outputs and the seeds of the backward with the foil as row `target_len`
        (the last chunk): the continuation is an output of that chunk only (in the others it would carry
        zero seeds through its graph)."""
        rest, head_seed = self.rest, self.head_seed

        def chunk_outputs(start: int, stop: int) -> tuple[torch.Tensor, ...]:
            return (*outputs, rest[0]) if rest is not None and stop > target_len else tuple(outputs)

        def extended(start: int, stop: int) -> tuple[torch.Tensor, ...]:
            gold_stop = min(stop, target_len)
            hidden = [seeds(start, gold_stop)[0]] if start < gold_stop else []
            if stop <= target_len:
                return (torch.cat(hidden),)
            hidden.append(head_seed[None])
            if rest is None:
                return (torch.cat(hidden),)
            rest_seeds = rest[1].new_zeros((stop - start, *rest[1].shape))
            rest_seeds[-1] = rest[1]
            return (torch.cat(hidden), rest_seeds)

        return chunk_outputs, extended


def _croppable(layer: object) -> bool:
    """A cache layer that `crop` cuts back exactly: a growing key/value layer, a sliding-window one only while
    it still holds every position (nothing evicted yet)."""
    if not getattr(layer, "is_croppable", False):
        return False
    if not getattr(layer, "is_sliding", False):
        return True
    window = getattr(layer, "sliding_window", None)
    return isinstance(window, int) and layer.get_seq_length() < window


def _foil_rows(
    model: torch.nn.Module, split: HeadSplit, out, leaf: torch.Tensor, target_len: int, foil_ids: torch.Tensor
) -> _Foil | str:
    """The foil's seed and continuation (`_Foil`), or why the shared forward cannot score it."""
    foil_ids = foil_ids.to(leaf.device)
    logits = out.logits[0, out.logits.shape[1] - target_len]  # the position that predicts the first token
    first = token_logprobs(logits[None], foil_ids[:1])[0]
    (head_seed,) = torch.autograd.grad(first, split.detached, retain_graph=True)
    logprob = float(first.detach())
    rest = None
    if foil_ids.numel() > 1:
        # transformers >= 5 names the cache `cache` (in and out); earlier versions `past_key_values`
        cache_name = "cache" if "cache" in out else "past_key_values"
        cache = out.get(cache_name) if hasattr(out, "get") else getattr(out, cache_name, None)
        layers = getattr(cache, "layers", None)
        if not layers or not all(map(_croppable, layers)):
            return (
                "the model's key/value cache cannot be cut back to the prompt (linear-attention layers, or "
                "sliding-window layers past their window)"
            )
        if target_len > 1:
            cache.crop(-(target_len - 1))  # drop the target's own positions: the prompt's stay
        with torch.no_grad():
            tail = model.get_input_embeddings()(foil_ids[:-1][None])
        # the LM-head shortcut here too: the batched backward starts at the continuation's final hidden
        # state, seeded with d log p / d h from one backward through the head (no vocabulary-wide softmax
        # backward per row)
        with torch.enable_grad(), split_at_output_head(model) as tail_split:
            rest_lp, _ = last_positions_logprobs(
                model,
                tail,
                foil_ids[1:][None],
                input_ids=foil_ids[:-1][None],
                use_cache=True,
                **{cache_name: cache},
            )
        if tail_split.hidden is None or not tail_split.hidden.requires_grad:
            return "the output head of the foil's continuation could not be separated from the body"
        (rest_seed,) = torch.autograd.grad(rest_lp.sum(), tail_split.detached)
        rest = (tail_split.hidden, rest_seed)
        logprob += float(rest_lp.detach().sum())
    return _Foil(head_seed=head_seed, rest=rest, logprob=logprob)


def _head_seeds(split, logprobs: torch.Tensor):
    """The LM-head shortcut: d log p_n / d h_n for every target n from ONE backward through the head (each
    target's log-probability depends on the final hidden state at its own position only), then a seed per
    target that is zero except at that position. Returns (body outputs, batched seed factory)."""
    logprobs.sum().backward(inputs=[split.detached])  # frees the head's graph; the body's stays
    head_grad = split.detached.grad  # [1, kept, hidden]
    hidden = split.hidden
    target_len = logprobs.shape[0]
    first = hidden.shape[1] - target_len  # the last target_len kept rows predict the targets

    def seeds(start: int, stop: int) -> tuple[torch.Tensor]:
        count = stop - start
        seed = hidden.new_zeros((count, *hidden.shape))
        rows = torch.arange(count, device=hidden.device)
        seed[rows, 0, first + start + rows] = head_grad[0, first + start : first + stop]
        return (seed,)

    return (hidden,), seeds


def _forward(
    model: torch.nn.Module,
    prompt_embeds: torch.Tensor,
    target_embeds: torch.Tensor,
    target_ids: torch.Tensor,
    objective: Objective,
    chunk: Callable[[], int],
    output_attentions: bool,
    capture: Callable[[], contextlib.AbstractContextManager] | None,
    shortcut: bool,
    sequence_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Rows: batched JVPs, each along e_m at position m, ``chunk()`` prompt tokens at a time; with
    `shortcut` the JVPs stop at the final hidden state and are contracted with d log p / d h (one backward
    through the head after the primal forward), so no tangent of the ``[N, vocab]`` logits is formed."""
    from torch.func import jvp, vmap

    prompt_len, hidden = prompt_embeds.shape[1], prompt_embeds.shape[2]
    target_len = target_ids.shape[0]
    # the body builds no graph either way (frozen weights, embeddings without grad); with the shortcut only
    # the head's graph is kept, for its one backward
    splitting = (
        split_at_output_head(model, leaf_grad=True) if shortcut else contextlib.nullcontext(HeadSplit())
    )
    with torch.enable_grad() if shortcut else torch.no_grad(), capture(), splitting as split:
        _, logprobs, attentions = _target_scores(
            model, prompt_embeds, target_embeds, target_ids, objective, output_attentions, sequence_ids
        )
    head_rows = None
    if split.detached is not None and split.detached.requires_grad:
        logprobs.sum().backward(inputs=[split.detached])
        first = split.detached.shape[1] - target_len
        head_rows = split.detached.grad[0, first:].float()  # [N, hidden]: d log p_n / d h_n
    logprobs = logprobs.detach()

    def scores_of(prompt):  # log p; scaled by p afterwards (`derivative_scale`)
        if head_rows is None:
            return _target_scores(model, prompt, target_embeds, target_ids, "logprob", False, sequence_ids)[0]
        with stop_at_output_head(model) as stop:
            try:
                _target_scores(model, prompt, target_embeds, target_ids, "logprob", False, sequence_ids)
            except HeadReached:
                pass
        rows_h = stop.hidden[0, stop.hidden.shape[1] - target_len :]
        return (rows_h.float() * head_rows).sum(-1)  # linear in h: its JVP is <d log p_n / d h_n, dh_n>

    def directional(tangent):
        return jvp(scores_of, (prompt_embeds,), (tangent,))[1]

    def rows(start: int, stop: int) -> torch.Tensor:
        idx = torch.arange(start, stop, device=prompt_embeds.device)
        tangents = torch.zeros(
            len(idx), 1, prompt_len, hidden, device=prompt_embeds.device, dtype=prompt_embeds.dtype
        )
        tangents[torch.arange(len(idx)), 0, idx] = prompt_embeds[0, idx]
        try:
            with torch.no_grad():
                if len(idx) == 1:  # no vmap machinery for a batch of one
                    return directional(tangents[0])[None].float()
                return vmap(directional)(tangents).float()
        except NotImplementedError as err:
            raise AttributionError(
                "forward-mode attribution needs an attention implementation with forward-mode derivatives "
                f"({err}); run it under eager attention (lm_interp_plugin.attribute does) or use "
                "mode='reverse'"
            ) from err

    parts = _chunked(rows, prompt_len, chunk(), "prompt tokens")
    raw = torch.cat(parts, dim=0) * derivative_scale(logprobs, objective)[None, :]
    return raw, logprobs, _stack_attentions(attentions)


def reference_gradient_x_input(
    model: torch.nn.Module, prompt_ids: torch.Tensor, target_ids: torch.Tensor, objective: Objective = "prob"
) -> torch.Tensor:
    """The paper's loop, for tests and benchmarks: one forward, then one backward per target token.

    Parameter gradients are left as the model has them (the paper's code computes them too).
    """
    device = next(model.parameters()).device
    prompt_ids, target_ids = prompt_ids.to(device), target_ids.to(device)
    embed = model.get_input_embeddings()
    sequence_ids = torch.cat([prompt_ids, target_ids[:-1]])[None]
    with torch.no_grad():
        all_embeds = embed(sequence_ids)
    leaf = all_embeds[:, : len(prompt_ids)].clone().requires_grad_(True)
    scores, _, _ = _target_scores(
        model, leaf, all_embeds[:, len(prompt_ids) :], target_ids, objective, False, sequence_ids
    )
    columns = []
    for n in range(len(target_ids)):
        (grad,) = torch.autograd.grad(scores[n], leaf, retain_graph=n < len(target_ids) - 1)
        columns.append((grad.float() * leaf.detach().float()).sum(-1)[0])
    model.zero_grad(set_to_none=True)
    return torch.stack(columns, dim=1).detach().cpu()
