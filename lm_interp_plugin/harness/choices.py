"""Multiple-choice grouping: the gold answer and its strongest alternative come from separate requests.

lm-eval scores each choice of a multiple-choice document as its own loglikelihood request; the contrastive
attribution of the gold request (`methods.contrastive`) needs the foil, the highest-scoring other choice of
the same document. `foils` groups one batch's requests per (task, doc_id) after the stock scoring and
answers, for each gold request, its foil's continuation and both log-likelihoods, or why there is none.
lm-eval sends every choice of a document in the same ``loglikelihood`` call, so one call's requests suffice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .tasks import tag_of


@dataclass
class Foil:
    """The contrast of one gold request.

    Attributes:
        continuation: the foil choice's continuation text (same context as the gold request).
        logprob_foil / logprob_gold: lm-eval's log-likelihoods of the two choices.
        n_choices: how many choices the document has.
        model_correct: the gold choice scores highest (lm-eval's ``acc`` for this document).
    """

    continuation: str
    logprob_foil: float
    logprob_gold: float
    n_choices: int

    @property
    def model_correct(self) -> bool:
        return self.logprob_gold > self.logprob_foil


def foils(requests: Sequence[Any], results: Sequence[tuple[float, bool]]) -> dict[int, Foil | str]:
    """For every gold request (by ``id``), its `Foil`, or the reason why it has none.

    Args:
        requests: the lm-eval ``Instance``s of one ``loglikelihood`` call.
        results: HFLM's answers, ``(loglikelihood, is_greedy)`` per request, in the same order.
    """
    groups: dict[tuple[str | None, int | None], list[tuple[Any, float]]] = {}
    seen: set[int] = set()
    for req, (logprob, _) in zip(requests, results):
        if id(req) in seen:  # repeats and data-parallel padding send the same Instance twice
            continue
        seen.add(id(req))
        if tag_of(req).role not in ("gold", "choice"):
            continue
        groups.setdefault((req.task_name, req.doc_id), []).append((req, float(logprob)))
    out: dict[int, Foil | str] = {}
    for members in groups.values():
        golds = [(req, lp) for req, lp in members if tag_of(req).role == "gold"]
        if len(golds) != 1:
            for req, _ in golds:
                out[id(req)] = f"{len(golds)} gold choices in this document: the contrast needs exactly one"
            continue
        gold, gold_lp = golds[0]
        others = [(lp, req.idx, req) for req, lp in members if req is not gold]
        if not others:
            out[id(gold)] = "the document has a single choice: nothing to contrast"
            continue
        if any(req.args[0] != gold.args[0] for _, _, req in others):
            out[id(gold)] = "the choices have different contexts: the contrast needs one prompt"
            continue
        foil_lp, _, foil = max(others, key=lambda item: (item[0], -item[1]))
        out[id(gold)] = Foil(
            continuation=foil.args[1], logprob_foil=foil_lp, logprob_gold=gold_lp, n_choices=len(members)
        )
    return out
