"""Per-example FFN concept activation, recorded inside the interpretation pass (no extra forward).

The model's FFN components (PCA of each layer's value vectors) and their concept labels are computed once per
model and cached on disk (`explain.ffn_cache.load_or_compute_concepts`); during the pass's one primal forward,
hooks on each layer's MLP record its output, and `metrics` turns the outputs at the target positions into a
distribution over components (label-free) and over concept categories.

A concept is reported per example only when it is valid on the model (`explain.ffn_validity`: its share is
higher on its own ``interp_instruct`` items, measured once per model and labeller, cached beside the
components); the others are left out, each with its reason in the record (``concepts_absent``). With no valid
concept there is no ``ffn_concept_*`` scalar at all (``other`` would be the whole activation).
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
from ..explain.ffn_validity import FFNValidity, load_or_compute_activations, measure_validity
from ..methods.concepts import OTHER, ConceptLabeller, load_lexicons
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
        labeller: str | ConceptLabeller = "lexicon",
    ):
        components, labels, lab = load_or_compute_concepts(
            model,
            tokenizer,
            k=k,
            cache_dir=cache_dir,
            model_identity=model_identity,
            labeller=labeller,
            progress=False,
            return_labeller=True,
        )
        acts, categories = load_or_compute_activations(
            model, tokenizer, components, Path(cache_dir) / f"ffn_validity_{_safe(model_identity)}_k{k}.npz"
        )
        validity = measure_validity(
            acts, categories, [[x.concept for x in layer] for layer in labels], lab.concepts, lab.config()
        )
        for concept, reason in validity.absent().items():
            logger.info("FFN concept %r is not reported per example: %s", concept, reason)
        self._setup(model, components, labels, validity)

    def _setup(
        self, model: torch.nn.Module, components: list, labels: list, validity: FFNValidity | None
    ) -> None:
        self.adapter = get_adapter(model)
        self.components, self.labels, self.validity = components, labels, validity
        every = list(load_lexicons()["task_concepts"])
        valid = every if validity is None else validity.valid_concepts()
        self.concepts = [*valid, OTHER] if valid else []
        self.absent = {} if validity is None else validity.absent()
        self._outputs: dict[int, torch.Tensor] = {}

    @classmethod
    def from_parts(
        cls, model: torch.nn.Module, components: list, labels: list, validity: FFNValidity | None = None
    ) -> FFNProbe:
        """A probe from components and labels already at hand (benchmarks, tests): no cache, no tokenizer.

        `components[layer].components` is ``k x d_model``; `labels[layer]` holds k objects with ``.concept``.
        Without `validity` every lexicon concept is reported: the caller vouches for the labels.
        """
        probe = cls.__new__(cls)
        probe._setup(model, components, labels, validity)
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
                if out.dim() == 2:  # tokens x d_model (OPT's fc2, Llama 4's MoE): one sequence
                    out = out.unsqueeze(0)
                self._outputs[layer] = out[:, -keep_last:] if keep_last else out

            return hook

        try:
            for layer in self.adapter.ffn_layers:
                handles.append(self.adapter.mlp_module(layer).register_forward_hook(hook_for(layer)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def metrics(self, target_len: int) -> tuple[dict[str, float], dict[str, Any]]:
        """Concept shares (mean over layers) as scalars; per-layer distributions for the record (from the
        last `capture`)."""
        layers = self.adapter.ffn_layers
        if len(self._outputs) != len(layers):
            raise RuntimeError(f"FFN hooks recorded {len(self._outputs)} of {len(layers)} FFN layers")
        outputs = [self._outputs[layer] for layer in layers]
        self._outputs.clear()
        return self.metrics_from(outputs, target_len)

    def metrics_from(
        self, outputs: Sequence[torch.Tensor], target_len: int
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """The same from FFN outputs captured elsewhere (the pass's ``mlp_out``): one ``1 x >=target_len x
        hidden`` tensor per layer with an FFN (`ArchAdapter.ffn_layers`; components and labels in the same
        order). Where some layers have no FFN (hybrids) the detail's ``layers`` names each row's model
        layer index."""
        layers = self.adapter.ffn_layers
        if len(outputs) != len(layers):
            raise RuntimeError(f"got FFN outputs of {len(outputs)} of {len(layers)} FFN layers")
        distributions, layer_shares = [], []
        for row in range(len(layers)):
            layer_out = outputs[row][0, -target_len:].float()  # the positions that predict the targets
            comps = self.components[row].components.to(layer_out.device, torch.float32)
            dist = concept_activation(layer_out, comps)
            labels = [label.concept for label in self.labels[row]]
            distributions.append([float(x) for x in dist])
            layer_shares.append(concept_shares(dist, labels, self.concepts))
        mean_shares = {c: sum(s[c] for s in layer_shares) / len(layer_shares) for c in self.concepts}
        scalars = {names.FFN_CONCEPT_PREFIX + c: float(v) for c, v in mean_shares.items()}
        detail = {
            "component_distribution": distributions,
            "layer_concept_shares": layer_shares,
            "concept_shares": mean_shares,
            "component_labels": [[label.concept for label in layer] for layer in self.labels],
            "concepts_absent": dict(self.absent),
        }
        if layers != list(range(self.adapter.num_layers)):
            detail["layers"] = list(layers)
        return scalars, detail


def _safe(identity: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in identity)[-60:]
