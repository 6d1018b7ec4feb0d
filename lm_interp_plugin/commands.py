"""Handlers of lm-interp's own subcommands (argparse namespaces in, exit codes out)."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)
