"""`python -m lm_interp_plugin ...` (and `accelerate launch -m lm_interp_plugin ...`) = `lm-interp ...`."""

import sys

from .cli import main

sys.exit(main())
