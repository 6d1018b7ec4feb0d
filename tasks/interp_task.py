"""Shim for lm-eval's `!function` loader, which imports a .py file beside the YAML rather than
a package.

Importing it registers the `interp-hf` model too, which is what makes the stock
`lm_eval --model interp-hf --tasks path/to/interp_instruct.yaml` work. Written by
lm_interp_plugin.harness.variants.
"""

import lm_interp_plugin.harness.model  # noqa: F401  (registers interp-hf)
from lm_interp_plugin.harness.tasks import InterpTask  # noqa: F401
from lm_interp_plugin.harness.variants import InterpVariant  # noqa: F401
