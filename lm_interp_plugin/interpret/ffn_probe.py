"""Per-example FFN concept activation, recorded inside the interpretation pass (no extra forward).

The model's FFN components (PCA of each layer's value vectors) and their concept labels are computed once per
model and cached on disk (`explain.ffn_cache.load_or_compute_concepts`); during the pass's one primal forward,
hooks on each layer's MLP record its output, and `metrics` turns the outputs at the target positions into a
distribution over components and over concept categories.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import metric_names as names
from ..arch import get_adapter
from ..explain.ffn_cache import load_or_compute_concepts
from ..methods.concepts import OTHER, load_lexicons
from ..methods.ffn import concept_activation, concept_shares

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


class FFNProbe:
    """Hooks and per-example concept metrics for one model (see module docstring); a `probes.Probe`."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        k: int,
        cache_dir: str | Path,
        model_identity: str,
    ):
        components, labels = load_or_compute_concepts(
            model, tokenizer, k=k, cache_dir=cache_dir, model_identity=model_identity, progress=False
        )
        self._setup(model, components, labels)

    def _setup(self, model: torch.nn.Module, components: list, labels: list) -> None:
        self.adapter = get_adapter(model)
        self.components, self.labels = components, labels
        self.concepts = [*load_lexicons()["task_concepts"].keys(), OTHER]
        self._outputs: dict[int, torch.Tensor] = {}

    @classmethod
    def from_parts(cls, model: torch.nn.Module, components: list, labels: list) -> FFNProbe:
        """A probe from components and labels already at hand (benchmarks, tests): no cache, no tokenizer.

        `components[layer].components` is ``k x d_model``; `labels[layer]` holds k objects with ``.concept``.
        """
        probe = cls.__new__(cls)
        probe._setup(model, components, labels)
        return probe

    @contextlib.contextmanager
    def capture(self, keep_last: int | None = None) -> Iterator[None]:
        """Record every layer's MLP output during the forward run inside (hooks removed on exit); with
        `keep_last` only the last positions (those `metrics` reads), not ``seq x hidden`` per layer."""
        self._outputs.clear()
        handles = []

        def hook_for(layer: int) -> Callable[[torch.nn.Module, tuple[Any, ...], Any], None]:
            def hook(_module: torch.nn.Module, _inputs: tuple[Any, ...], output: Any) -> None:
                out = output[0] if isinstance(output, tuple) else output
                out = out.detach()
                self._outputs[layer] = out[:, -keep_last:] if keep_last else out

            return hook

        try:
            for layer in range(self.adapter.num_layers):
                handles.append(self.adapter.mlp_module(layer).register_forward_hook(hook_for(layer)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def metrics(self, target_len: int) -> tuple[dict[str, float], dict[str, Any]]:
        """Concept shares (mean over layers) as scalars; per-layer distributions for the record (from the
        last `capture`)."""
        if len(self._outputs) != self.adapter.num_layers:
            raise RuntimeError(f"FFN hooks recorded {len(self._outputs)} of {self.adapter.num_layers} layers")
        outputs = [self._outputs[layer] for layer in range(self.adapter.num_layers)]
        self._outputs.clear()
        return self.metrics_from(outputs, target_len)

    def metrics_from(
        self, outputs: Sequence[torch.Tensor], target_len: int
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """The same from FFN outputs captured elsewhere (the pass's ``mlp_out``): one ``1 x >=target_len x
        hidden`` tensor per layer."""
        if len(outputs) != self.adapter.num_layers:
            raise RuntimeError(f"got FFN outputs of {len(outputs)} of {self.adapter.num_layers} layers")
        distributions, layer_shares = [], []
        for layer in range(self.adapter.num_layers):
            layer_out = outputs[layer][0, -target_len:].float()  # the positions that predict the targets
            comps = self.components[layer].components.to(layer_out.device, torch.float32)
            dist = concept_activation(layer_out, comps)
            labels = [label.concept for label in self.labels[layer]]
            distributions.append([float(x) for x in dist])
            layer_shares.append(concept_shares(dist, labels, self.concepts))
        mean_shares = {c: sum(s[c] for s in layer_shares) / len(layer_shares) for c in self.concepts}
        scalars = {names.FFN_CONCEPT_PREFIX + c: float(v) for c, v in mean_shares.items()}
        detail = {
            "component_distribution": distributions,
            "layer_concept_shares": layer_shares,
            "concept_shares": mean_shares,
            "component_labels": [[label.concept for label in layer] for layer in self.labels],
        }
        return scalars, detail
