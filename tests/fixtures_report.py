"""Synthetic lm-eval output folders (results json + samples jsonl + interp records) for the report tests.

The layout copies lm-eval 0.4.13's EvaluationTracker: ``<output_path>/<model_name_sanitized>/`` with
``results_<date_id>.json`` and ``samples_<task>_<date_id>.jsonl``, plus the plugin's records written through
`RecordWriter`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lm_interp_plugin.records import InterpRecord, RecordWriter

DATE = "2024-05-01T10-00-00.000000"


@dataclass
class Doc:
    """One document and what a model scored on it."""

    doc: dict
    acc: float
    importance: float
    attention: float = 0.3
    shares: dict = field(default_factory=lambda: {"writing": 0.5, "math": 0.3, "coding": 0.2})
    #: further per-sample metrics (deletion gains, ...), written into the sample beside the others
    extra: dict = field(default_factory=dict)


def doc_hash(doc: dict) -> str:
    """lm-eval's doc_hash: sha256 of json.dumps(doc, indent=2, ensure_ascii=False)."""
    return hashlib.sha256(json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")).hexdigest()


def sanitize_model_name(name: str) -> str:
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def prompt_of(doc: dict) -> str:
    return f"{doc['instruction']}\n{doc['question']}\nAnswer:"


def make_docs(n: int, seed: int, prefix: str = "q", evil: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        instruction = "Answer the question & be brief." if i % 2 else "Reply with one word."
        if evil and i == 0:
            instruction = "<script>alert(1)</script> & co | pipe"
        docs.append(
            {
                "instruction": instruction,
                "question": f"{prefix}{i}: what is {int(rng.integers(100))}?",
                "answer": str(i),
            }
        )
    return docs


def write_run(
    output_path: Path,
    model: str,
    tasks: dict[str, list[Doc]],
    *,
    date: str = DATE,
    doc_ids: dict[str, list[int]] | None = None,
    records: bool = True,
    fingerprint: dict | None = None,
    params: dict | None = None,
    layers: int = 3,
    heads: int = 4,
    seed: int = 0,
    row_layers: list[int] | None = None,
) -> Path:
    """Write one lm-eval run (one model) into `output_path`; returns the model subfolder. `row_layers`: the
    model layer of each attention and FFN row, as a hybrid's records name them (its attention and FFN layers
    only)."""
    folder = Path(output_path) / sanitize_model_name(model)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    results = {}
    for task, docs in tasks.items():
        ids = doc_ids[task] if doc_ids and task in doc_ids else list(range(len(docs)))
        accs = np.array([d.acc for d in docs])
        results[task] = {
            "alias": task,
            "acc,none": float(accs.mean()),
            "acc_stderr,none": float(accs.std(ddof=1) / np.sqrt(len(accs))),
            "instruction_importance,none": float(np.mean([d.importance for d in docs])),
            "instruction_importance_stderr,none": "N/A",
        }
        with open(folder / f"samples_{task}_{date}.jsonl", "w", encoding="utf-8") as fh:
            for doc_id, d in sorted(zip(ids, docs), key=lambda t: t[0]):
                prompt = prompt_of(d.doc)
                sample = {
                    "doc_id": doc_id,
                    "doc": d.doc,
                    "target": d.doc["answer"],
                    "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": " " + d.doc["answer"]}},
                    "resps": [[["-1.5", "True"]]],
                    "filtered_resps": [["-1.5", "True"]],
                    "filter": "none",
                    "metrics": ["acc", "instruction_importance", "instruction_attention", *d.extra],
                    "doc_hash": doc_hash(d.doc),
                    "prompt_hash": "p",
                    "target_hash": "t",
                    "acc": d.acc,
                    "instruction_importance": d.importance,
                    "instruction_attention": d.attention,
                    **d.extra,
                }
                fh.write(json.dumps(sample, ensure_ascii=False) + "\n")
        if records:
            with RecordWriter(folder) as writer:
                for doc_id, d in zip(ids, docs):
                    rec = _record(task, doc_id, d, model, rng, fingerprint, params, layers, heads)
                    if row_layers is not None:
                        rec.attention["layers"] = rec.ffn["layers"] = list(row_layers)
                    writer.write(rec)
    (folder / f"results_{date}.json").write_text(
        json.dumps(
            {
                "results": results,
                "configs": {t: {"task": t} for t in tasks},
                "versions": {t: 1 for t in tasks},
                "n-samples": {t: {"original": len(d), "effective": len(d)} for t, d in tasks.items()},
                "config": {"model": "interp-hf", "model_args": f"pretrained={model}"},
                "model_name": model,
                "model_name_sanitized": sanitize_model_name(model),
            },
            indent=2,
        )
    )
    return folder


def _record(
    task: str, doc_id: int, d: Doc, model: str, rng, fingerprint, params, layers, heads
) -> InterpRecord:
    instr = d.doc["instruction"].split()
    content = d.doc["question"].split()
    prompt_tokens = ["<s>"] + ["\u0120" + w for w in instr] + ["\u010a"] + ["\u0120" + w for w in content]
    parts = ["special"] + ["instruction"] * len(instr) + ["template"] + ["content"] * len(content)
    target = ["\u0120" + d.doc["answer"], "</s>"]
    quantised = rng.integers(0, 11, size=(len(prompt_tokens), len(target))).tolist()
    attention = np.full((layers, heads), d.attention) + rng.normal(0, 0.01, (layers, heads))
    return InterpRecord(
        task=task,
        doc_id=doc_id,
        doc_hash=doc_hash(d.doc),
        request_index=0,
        request_type="loglikelihood",
        role="gold",
        prompt_tokens=prompt_tokens,
        target_tokens=target,
        token_parts=parts,
        raw=np.asarray(quantised, dtype=float).tolist(),
        quantised=quantised,
        params=params or {"L": 10, "b": 0, "p": 4},
        metrics={"instruction_importance": d.importance, "acc": d.acc},
        attention={"instruction_attention": attention.tolist()},
        ffn={"concept_shares": d.shares, "layer_concept_shares": [d.shares for _ in range(layers)]},
        fingerprint=fingerprint or {"model": model, "plugin_version": "0.1.0", "dtype": "float32"},
    )


def scored(docs: list[dict], seed: int, shift: float = 0.0) -> list[Doc]:
    """Random scores for `docs`; `shift` raises instruction importance (a 'tuned' model)."""
    rng = np.random.default_rng(seed)
    out = []
    for doc in docs:
        acc = float(rng.random() < 0.5 + shift / 2)
        imp = float(rng.normal(1.0 + shift + 0.3 * acc, 0.25))
        shares = dict(zip(["writing", "math", "coding"], rng.dirichlet([2, 2, 2]).tolist()))
        out.append(Doc(doc, acc, imp, float(rng.uniform(0.1, 0.5) + shift / 4), shares))
    return out


def rewrite_records(path: Path, lines: list[dict]) -> None:
    """Write edited record dicts back as valid records (a fresh checksum): a test's way of making records with
    particular contents, as the harness would have written them."""
    from lm_interp_plugin.records import record_line

    path.write_text(
        "".join(
            record_line(InterpRecord.from_dict({k: v for k, v in rec.items() if k != "checksum"}))
            for rec in lines
        ),
        encoding="utf-8",
    )
