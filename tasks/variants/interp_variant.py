"""Shim for lm-eval's `!function` loader: the interp_ variant class (stock config + interpretation)."""

import lm_interp_plugin.harness.model  # noqa: F401  (registers interp-hf)
from lm_interp_plugin.harness.tasks import InterpTask
from lm_interp_plugin.segment import variant_config


class InterpVariant(InterpTask):
    """An installed lm-eval task (metadata.interp.base) with the interpretation metrics."""

    def __init__(self, config=None, **kwargs):
        super().__init__(config=variant_config(config or {}), **kwargs)
