"""The instruction-verb analysis (the paper's Table 3): do tuned heads relate more to instruction verbs?

Per layer group, the share of heads where a verb's word-pair count rises from base to tuned, instruction verbs
vs general verbs, with a Welch t-test.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .head_pairs import HeadsExplanation

logger = logging.getLogger(__name__)

VERBS_FILE = Path(__file__).resolve().parent.parent / "data" / "verbs.json"
LAYER_GROUPS = ("first", "middle", "last")


def load_verbs(path: str | Path | None = None) -> tuple[list[str], list[str]]:
    """Instruction and general verbs from ``data/verbs.json`` (keys ``instruction_verbs``,
    ``general_verbs``)."""
    path = Path(path) if path is not None else VERBS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"verb list {path} not found; pass instruction_verbs=[...] and general_verbs=[...] explicitly"
        )
    data = json.loads(path.read_text())
    try:
        return [str(v) for v in data["instruction_verbs"]], [str(v) for v in data["general_verbs"]]
    except KeyError as exc:
        raise ValueError(
            f"{path} lacks the key {exc}; it needs 'instruction_verbs' and 'general_verbs'"
        ) from None


def layer_groups(num_layers: int) -> dict[str, list[int]]:
    """Split layers into first / middle / last thirds (earlier groups get the extra layer)."""
    parts = np.array_split(np.arange(num_layers), 3)
    return {name: [int(i) for i in part] for name, part in zip(LAYER_GROUPS, parts)}


@dataclass
class VerbAnalysis:
    """Share of heads where a verb's count rises from base to tuned, per layer group.

    Attributes:
        groups: layer indices of each group (first / middle / last third).
        verb_shares: ``{group: {verb: share}}`` for every verb of both lists.
        instruction_mean / general_mean: ``{group: mean share}`` over the verbs of each list.
        t_stat / p_value: ``{group: Welch t-test}`` of instruction-verb shares against general-verb shares
            (two-sided; t > 0 means instruction verbs rise in more heads).
        instruction_verbs / general_verbs: the lists used.
        heads_per_group: number of heads in each group.
    """

    groups: dict[str, list[int]]
    verb_shares: dict[str, dict[str, float]]
    instruction_mean: dict[str, float]
    general_mean: dict[str, float]
    t_stat: dict[str, float]
    p_value: dict[str, float]
    instruction_verbs: list[str]
    general_verbs: list[str]
    heads_per_group: dict[str, int]


def _count_table(expl: HeadsExplanation, verbs: Sequence[str]) -> dict[tuple[int, int], list[int]]:
    out = {}
    for h in expl.heads:
        counts = h.word_counts()
        out[(h.layer, h.head)] = [counts.get(v.lower(), 0) for v in verbs]
    return out


def verb_analysis(
    base: HeadsExplanation,
    tuned: HeadsExplanation,
    instruction_verbs: Sequence[str] | None = None,
    general_verbs: Sequence[str] | None = None,
) -> VerbAnalysis:
    """Per layer group, the share of heads where each verb's count rises from base to tuned; Welch t-test.

    Args:
        base, tuned: word-pair explanations of the same architecture (same layers x heads).
        instruction_verbs, general_verbs: verb lists; when both are None, ``data/verbs.json`` is read.
    """
    from scipy.stats import ttest_ind

    if instruction_verbs is None and general_verbs is None:
        instruction_verbs, general_verbs = load_verbs()
    if not instruction_verbs or not general_verbs:
        raise ValueError("need non-empty instruction_verbs and general_verbs lists")
    if (base.num_layers, base.num_heads) != (tuned.num_layers, tuned.num_heads):
        raise ValueError(
            f"base has {base.num_layers} x {base.num_heads} heads but tuned has {tuned.num_layers} x "
            f"{tuned.num_heads}; compare two models of the same architecture"
        )
    verbs = list(dict.fromkeys([*instruction_verbs, *general_verbs]))
    cb, ct = _count_table(base, verbs), _count_table(tuned, verbs)
    if set(cb) != set(ct):
        raise ValueError(
            "base and tuned explanations cover different heads; explain every head of both models"
        )
    groups = layer_groups(base.num_layers)
    shares: dict[str, dict[str, float]] = {}
    imean, gmean, tstat, pval, nheads = {}, {}, {}, {}, {}
    for name, layers in groups.items():
        keys = [key for key in cb if key[0] in layers]
        nheads[name] = len(keys)
        if not keys:
            shares[name] = {v: math.nan for v in verbs}
        else:
            rises = np.array([[t > b for b, t in zip(cb[key], ct[key])] for key in keys], dtype=float)
            shares[name] = dict(zip(verbs, rises.mean(0).tolist()))
        a = np.array([shares[name][v] for v in instruction_verbs])
        g = np.array([shares[name][v] for v in general_verbs])
        imean[name], gmean[name] = float(a.mean()), float(g.mean())
        # Welch's t is undefined with fewer than two verbs per list or when neither list varies
        if keys and len(a) > 1 and len(g) > 1 and (np.ptp(a) > 0 or np.ptp(g) > 0):
            with warnings.catch_warnings():
                # a list whose verbs all share one value is common here (and Welch's t stays defined);
                # scipy flags it as "precision loss", which is not a problem for exact shares
                warnings.filterwarnings("ignore", message="Precision loss", category=RuntimeWarning)
                res = ttest_ind(a, g, equal_var=False)
            tstat[name], pval[name] = float(res.statistic), float(res.pvalue)
        else:
            tstat[name], pval[name] = math.nan, math.nan
    return VerbAnalysis(
        groups=groups,
        verb_shares=shares,
        instruction_mean=imean,
        general_mean=gmean,
        t_stat=tstat,
        p_value=pval,
        instruction_verbs=list(instruction_verbs),
        general_verbs=list(general_verbs),
        heads_per_group=nheads,
    )
