"""lm-interp: every lm-eval benchmark run becomes an explanation run.

The lm-eval side lives in `lm_interp_plugin.harness` (model ``interp-hf``, ``interp_*`` tasks); this top level
is the Python API for notebooks and other pipelines:

>>> from lm_interp_plugin import attribute, quantise, importance_density, instruction_importance
>>> result = attribute(model, tokenizer, "Translate to French.\\n\\nInput: cat\\n\\nOutput:", " chat")
>>> S = quantise(result.raw)                      # prompt tokens x target tokens, ints 0..L
>>> density = importance_density(S, b=7, p=4)    # per prompt token, max-normalised

Heavy dependencies (torch, transformers, lm-eval) load on first use, so importing the package is cheap.
"""

from __future__ import annotations

from ._version import __version__

__all__ = [
    "Attribution",
    "__version__",
    "attribute",
    "importance_density",
    "instruction_importance",
    "quantise",
]


def __getattr__(name: str):
    if name in ("attribute", "Attribution"):
        from .interpret import api

        return getattr(api, name)
    if name in ("quantise", "importance_density", "instruction_importance"):
        from .methods import importance

        return getattr(importance, name)
    raise AttributeError(f"module 'lm_interp_plugin' has no attribute {name!r}")
