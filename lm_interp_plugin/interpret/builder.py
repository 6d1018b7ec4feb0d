"""`build_pass`: the one way to set up interpretation passes for a model, used by interp-hf and `attribute()`.

It resolves what the pass needs beyond the request, once per model: the neutral token of the ablation, BOS
(kept by deletion curves) and the pad token, from the model's config or else its tokenizer (Llama-3 and
Mistral hub configs set no pad token); and the model's FFN components for the FFN concepts (cached on disk,
built on first use). So notebooks get every signal interp-hf computes, and neither caller assembles a pass.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..arch import UnsupportedArchitectureError
from .context import PassResult, TokenRoles
from .ffn_probe import FFNProbe
from .passes import run_pass
from .settings import InterpSettings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

CACHE_ENV = "LM_INTERP_CACHE"


def default_cache_dir() -> Path:
    """Where `attribute()` keeps FFN components between calls: ``$LM_INTERP_CACHE`` or
    ``~/.cache/lm_interp`` (``$XDG_CACHE_HOME`` honoured)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lm_interp"


def _first_id(*candidates: object) -> int | None:
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def token_roles(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase | None) -> TokenRoles:
    """Neutral, BOS and pad ids: the tokenizer's pad (else the config's, else EOS) is the neutral token, as
    interp-hf has always used; BOS and pad from the config, else the tokenizer."""
    config = getattr(model, "config", None)
    tok = tokenizer

    def attr(obj: object, name: str) -> object:
        return getattr(obj, name, None) if obj is not None else None

    pad = _first_id(attr(config, "pad_token_id"), attr(tok, "pad_token_id"))
    return TokenRoles(
        neutral=_first_id(
            attr(tok, "pad_token_id"),
            attr(config, "pad_token_id"),
            attr(tok, "eos_token_id"),
            attr(config, "eos_token_id"),
        ),
        bos=_first_id(attr(config, "bos_token_id"), attr(tok, "bos_token_id")),
        pad=pad,
    )


class InterpretationPass:
    """Passes for one model and one set of settings (see module docstring); `run` interprets one request."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase | None,
        settings: InterpSettings,
        ffn_cache_dir: str | Path | None = None,
        model_identity: str | None = None,
    ) -> None:
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.tokens = token_roles(model, tokenizer)
        self.ffn_cache_dir = Path(ffn_cache_dir) if ffn_cache_dir is not None else None
        self.model_identity = model_identity or str(
            getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        )
        self._ffn_probe: FFNProbe | None = None
        #: what the signals read beyond the request, the same for every pass (a reference model)
        self.resources: dict[str, Any] = {}
        self.ffn_error: str | None = None

    def ffn_probe(self) -> FFNProbe | None:
        """The FFN concept probe, built on first use; None (with a warning once, and `ffn_error`) for a model
        without an adapter, or without a tokenizer to label the components with."""
        if not self.settings.ffn or self.ffn_error:
            return None
        if self._ffn_probe is None:
            if self.tokenizer is None:
                self.ffn_error = "no tokenizer to label the FFN components with"
                return None
            try:
                self._ffn_probe = FFNProbe(
                    self.model,
                    self.tokenizer,
                    k=self.settings.ffn_k,
                    cache_dir=self.ffn_cache_dir or default_cache_dir() / "ffn_components",
                    model_identity=self.model_identity,
                    labeller=self.settings.ffn_labeller,
                )
            except UnsupportedArchitectureError as err:
                self.ffn_error = str(err)
                logger.warning(
                    "FFN concepts disabled for this model (%s); pass interp_ffn=false to silence this", err
                )
                return None
        return self._ffn_probe

    def run(
        self,
        prompt_ids: Sequence[int],
        target_ids: Sequence[int],
        labels: Sequence[str],
        check_fp32: bool = False,
        resources: Mapping[str, Any] | None = None,
    ) -> PassResult:
        """One pass (`passes.run_pass`) with this model's tokens and FFN components; `resources` are this
        request's (a foil choice), on top of the passes' own (`self.resources`: a reference model)."""
        probe = self.ffn_probe()
        result = run_pass(
            self.model,
            prompt_ids,
            target_ids,
            labels,
            self.settings,
            ffn_probe=probe,
            check_fp32=check_fp32,
            tokens=self.tokens,
            resources={**self.resources, **(resources or {})},
        )
        if probe is None and self.settings.ffn:
            result.notes.insert(0, f"no FFN concepts: {self.ffn_error}")
        return result


def build_pass(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    settings: InterpSettings,
    ffn_cache_dir: str | Path | None = None,
    model_identity: str | None = None,
) -> InterpretationPass:
    """Set up the interpretation passes of `model` (see module docstring).

    Args:
        model: any Hugging Face causal LM.
        tokenizer: its tokenizer (tokens the config lacks; the FFN components' word labels).
        settings: what each pass computes.
        ffn_cache_dir: where the FFN components are cached (default: `default_cache_dir`).
        model_identity: the model's name in the cache's file names (default: the config's name or path).
    """
    return InterpretationPass(model, tokenizer, settings, ffn_cache_dir, model_identity)
