"""The paper's labelling, offline: a local instruction-tuned causal LM names each component's concept.

Wu et al. asked ChatGPT which concept a component's top words express. `LLMLabeller` asks a local judge
model (any ``from_pretrained`` folder or hub id, or a GGUF file) the same question under one fixed prompt and
reads its answer deterministically: each concept name and ``"none"`` is scored by its log-likelihood as the
answer (no sampling, no parsing of free text). Prompts are batched; single-token answers cost one forward
per prompt.

Calibration (see `methods.concepts`): a judge has favourite answers and a coherent word list pulls it toward
every concept, so the evidence for concept c is its margin, ``log p(c) - max over the other answers``, and
the null is the same margin for the top words of random directions (`concepts.null_directions`). The null's
margins are summarised by their mean and standard deviation (a normal tail: a judge is too slow for the
thousands of null prompts an exact permutation p-value would need); then `concepts.fdr_labels`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .concepts import (
    LEXICON_GROUPS,
    NONE,
    ConceptLabel,
    ConceptLabeller,
    Poles,
    _validate_alpha,
    fdr_labels,
    load_lexicons,
    null_directions,
)
from .ffn import component_top_words, normalise_rows

logger = logging.getLogger(__name__)

#: The one prompt (``{kind}``: "topic" / "level of language"; ``{options}``: the answers, ``none`` last).
PROMPT = (
    "A hidden direction inside a language model promotes these words: {pos}.\n"
    "It suppresses these words: {neg}.\n"
    "Which {kind} do these words belong to? Options: {options}. Answer none if no option fits. "
    "Answer with one word."
)
KINDS = {"task_concepts": "topic", "linguistic_levels": "level of language"}


def _judge_fingerprint(path: str, gguf_file: str | None) -> str:
    """Size and name of the judge's weight files: cheap, and changes with the weights."""
    folder = Path(path)
    if not folder.exists():
        return f"hub:{path}"
    files = (
        [folder / gguf_file]
        if gguf_file
        else sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    )
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


class LLMLabeller(ConceptLabeller):
    """Asks a local judge LM to name each component's concept and linguistic level (module docstring)."""

    name = "llm"

    def __init__(
        self,
        model: Any = None,
        lm_tokenizer: Any = None,
        model_path: str | Path | None = None,
        gguf_file: str | None = None,
        concepts: Sequence[str] | None = None,
        levels: Sequence[str] | None = None,
        n_null: int = 64,
        alpha: float = 0.05,
        seed: int = 0,
        batch_size: int = 16,
        embeddings: torch.Tensor | None = None,
        tokenizer: Any = None,
        pool: Any = None,
    ):
        if model is None or lm_tokenizer is None:
            if model_path is None:
                raise ValueError(
                    "the llm labeller needs a judge model: --labeller llm:PATH (a local folder or hub id "
                    "of an instruction-tuned causal LM) or llm:FOLDER::FILE.gguf"
                )
            from transformers import AutoModelForCausalLM, AutoTokenizer

            kwargs = {"gguf_file": gguf_file} if gguf_file else {}
            lm_tokenizer = AutoTokenizer.from_pretrained(str(model_path), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32, **kwargs)
        model.eval()
        self.model, self.lm_tokenizer = model, lm_tokenizer
        self.model_path, self.gguf_file = str(model_path or ""), gguf_file
        self.judge = _judge_fingerprint(self.model_path, gguf_file) if model_path else "in-memory"
        if concepts is None:
            concepts = list(load_lexicons()["task_concepts"])
        levels = [] if levels is None else levels  # opt-in: one more prompt per component
        self.concepts, self.levels = list(concepts), list(levels)
        if int(n_null) < 8:
            raise ValueError(f"n_null={n_null}: the null's mean and spread need at least 8 random directions")
        self.n_null, self.alpha, self.seed = int(n_null), _validate_alpha(alpha), int(seed)
        self.batch_size = max(1, int(batch_size))
        self._E, self._tok = embeddings, tokenizer
        self._pool = pool

    @classmethod
    def create(cls, *, embeddings: torch.Tensor | None, tokenizer: Any, **options) -> LLMLabeller:
        """Options: ``model_path`` and ``gguf_file`` (or ``model`` and ``lm_tokenizer``), ``concepts``
        (default: the lexicon file's), ``levels`` (default none: linguistic levels cost one more prompt per
        component, so they are opt-in), ``n_null``, ``alpha``, ``seed``, ``batch_size``. The explained
        model's embeddings and tokenizer give the null's random directions their top words."""
        return cls(embeddings=embeddings, tokenizer=tokenizer, **options)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "judge": self.model_path,
            "gguf_file": self.gguf_file,
            "judge_fingerprint": self.judge,
            "concepts": self.concepts,
            "levels": self.levels,
            "n_null": self.n_null,
            "alpha": self.alpha,
            "seed": self.seed,
            "prompt_sha256": hashlib.sha256(PROMPT.encode()).hexdigest()[:12],
        }

    # -- scoring
    def _prompt(self, pos: Sequence[str], neg: Sequence[str], kind: str, options: Sequence[str]) -> str:
        text = PROMPT.format(pos=", ".join(pos), neg=", ".join(neg), kind=kind, options=", ".join(options))
        tok = self.lm_tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text + "\nAnswer:"

    def _answer_ids(self, options: Sequence[str]) -> list[list[int]]:
        chat = bool(getattr(self.lm_tokenizer, "chat_template", None))
        return [
            list(self.lm_tokenizer.encode(("" if chat else " ") + o, add_special_tokens=False))
            for o in options
        ]

    @torch.no_grad()
    def answer_logprobs(self, prompts: Sequence[str], options: Sequence[str]) -> np.ndarray:
        """``prompts x options`` log-likelihood of each option as the judge's answer (batched)."""
        tok, model = self.lm_tokenizer, self.model
        device = next(model.parameters()).device
        answers = self._answer_ids(options)
        if any(not a for a in answers):
            raise ValueError(f"an answer of {list(options)} encodes to no token with the judge's tokenizer")
        seqs: list[tuple[list[int], int | None]] = []
        for prompt in prompts:
            ids = list(tok.encode(prompt, add_special_tokens=not getattr(tok, "chat_template", None)))
            if all(len(a) == 1 for a in answers):  # one forward per prompt reads every option
                seqs.append((ids, None))
            else:
                seqs.extend((ids, j) for j in range(len(options)))
        out = np.zeros((len(prompts), len(options)))
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        flat = []
        for k, (ids, j) in enumerate(seqs):
            prompt_index = k if all(len(a) == 1 for a in answers) else k // len(options)
            flat.append((prompt_index, j, ids + ([] if j is None else answers[j][:-1]), len(ids)))
        order = sorted(range(len(flat)), key=lambda k: len(flat[k][2]))
        for start in range(0, len(order), self.batch_size):
            batch = [flat[k] for k in order[start : start + self.batch_size]]
            width = max(len(x[2]) for x in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (_, _, ids, _) in enumerate(batch):
                input_ids[r, : len(ids)] = torch.tensor(ids)
                mask[r, : len(ids)] = 1
            logp = torch.log_softmax(
                model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.float(), -1
            )
            for r, (pi, j, _, n_prompt) in enumerate(batch):
                if j is None:
                    for jj, a in enumerate(answers):
                        out[pi, jj] = float(logp[r, n_prompt - 1, a[0]])
                else:
                    pos = torch.arange(n_prompt - 1, n_prompt - 1 + len(answers[j]))
                    out[pi, j] = float(logp[r, pos, torch.tensor(answers[j])].sum())
        return out

    def _margins(self, poles: Poles, kind: str, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per component: each name's log-likelihood margin over the best other answer, and the raw scores."""
        options = [*names, NONE]
        lp = self.answer_logprobs([self._prompt(p, n, kind, options) for p, n in poles], options)
        margins = np.empty((len(poles), len(names)))
        for j in range(len(names)):
            others = np.delete(lp, j, axis=1)
            margins[:, j] = lp[:, j] - others.max(axis=1)
        return margins, lp

    def _null_poles(self, top_n: int, directions: torch.Tensor | None) -> list[tuple[list[str], list[str]]]:
        if self._E is None or self._tok is None:
            raise ValueError(
                "the llm labeller's null needs the explained model's output embeddings and tokenizer"
            )
        from .vocab import whole_word_vocab

        vocab = self._pool or whole_word_vocab(self._tok)
        words_normed = normalise_rows(self._E[torch.tensor(vocab.token_ids, device=self._E.device)])
        dirs = null_directions(directions, self.n_null, int(self._E.shape[1]), self.seed)
        return component_top_words(dirs.to(words_normed.device), words_normed, vocab.words, top_n)

    def label_all(self, poles: Poles, directions: torch.Tensor | None = None) -> list[ConceptLabel]:
        labels = [ConceptLabel() for _ in poles]
        if not poles:
            return labels
        null_poles = self._null_poles(max(len(poles[0][0]), len(poles[0][1]), 1), directions)
        for group, attr in LEXICON_GROUPS.items():
            names = self.concepts if attr == "concept" else self.levels
            if not names:
                continue
            margins, lp = self._margins(poles, KINDS[group], names)
            null, _ = self._margins(null_poles, KINDS[group], names)
            mu, sd = null.mean(axis=0), null.std(axis=0, ddof=1).clip(min=1e-6)
            from scipy.stats import norm

            p = norm.sf((margins - mu) / sd)
            chosen, q = fdr_labels(p, self.alpha)
            for lab, m_row, p_row, j, q_j in zip(labels, margins, p, chosen, q):
                for name, value, pv in zip(names, m_row.tolist(), p_row.tolist()):
                    lab.scores[name] = round(float(value), 6)
                    lab.p_values[name] = round(float(pv), 8)
                setattr(lab, "q_" + attr, round(float(q_j), 8))
                if j >= 0 and m_row[j] > 0:  # the judge's own answer, and beyond the null
                    setattr(lab, attr, names[j])
        return labels
