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
FFN_CONCEPT_OTHER = FFN_CONCEPT_PREFIX + "other"  # the share on components of no user-task concept
# whether the instruction was located in the prompt (1/0); the instruction metrics exist only where it was
INSTRUCTION_FOUND = "instruction_found"
# faithfulness signals beside the paper's score
ABLATION_DROP_REMOVED = "ablation_drop_removed"  # log p(target) with the instruction minus without it
ABLATION_DROP_REPLACED = "ablation_drop_replaced"  # ... minus with it replaced by neutral tokens
ABLATION_DROP_REMOVED_PER_TOKEN = "ablation_drop_removed_per_token"  # the removed drop / target length
IG_PREFIX = "ig_"  # + an attribution metric name: the same metric from integrated gradients
IG_COMPLETENESS_ERROR = "ig_completeness_error"  # relative gap of integrated gradients' completeness check
DELETION_AREA_PREFIX = "deletion_area_"  # + method: area of the log-prob drop along the deletion curve
DELETION_GAIN_PREFIX = "deletion_gain_"  # + method: that area's gain over random deletion orders


def is_interp_metric(name: str) -> bool:
    """True for a scalar that lm-interp adds, False for a stock lm-eval metric."""
    return name.startswith(PREFIXES)
