"""Automatic segmentation on the REAL templates of the installed lm-eval tasks (local fixture docs, no
model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lm_interp_plugin.harness.segment import CHAT_MARKUP, SegmentationError, segment_prompt, skeleton

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
VARIANTS = REPO / "tasks" / "variants"
FIXTURE = {
    "arc_easy": "arc",
    "arc_challenge": "arc",
    "hellaswag": "hellaswag",
    "mmlu_anatomy": "mmlu",
    "gsm8k": "gsm8k",
    "ifeval": "ifeval",
    "truthfulqa_mc2": "truthfulqa",
    "winogrande": "winogrande",
    "boolq": "boolq",
    "piqa": "piqa",
}
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def variant_task(name: str, fixture: str | None = None, **overrides):
    """The shipped interp_<name> variant, on the local fixture (every split the config names -> the
    fixture)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    from lm_interp_plugin.harness.tasks import InterpTask
    from lm_interp_plugin.harness.variants import variant_config

    variant = load_yaml(VARIANTS / f"interp_{name}.yaml", resolve_func=False)
    if name == "ifeval" and importlib.util.find_spec("langdetect") is None:
        # the stock scorer imports langdetect (not installed here); the template is what is under test
        from lm_interp_plugin.harness.variants import stock_yaml_path

        stock = load_yaml(stock_yaml_path("ifeval"), resolve_func=False)
        stock.update(process_results=None, metric_list=[{"metric": "exact_match"}], task=variant["task"])
        interp = {k: v for k, v in variant["metadata"]["interp"].items() if k != "base"}
        stock["metadata"] = {**stock["metadata"], "interp": {**interp, "auto": True}}
        variant = stock
    cfg = variant_config(variant)
    splits = {
        cfg[k] for k in ("training_split", "validation_split", "test_split", "fewshot_split") if cfg.get(k)
    }
    fixture = fixture or FIXTURE[name]
    cfg["metadata"]["interp"]["data_files"] = {s: str(FIXTURES / f"{fixture}.jsonl") for s in splits}
    cfg.update(overrides)
    return InterpTask(config=cfg)


def text_of(context, spans, part):
    return [context[s:e] for s, e in spans.get(part, [])]


@pytest.fixture(scope="module")
def chat_template(lm_tokenizer):
    tok = lm_tokenizer
    tok.chat_template = CHATML

    def render(messages, add_generation_prompt=True):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    return render


def contexts(task, doc, **kwargs):
    ctx = task.fewshot_context(doc, num_fewshot=task.config.num_fewshot or 0, **kwargs)
    return ctx if isinstance(ctx, list) else [ctx]


@pytest.mark.parametrize("name", sorted(FIXTURE))
def test_zero_shot_parts_cover_the_example(name):
    task = variant_task(name, num_fewshot=0)
    doc = task.eval_docs[0]
    for context in contexts(task, doc):
        spans = segment_prompt(task, doc, context, parts=task.interp_config.get("parts"))
        # issue 13: TruthfulQA's demonstrations are written into its template: fewshot even at 0-shot
        assert ("fewshot" in spans) == (name == "truthfulqa_mc2") and "chat" not in spans
        for part, part_spans in spans.items():
            for s, e in part_spans:
                assert 0 <= s < e <= len(context), (part, s, e)
        if name == "ifeval":
            assert text_of(context, spans, "instruction") == [doc["prompt"]]
        elif name == "winogrande":
            assert any(t in (doc["option1"], doc["option2"]) for t in text_of(context, spans, "choices"))
            assert text_of(context, spans, "content")
        elif name == "hellaswag":
            assert text_of(context, spans, "content") == [context]  # "{{query}}": all doc text, no template
        else:
            assert "".join(text_of(context, spans, "cue")).strip().endswith(("Answer:", "A:"))
            assert text_of(context, spans, "content")
            # issue 13: field labels are not instructions; only MMLU's description is one
            assert bool(text_of(context, spans, "instruction")) == name.startswith("mmlu")
            assert text_of(context, spans, "label") or name.startswith("mmlu")


def test_arc_parts_exactly():
    task = variant_task("arc_easy", num_fewshot=0)
    doc = task.eval_docs[0]
    context = contexts(task, doc)[0]
    spans = segment_prompt(task, doc, context)
    assert text_of(context, spans, "label") == ["Question: "] and "instruction" not in spans  # issue 13
    assert text_of(context, spans, "content") == [doc["question"]]
    assert text_of(context, spans, "cue") == ["\nAnswer:"]


def test_mmlu_description_options_and_cue():
    task = variant_task("mmlu_anatomy", num_fewshot=0)
    doc = task.eval_docs[0]
    context = contexts(task, doc)[0]
    spans = segment_prompt(task, doc, context)
    assert text_of(context, spans, "instruction")[0].startswith("The following are multiple choice questions")
    choices = "".join(text_of(context, spans, "choices"))
    assert all(c in choices for c in doc["choices"]) and "\nB. " in choices
    assert text_of(context, spans, "content") == [doc["question"].strip()]
    assert text_of(context, spans, "cue") == ["\nAnswer:"]


@pytest.mark.parametrize("name", ["arc_easy", "mmlu_anatomy", "gsm8k", "boolq", "winogrande", "hellaswag"])
def test_few_shot_has_a_fewshot_part_before_the_example(name):
    task = variant_task(name, num_fewshot=2)
    doc = task.eval_docs[-1]
    for context in contexts(task, doc):
        spans = segment_prompt(task, doc, context, parts=task.interp_config.get("parts"))
        assert spans["fewshot"], context
        fs_end = max(e for _, e in spans["fewshot"])
        example_start = min(s for p in ("content", "choices") for s, _ in spans.get(p, []))
        assert fs_end <= example_start
        shots = "".join(text_of(context, spans, "fewshot"))
        assert shots.count("\n\n") >= 1  # two demonstrations, fewshot_delimiter between


@pytest.mark.parametrize("name", ["arc_easy", "mmlu_anatomy", "gsm8k", "ifeval", "winogrande", "piqa"])
@pytest.mark.parametrize("shots", [0, 2])
def test_chat_template_markup_is_the_chat_part(name, shots, chat_template):
    if name == "ifeval" and shots:
        pytest.skip("ifeval has no few-shot split")
    task = variant_task(name, num_fewshot=shots)
    doc = task.eval_docs[-1]
    for context in contexts(
        task, doc, apply_chat_template=True, chat_template=chat_template, system_instruction="Be brief."
    ):
        spans = segment_prompt(task, doc, context, parts=task.interp_config.get("parts"))
        chat = text_of(context, spans, "chat")
        assert any("<|im_start|>user" in c for c in chat) and any("assistant" in c for c in chat)
        assert "Be brief." in text_of(context, spans, "instruction")
        covered = sorted(span for part in spans.values() for span in part)
        for (s1, e1), (s2, e2) in zip(covered, covered[1:]):
            assert e1 <= s2, (context[s1:e1], context[s2:e2])  # parts do not overlap
        if shots:
            assert all("<|im_" not in t for t in text_of(context, spans, "fewshot"))
            assert text_of(context, spans, "fewshot")


def test_skeleton_of_callable_falls_back_and_overrides_apply():
    task = variant_task("winogrande", num_fewshot=0)
    assert skeleton(task, task.eval_docs[0]) is None  # doc_to_text returns an index: search instead
    arc = variant_task("arc_easy", num_fewshot=0)
    doc = arc.eval_docs[0]
    context = contexts(arc, doc)[0]
    spans = segment_prompt(
        arc, doc, context, parts={"question": "instruction", "cue": "instruction", "template": "instruction"}
    )
    assert set(spans) == {"instruction"}
    with pytest.raises(SegmentationError, match="unknown parts"):
        segment_prompt(arc, doc, context, parts={"question": "nonsense"})
    with pytest.raises(SegmentationError, match="not found"):
        segment_prompt(arc, doc, "unrelated text")


def test_chat_markup_regex_on_common_templates():
    for markup in (
        "<|im_start|>user\n",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "[INST]",
        "<s>",
        "<start_of_turn>model\n",
    ):
        assert (
            CHAT_MARKUP.fullmatch(markup)
            or "".join(m.group() for m in CHAT_MARKUP.finditer(markup)) == markup
        )
