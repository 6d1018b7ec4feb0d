"""Names of the per-example interpretation scalars, shared by the harness, the tasks and the report.

Every interpretation scalar that lm-interp adds to lm-eval's samples starts with one of `PREFIXES`; anything
else in a sample's `metrics` is a stock lm-eval metric (acc, acc_norm, exact_match, ...). One name per idea
across code, YAML, JSONL and report.
"""

from __future__ import annotations

PREFIXES = ("instruction_", "attribution_", "attention_", "ffn_", "ablation_", "ig_", "deletion_")

# attribution (the paper's score and our normalised companions)
INSTRUCTION_IMPORTANCE = "instruction_importance"  # paper: sum of densities on instruction / log2(2 + n)
ATTRIBUTION_SHARE_PREFIX = "attribution_share_"  # + part: share of the density mass on that prompt part
INSTRUCTION_FOUND = "instruction_found"  # 1 when the prompt has instruction tokens; else the instruction
#                                         metrics are absent for the example (never 0)
# attention
INSTRUCTION_ATTENTION = "instruction_attention"  # mean over layers, heads, targets of mass on instruction
INSTRUCTION_ATTENTION_LIFT = "instruction_attention_lift"  # the same over the uniform share |instr| / M
# FFN concepts
FFN_CONCEPT_PREFIX = "ffn_concept_"  # + concept: share of the concept-activation mass on that concept


def is_interp_metric(name: str) -> bool:
    """True for a scalar that lm-interp adds, False for a stock lm-eval metric."""
    return name.startswith(PREFIXES)
