"""The hand-labelled prompt set (tests/fixtures/labelled_parts.jsonl): how its prompts are rendered, and the
token-level scorer of a segmentation against the reader's labels.

Each line of the set holds a prompt rendered by lm-eval from a shipped interp_ variant on the local fixture
docs (task, doc index, few-shot count, chat template, system instruction), and the parts a reader marks in it
as character spans. The rubric: ``instruction`` = task descriptions, system prompts and imperative requests;
``label`` = field labels ("Question:", "Q:"); ``cue`` = the closing answer cue ("Answer:", "A:");
``content`` = the data item and the material an instruction acts on; ``choices`` = options shown in the
prompt; ``fewshot`` = demonstrations (lm-eval's or in the template); ``chat`` = chat-template markup.
Whitespace between parts is in no part.

The labels were written by reading the rendered prompts (as ``texts`` beside the spans shows); the
``ifeval-heldout-*`` entries were labelled after the sentence rule was last changed, and never tuned on.
Run ``python tests/labelled_parts.py`` to print the per-part confusion of the current segmenter.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LABELLED = REPO / "tests" / "fixtures" / "labelled_parts.jsonl"
OTHER = "none"

CHAT_TEMPLATES = {
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "llama3": (
        "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    ),
    # Mistral-style: no system role, the system prompt goes into the first user turn
    "mistral": (
        "<s>{% set ns = namespace(sys='') %}{% for m in messages %}{% if m['role'] == 'system' %}"
        "{% set ns.sys = m['content'] + '\n\n' %}{% elif m['role'] == 'user' %}[INST] {{ ns.sys }}"
        "{{ m['content'] }} [/INST]{% set ns.sys = '' %}{% else %}{{ m['content'] }}</s>{% endif %}"
        "{% endfor %}"
    ),
}


def chat_renderer(name: str):
    import jinja2

    template = jinja2.Environment().from_string(CHAT_TEMPLATES[name])

    def render(messages, add_generation_prompt=True):
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt)

    return render


def render(entry: Mapping, tasks: dict | None = None) -> tuple[object, dict, str]:
    """(task, doc, prompt) of a set entry, built by lm-eval as a run builds it (seeded few-shot sampling)."""
    from test_segment import variant_task

    key = (entry["task"], entry["num_fewshot"])
    if tasks is None or key not in tasks:
        fixture = "mmlu" if entry["task"].startswith("mmlu_") else None
        task = variant_task(entry["task"], fixture=fixture, num_fewshot=entry["num_fewshot"])
        if tasks is not None:
            tasks[key] = task
    else:
        task = tasks[key]
    task.set_fewshot_seed(1234)
    # the reader's set has a demonstration drawn from the evaluated split (truthfulqa_mc2, validation only);
    # a real run refuses it (`InterpTask.check_demonstrations`), but here only the segmentation is measured
    task.check_demonstrations = lambda num_fewshot: None
    doc = task.eval_docs[entry["doc"]]
    chat = entry.get("chat")
    context = task.fewshot_context(
        doc,
        num_fewshot=entry["num_fewshot"],
        system_instruction=entry.get("system_instruction"),
        apply_chat_template=bool(chat),
        chat_template=chat_renderer(chat) if chat else None,
    )
    if isinstance(context, list):
        context = context[entry.get("context_index", 0)]
    return task, doc, context


def load_set(path: Path = LABELLED) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def token_parts(tokenizer, prompt: str, spans: Mapping[str, Sequence[Sequence[int]]]) -> list[str]:
    """One part per token of `prompt` (no special tokens), ``none`` for tokens in no part."""
    from lm_interp_plugin.spans import label_tokens, token_offsets

    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    offsets = token_offsets(tokenizer, prompt, ids, add_special_tokens=False)
    spans = {part: [tuple(s) for s in part_spans] for part, part_spans in spans.items()}
    return label_tokens(offsets, prompt, spans, default=OTHER)


def score(tokenizer, entries: Sequence[dict], tasks: dict | None = None) -> dict:
    """Token-level confusion (reader part, segmenter part) over the set, and instruction precision/recall."""
    confusion: Counter = Counter()
    per_entry = []
    tasks = {} if tasks is None else tasks
    for entry in entries:
        task, doc, prompt = render(entry, tasks)
        if prompt != entry["prompt"]:
            raise AssertionError(f"{entry['id']}: lm-eval renders a different prompt than the labelled one")
        predicted = task.segment(doc, prompt)
        gold = token_parts(tokenizer, prompt, entry["parts"])
        got = token_parts(tokenizer, prompt, predicted)
        pairs = Counter(zip(gold, got))
        confusion.update(pairs)
        per_entry.append((entry["id"], pairs))
    tp = confusion[("instruction", "instruction")]
    predicted_pos = sum(n for (g, p), n in confusion.items() if p == "instruction")
    gold_pos = sum(n for (g, p), n in confusion.items() if g == "instruction")
    return {
        "confusion": confusion,
        "precision": tp / predicted_pos if predicted_pos else float("nan"),
        "recall": tp / gold_pos if gold_pos else float("nan"),
        "per_entry": per_entry,
    }


def format_confusion(confusion: Mapping[tuple[str, str], int]) -> str:
    parts = sorted({g for g, _ in confusion} | {p for _, p in confusion})
    width = max(len(p) for p in parts) + 2
    lines = ["reader \\ segmenter".ljust(width + 8) + "".join(p.rjust(width) for p in parts)]
    for g in parts:
        row = [confusion.get((g, p), 0) for p in parts]
        lines.append(g.ljust(width + 8) + "".join(str(n).rjust(width) for n in row))
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from lm_interp_plugin.testing.tiny import task_corpus, train_tokenizer

    result = score(train_tokenizer(task_corpus(), vocab_size=800), load_set())
    print(format_confusion(result["confusion"]))
    print(f"instruction precision {result['precision']:.3f} recall {result['recall']:.3f}")
