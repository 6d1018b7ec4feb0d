"""Instruction attention reduced layer by layer inside the model's own forward: no ``seq x seq`` tensor kept.

The per-example instruction attention (`attention.instruction_attention`) needs, per layer and head, only the
attention probability that the target query rows put on the instruction keys. Collecting every layer's full
probabilities (``output_attentions``) forces eager attention for the whole pass, and at a 4k prompt on a 7B
model that is ~77 GB per example. This probe instead reduces each layer to ``heads`` numbers as the layer
runs, and leaves the attention computation itself to the model's implementation:

* under ``eager`` the attention module already returns its probabilities: a forward hook slices the target
  rows and reduces them before the next layer runs (values identical to the full tensor's);
* under any other implementation (SDPA, flash, flex) the registered attention function of that name is
  wrapped in place, for the one primal forward: the wrapper calls the original for the output and, without
  grad,
  recomputes the probabilities of the target query rows only from the layer's queries and keys (eager's
  arithmetic: scaled ``q k^T``, soft-capping, the mask, float32 softmax): ``heads x N x seq`` per layer.

Exactness: the recomputation follows eager attention for everything transformers passes through the interface:
the scaling, soft-capping (Gemma 2), the 4-D mask (sliding windows, chunked attention: both arrive in the
mask;
without a mask tensor the causal pattern and ``sliding_window`` are rebuilt), additive position biases, and
attention sinks (GPT-OSS's ``s_aux``: one extra logit per head in the softmax, dropped after it). Hybrid
models are measured on their softmax layers only; the result's ``layers`` names each row's model layer.

So the gradient passes run under SDPA/flash. Forward mode (JVP) still needs eager (no forward-mode
derivative for the fused kernels); there the hook path applies. Which modules are the attention modules comes
from `arch` (the only place that names them); the attention function finds its probe on the module.

Shapes: ``layers x heads`` for the result; queries ``batch x heads x seq x head_dim``, keys
``batch x kv_heads x seq x head_dim`` as transformers' `AttentionInterface` passes them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..arch import UnsupportedArchitectureError, get_adapter
from .attention import InstructionAttention, from_mass

logger = logging.getLogger(__name__)

_SAID: set[str] = set()


def log_once(key: str, message: str, *args: Any, level: int = logging.WARNING) -> None:
    """Log `message` the first time `key` is seen in this process (one message per run, not per request)."""
    if key in _SAID:
        return
    _SAID.add(key)
    logger.log(level, message, *args)


class NoAttentionError(UnsupportedArchitectureError):
    """The model has no softmax attention layer (state-space or linear-attention only): attention does not
    apply."""


class OutsideInterfaceError(UnsupportedArchitectureError):
    """The model's softmax attention does not go through transformers' AttentionInterface (eager fallback)."""


_SLOT = "_lm_interp_attention_probe"  # attribute set on each attention module while a probe is active


class AttentionProbeError(RuntimeError):
    """The probe did not see every layer (a family whose attention bypasses transformers' interface)."""


@contextlib.contextmanager
def _wrapped(base: str) -> Iterator[None]:
    """Wrap the registered attention function `base` in place for the duration: the model keeps its own
    implementation name (families branch on it, e.g. sparse-index masks only under ``eager``/``sdpa``), and
    each call whose module carries a probe reports the layer's queries and keys to it."""
    from transformers import AttentionInterface

    functions = AttentionInterface()
    if base not in functions:
        raise AttentionProbeError(f"attention implementation {base!r} is not registered in transformers")
    original = functions[base]
    original = getattr(original, "_lm_interp_original", original)  # never wrap twice

    def probed(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        **kwargs,
    ):
        out = original(module, query, key, value, attention_mask, **kwargs)
        slot = getattr(module, _SLOT, None)
        if slot is not None:
            probe, layer = slot
            try:
                with torch.no_grad():
                    probe._from_queries(layer, query, key, attention_mask, kwargs)
            except Exception as err:
                probe._errors[layer] = f"{type(err).__name__}: {err}"[:300]
        return out

    probed._lm_interp_original = original  # type: ignore[attr-defined]
    AttentionInterface.register(base, probed)
    try:
        yield
    finally:
        AttentionInterface.register(base, original)


class InstructionAttentionProbe:
    """Per layer x head instruction mass of the target query rows, measured during one forward.

    Args:
        model: a Hugging Face causal LM of a family `arch` supports.
        instruction_mask: one bool per prompt token (``prompt_len``), true on instruction tokens.
        query_positions: the query rows to average over (`attention.target_query_positions`).
    """

    def __init__(self, model: nn.Module, instruction_mask: Tensor, query_positions: Sequence[int]):
        adapter = get_adapter(model)
        self.model = model
        if not adapter.attention_layers:
            raise NoAttentionError(
                f"{type(model).__name__} has no softmax attention layer (mixers: "
                f"{sorted(set(adapter.linear_layers().values()))}); instruction attention does not apply"
            )
        if not adapter.probe_layers:
            raise OutsideInterfaceError(
                f"the attention of {type(model).__name__} does not go through transformers' "
                "AttentionInterface"
            )
        outside = sorted(set(adapter.attention_layers) - set(adapter.probe_layers))
        if outside:
            log_once(
                f"outside:{type(model).__name__}",
                "instruction attention leaves out layers %s of %s: their attention does not go through "
                "transformers' AttentionInterface",
                outside,
                type(model).__name__,
            )
        #: model layer index of each measured row
        self.layers = list(adapter.probe_layers)
        self.modules = [adapter.attention_module(layer) for layer in self.layers]
        self.mask = torch.as_tensor(instruction_mask).bool().flatten()
        if not bool(self.mask.any()):
            raise ValueError("instruction_mask marks no instruction token")
        self.positions = [int(p) for p in query_positions]
        self._mass: dict[int, Tensor] = {}
        self._errors: dict[int, str] = {}  # row -> why it could not be measured
        self._keys: dict[torch.device, Tensor] = {}  # the instruction mask on each device it is needed
        self._row_index: dict[torch.device, Tensor] = {}

    def _rows(self, device: torch.device) -> Tensor:
        """The query positions as an index tensor on `device`, copied there once (a host copy per layer would
        stall the forward)."""
        rows = self._row_index.get(device)
        if rows is None:
            rows = self._row_index[device] = torch.as_tensor(self.positions, device=device)
        return rows

    # -- reductions ----------------------------------------------------------------------------------------
    def _reduce(self, layer: int, rows: Tensor) -> None:
        """`rows`: probabilities ``batch x heads x targets x keys`` (batch 1) -> instruction mass per head."""
        prompt_len = self.mask.numel()
        keys = self._keys.get(rows.device)
        if keys is None:
            keys = self._keys[rows.device] = self.mask.to(device=rows.device, dtype=torch.float32)
        mass = (rows[0, :, :, :prompt_len].float() * keys).sum(-1).mean(-1)
        self._mass[layer] = mass.detach()  # stays on the device: no sync inside the forward

    def _keys_are_tokens(self, layer: int, queries: int, keys: int) -> bool:
        """Key `i` is token `i` only when the layer reads one key per token: a layer that adds compressed or
        memory entries (DeepSeek-V4's compressed KV) has more, and its instruction share per prompt token is
        not defined, so the layer is marked unmeasured (said by `result`) instead of read as if it were."""
        if keys == queries:
            return True
        self._errors[layer] = (
            f"its attention reads {keys} keys for {queries} tokens (entries that are not prompt tokens, such "
            "as compressed key/value blocks), so no key maps to one prompt token"
        )
        return False

    def _from_queries(self, layer: int, query: Tensor, key: Tensor, mask: torch.Tensor, kwargs: dict) -> None:
        """Eager's probabilities of the target rows only, from the layer's (post-rotary) queries and keys."""
        if not self._keys_are_tokens(layer, query.shape[-2], key.shape[-2]):
            return
        rows = self._rows(query.device)
        q = query[:, :, rows]
        k = key
        if k.shape[1] != q.shape[1]:  # grouped-query attention: query head h reads key head h // groups
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        scaling = kwargs.get("scaling")
        scaling = q.shape[-1] ** -0.5 if scaling is None else scaling
        scores = torch.matmul(q, k.transpose(-1, -2)) * scaling
        softcap = kwargs.get("softcap")
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        bias = kwargs.get("position_bias")
        if isinstance(bias, Tensor) and bias.dim() == 4:
            scores = scores + bias[:, :, rows, : k.shape[-2]].to(scores.dtype)
        kv = k.shape[-2]
        if isinstance(mask, Tensor) and mask.dim() == 4:
            part = mask[:, :, rows, :kv]
            if part.dtype == torch.bool:
                scores = scores.masked_fill(~part, torch.finfo(scores.dtype).min)
            else:
                scores = scores + part
        else:  # the implementation runs causal without a mask tensor: build it for these rows
            keys = torch.arange(kv, device=q.device)
            allowed = keys[None, :] <= rows[:, None]
            window = kwargs.get("sliding_window")
            if window:
                allowed &= rows[:, None] - keys[None, :] < window
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        sinks = kwargs.get("s_aux", kwargs.get("sinks"))
        if isinstance(sinks, Tensor):  # one extra logit per head, in the softmax and dropped after it
            sink = sinks.to(scores.dtype).reshape(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
            combined = torch.cat([scores, sink], dim=-1)
            combined = combined - combined.max(dim=-1, keepdim=True).values
            probs = torch.softmax(combined, dim=-1, dtype=torch.float32)[..., :-1].to(query.dtype)
        else:
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # as eager rounds them
        self._reduce(layer, probs)

    # -- the context ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Measure during the forward run inside; the model's attention implementation is restored on exit."""
        self._mass.clear()
        self._errors.clear()
        base = getattr(self.model.config, "_attn_implementation", None) or "eager"
        handles = []
        try:
            for row, module in enumerate(self.modules):
                setattr(module, _SLOT, (self, row))
            if base == "eager":  # each family's own eager function returns the probabilities: hook them
                for row, module in enumerate(self.modules):
                    handles.append(module.register_forward_hook(self._hook(row)))
                yield
            else:
                with _wrapped(base):
                    yield
        finally:
            for handle in handles:
                handle.remove()
            for module in self.modules:
                module.__dict__.pop(_SLOT, None)

    def _hook(self, layer: int):
        def hook(_module: torch.nn.Module, _args: tuple[Any, ...], output: Any):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if not isinstance(weights, Tensor) or weights.dim() != 4:  # said by `result`, never a crash here
                self._errors[layer] = "its attention module returned no probabilities under eager attention"
                return
            if not self._keys_are_tokens(layer, weights.shape[-2], weights.shape[-1]):
                return
            rows = self._rows(weights.device)
            with torch.no_grad():
                self._reduce(layer, weights.detach()[:, :, rows])

        return hook

    # -- the result ----------------------------------------------------------------------------------------
    def result(self, top_n: int = 5) -> InstructionAttention:
        """The measured `InstructionAttention`; raises if some layer was not seen."""
        if self._errors:
            row, why = next(iter(sorted(self._errors.items())))
            raise AttentionProbeError(
                f"instruction attention of layer {self.layers[row]} could not be measured: {why}"
            )
        if len(self._mass) != len(self.modules):
            missing = [self.layers[r] for r in range(len(self.modules)) if r not in self._mass]
            raise AttentionProbeError(
                f"the attention probe saw {len(self._mass)} of {len(self.modules)} softmax layers (not "
                f"layers "
                f"{missing}); their attention did not go through transformers' AttentionInterface"
            )
        # one layer at a time to the CPU: under device_map sharding the layers sit on different devices
        rows = [self._mass[row].cpu() for row in range(len(self.modules))]
        if len({tuple(r.shape) for r in rows}) != 1:
            counts = sorted({int(r.numel()) for r in rows})
            raise AttentionProbeError(f"the softmax layers have different head counts {counts}")
        mass = torch.stack(rows)
        share = int(self.mask.sum()) / self.mask.numel()
        result = from_mass(mass, share, self.positions, top_n)
        result.layers = list(self.layers)
        return result
