"""Issue 13: the six segmentation defects, each reproduced, and "no instruction, no number"."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from test_segment import CHATML, FIXTURES, text_of, variant_task

from lm_interp_plugin.harness.sentences import is_instruction, is_label, split_request
from lm_interp_plugin.spans import label_tokens, token_offsets, truncated_offsets

SYSTEM = "Answer carefully."


def _segment(task, doc, **kwargs):
    """The context lm-eval builds and the spans `InterpTask` gives it (the path of a real run)."""
    context = task.fewshot_context(doc, num_fewshot=task.config.num_fewshot or 0, **kwargs)
    context = context[0] if isinstance(context, list) else context
    return context, task.segment(doc, context)


# ---------------------------------------------------------------------------------------------- defect 1
@pytest.mark.parametrize("name", ["boolq", "hellaswag", "winogrande"])
def test_system_instruction_without_chat_template_is_the_instruction_not_fewshot(name):
    task = variant_task(name, num_fewshot=2)
    doc = task.eval_docs[-1]
    context, spans = _segment(task, doc, system_instruction=SYSTEM)
    assert context.startswith(SYSTEM) and "\n" not in context[: len(SYSTEM) + 1]  # glued to the 1st example
    assert text_of(context, spans, "instruction") == [SYSTEM]
    fewshot = "".join(text_of(context, spans, "fewshot"))
    assert SYSTEM not in fewshot and fewshot.count("\n\n") >= 2  # both demonstrations, nothing else
    assert min(s for s, _ in spans["fewshot"]) == len(SYSTEM)


def test_system_instruction_and_description_both_instruction_before_the_examples():
    task = variant_task("mmlu_anatomy", num_fewshot=2)
    context, spans = _segment(task, task.eval_docs[-1], system_instruction=SYSTEM)
    instruction = text_of(context, spans, "instruction")
    assert instruction[0] == SYSTEM and instruction[1].startswith("The following are multiple choice")
    assert max(e for _, e in spans["instruction"]) <= min(s for s, _ in spans["fewshot"])


# ---------------------------------------------------------------------------------------------- defect 2
def test_truthfulqa_demonstrations_in_the_template_are_fewshot():
    task = variant_task("truthfulqa_mc2", num_fewshot=0)
    doc = task.eval_docs[0]
    context, spans = _segment(task, doc)
    assert "instruction" not in spans
    fewshot = text_of(context, spans, "fewshot")
    assert len(fewshot) == 1 and fewshot[0].count("Q: ") == 6 and fewshot[0].count("\nA: ") == 6
    assert text_of(context, spans, "content") == [doc["question"]]
    assert text_of(context, spans, "label") == ["Q: "] and text_of(context, spans, "cue") == ["\nA:"]
    context, spans = _segment(task, doc, system_instruction=SYSTEM)
    assert text_of(context, spans, "instruction") == [SYSTEM] and len(text_of(context, spans, "fewshot")) == 1


# ---------------------------------------------------------------------------------------------- defect 3
def test_ifeval_text_to_act_on_is_content_by_the_sentence_rule():
    task = variant_task("ifeval", num_fewshot=0)
    by_key = {doc["key"]: doc for doc in task.eval_docs}
    context, spans = _segment(task, by_key[3])
    assert text_of(context, spans, "instruction") == [
        "Rewrite the following sentence in a more formal tone:",
        "Do not use any commas in your answer.",
    ]
    assert text_of(context, spans, "content") == ['"The boots are warm but a little uncomfortable."']
    context, spans = _segment(task, by_key[4])
    (passage,) = text_of(context, spans, "content")
    assert passage.startswith("The town council") and passage.endswith("playground.")
    assert (
        text_of(context, spans, "instruction")[-1] == "Wrap your entire response in double quotation marks."
    )
    context, spans = _segment(task, by_key[1])  # all request: one instruction span, nothing else
    assert text_of(context, spans, "instruction") == [by_key[1]["prompt"]] and set(spans) == {"instruction"}


@pytest.mark.parametrize(
    ("sentence", "instruction"),
    [
        ("Write a short poem about the sea.", True),
        ("Please, summarize it in two lines.", True),
        ("Do not use any commas.", True),
        ("Could you write a short itinerary for us?", True),
        ("I would like you to draft an email to my landlord.", True),
        ("Your response should contain at least 3 bullet points.", True),
        ("You are not allowed to use any capital letters.", True),
        ("- Include the keywords river and stone.", True),
        ("What are the main benefits of green tea?", False),
        ("The town council met on Tuesday evening.", False),
        ("I am planning a weekend in Lisbon.", False),
        ("Answer:", False),
        ("List of ingredients is below.", False),
    ],
)
def test_sentence_rule(sentence, instruction):
    assert is_instruction(sentence) is instruction


def test_labels_and_colon_blocks():
    assert is_label("Question: ") and is_label("\nA:") and is_label("Passage:")
    assert not is_label("Answer the question below:") and not is_label("The following are questions.")
    text = "Translate this into German: The weather is nice today. Please answer in lowercase."
    assert [(text[s:e], p) for s, e, p in split_request(text)] == [
        ("Translate this into German:", "instruction"),
        ("The weather is nice today.", "content"),
        ("Please answer in lowercase.", "instruction"),
    ]


# ---------------------------------------------------------------------------------------------- defect 4
@pytest.mark.parametrize("name", ["arc_easy", "gsm8k", "piqa", "boolq", "truthfulqa_mc2"])
def test_field_labels_are_labels_and_such_prompts_have_no_instruction(name):
    task = variant_task(name, num_fewshot=0)
    context, spans = _segment(task, task.eval_docs[0])
    assert "instruction" not in spans
    assert "".join(text_of(context, spans, "label")).strip() in ("Question:", "Q:")
    assert "".join(text_of(context, spans, "cue")).strip().endswith(("Answer:", "A:"))


def test_template_prose_is_instruction_and_labels_are_not():
    """A template with a written task description: the description is instruction, "Passage:" a label."""
    task = variant_task(
        "boolq",
        num_fewshot=0,
        doc_to_text="Read the passage and answer the question with yes or no.\nPassage: {{passage}}\n"
        "Question: {{question}}?\nAnswer:",
    )
    context, spans = _segment(task, task.eval_docs[0])
    assert text_of(context, spans, "instruction") == [
        "Read the passage and answer the question with yes or no."
    ]
    assert [t.strip() for t in text_of(context, spans, "label")] == ["Passage:", "Question:"]


# ---------------------------------------------------------------------------------------------- defect 5
def test_left_truncation_keeps_the_labels_of_the_kept_tokens(lm_tokenizer):
    text = "Write the answer in French.\n\nInput: the cat sat on the mat and looked at the door.\n\nOutput:"
    spans = {"instruction": [(0, 27)], "content": [(36, 82)], "cue": [(84, len(text))]}
    ids = lm_tokenizer(text)["input_ids"]
    full = label_tokens(token_offsets(lm_tokenizer, text, ids, True), text, spans)
    for keep in (len(ids) - 1, len(ids) - 4, 5):
        offsets = truncated_offsets(lm_tokenizer, text, ids, keep, True)
        assert label_tokens(offsets, text, spans) == full[-keep:]
    assert "instruction" in label_tokens(
        truncated_offsets(lm_tokenizer, text, ids, len(ids) - 2, True), text, spans
    )


@pytest.mark.slow
def test_truncated_run_keeps_labels_and_logs_once_per_task_with_a_count(tiny_llama_dir, tmp_path, caplog):
    from lm_eval.api.instance import Instance

    from lm_interp_plugin.harness.model import InterpHFLM
    from lm_interp_plugin.harness.tasks import RequestTag

    lm = InterpHFLM(
        pretrained=str(tiny_llama_dir),
        max_length=40,
        device="cpu",
        batch_size=1,
        records_dir=str(tmp_path),
        interp_ffn="false",
        interp_ablation="false",
    )
    context = "Answer briefly. " + "The cat sat on the mat. " * 4 + "Why?"
    requests = []
    for i, ctx in enumerate((context, "Answer briefly. " + "The dog ran. " * 12 + "Why?")):
        req = Instance(
            "loglikelihood", {"id": i}, (ctx, " Because it was tired."), idx=0, metadata=("t", i, 1)
        )
        req.interp_tag = RequestTag(
            role="gold", spans={"instruction": [(0, 15)], "content": [(16, len(ctx))]}
        )
        requests.append(req)
    with caplog.at_level(logging.WARNING):
        lm.loglikelihood(requests, disable_tqdm=True)
    records = [json.loads(line) for line in next(tmp_path.glob("interp_records_*.jsonl")).open()]
    truncated = [r for r in records if any("left-truncated" in n for n in r["notes"])]
    assert truncated and all(set(r["token_parts"]) <= {"instruction", "content"} for r in truncated)
    assert all("content" in r["token_parts"] for r in truncated)  # not all `special` any more
    logs = [r.getMessage() for r in caplog.records if "left-truncated" in r.getMessage()]
    assert len(logs) == 1 and f"{len(truncated)} of 2 prompts" in logs[0]


# ---------------------------------------------------------------------------------------------- defect 6
def test_empty_target_leaves_the_attribution_metrics_out_with_a_note(tiny_model):
    from lm_interp_plugin.interpret.passes import run_pass
    from lm_interp_plugin.interpret.settings import InterpSettings

    model = tiny_model("llama", seed=0)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(5, 700, (9,), generator=g).tolist()
    labels = ["instruction"] * 4 + ["content"] * 5
    result = run_pass(model, prompt, [], labels, InterpSettings(ffn=False, ablation=False))
    assert not any(k.startswith(("instruction_", "attribution_")) for k in result.metrics), result.metrics
    assert any("empty target" in n for n in result.notes)


def test_whitespace_tokens_inside_a_part_keep_the_part(lm_tokenizer):
    text = "Write a poem.\n\n\n\nDo not use commas.\n\nInput: sea"
    spans = {"instruction": [(0, 34)], "content": [(43, 46)]}
    ids = lm_tokenizer(text, add_special_tokens=False)["input_ids"]
    offsets = token_offsets(lm_tokenizer, text, ids, False)
    labels = label_tokens(offsets, text, spans)
    inside = [lab for (s, e), lab in zip(offsets, labels) if e <= 34 and not text[s:e].strip()]
    assert inside and set(inside) == {"instruction"}
    between = [lab for (s, e), lab in zip(offsets, labels) if s >= 34 and e <= 36]
    assert between and set(between) == {"template"}  # touching a part is not being inside it


# ------------------------------------------------------------------------------ no instruction, no number
def test_no_instruction_no_number_in_samples_and_lm_eval_table(caplog):
    from lm_eval.evaluator_utils import _compute_task_aggregations

    from lm_interp_plugin.harness.tasks import INSTRUCTION_FOUND, NO_INSTRUCTION, attach

    task = variant_task("arc_easy", num_fewshot=0)
    doc = task.eval_docs[0]
    no_instr = {"attribution_share_content": 0.7, "attribution_share_label": 0.3, INSTRUCTION_FOUND: 0.0}
    results = [attach((-1.0, False), no_instr, "choice") for _ in doc["choices"]["text"]]
    out = task.process_results(doc, results)
    assert out[INSTRUCTION_FOUND] == 0.0 and "acc" in out
    assert not any(k.startswith("instruction_") and k != INSTRUCTION_FOUND for k in out)
    raw = {}
    for _ in range(3):
        for key, value in out.items():
            raw.setdefault((key, "none"), []).append(value)
    with caplog.at_level(logging.WARNING):
        table, _ = _compute_task_aggregations(task, raw, bootstrap_iters=0)
    assert table[f"{INSTRUCTION_FOUND},none"] == 0.0 and "instruction_importance,none" not in table
    assert any(NO_INSTRUCTION in r.getMessage() for r in caplog.records)
    # mixed: the instruction metrics average only the prompts that have an instruction, never their zeros
    with_instr = {**out, INSTRUCTION_FOUND: 1.0, "instruction_importance": 0.8}
    raw = {}
    for sample in (out, with_instr, with_instr):
        for key, value in sample.items():
            raw.setdefault((key, "none"), []).append(value)
    table, _ = _compute_task_aggregations(task, raw, bootstrap_iters=0)
    assert table["instruction_importance,none"] == 0.8
    assert math.isclose(table[f"{INSTRUCTION_FOUND},none"], 2 / 3)


def test_system_instruction_gives_such_tasks_an_instruction_to_measure(lm_tokenizer):
    """The documented way to measure instruction reliance on a task whose prompts have none."""
    lm_tokenizer.chat_template = CHATML

    def render(messages, add_generation_prompt=True):
        return lm_tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    task = variant_task("arc_easy", num_fewshot=0)
    for kwargs in ({}, {"apply_chat_template": True, "chat_template": render}):
        context, spans = _segment(task, task.eval_docs[0], system_instruction=SYSTEM, **kwargs)
        assert text_of(context, spans, "instruction") == [SYSTEM]
    described = variant_task(
        "arc_easy", num_fewshot=2, description="Pick the best answer to the science question."
    )
    context, spans = _segment(described, described.eval_docs[0])
    assert text_of(context, spans, "instruction") == ["Pick the best answer to the science question."]
    assert min(s for s, _ in spans["fewshot"]) >= max(e for _, e in spans["instruction"])


@pytest.mark.slow
def test_system_instruction_few_shot_run_measures_the_instruction(tiny_llama_dir, tmp_path):
    """Defect 1 end to end through lm-eval: --system_instruction, 2-shot, no chat template."""
    from lmeval_run import run_lmeval

    tasks = [variant_task(name, num_fewshot=2) for name in ("boolq", "hellaswag", "winogrande")]
    out = run_lmeval(
        f"pretrained={tiny_llama_dir},records_dir={tmp_path},interp_ffn=false",
        tasks,
        limit=2,
        system_instruction=SYSTEM,
    )
    for task in tasks:
        table = out["results"][task.config.task]
        assert table["instruction_found,none"] == 1.0, table
        assert (
            math.isfinite(table["instruction_importance,none"]) and "attribution_share_fewshot,none" in table
        )


# ------------------------------------------------------------------------------------ lm-interp parts
@pytest.fixture(scope="module")
def local_tasks(tmp_path_factory):
    """interp_ variants of stock tasks on the local fixture docs, in a folder for --include_path."""
    from lm_interp_plugin.harness.variants import write_task_yaml

    folder = tmp_path_factory.mktemp("tasks")
    for base, fixture in (("arc_easy", "arc"), ("boolq", "boolq")):
        data = str(FIXTURES / f"{fixture}.jsonl")
        interp = {"base": base, "data_files": {s: data for s in ("train", "validation", "test")}}
        config = {"task": f"interp_{base}_local", "class": "InterpVariant", "metadata": {"interp": interp}}
        write_task_yaml(folder / f"interp_{base}_local.yaml", config)
    return folder


def _parts_cli(capsys, *args):
    from lm_interp_plugin.cli import main

    assert main(["parts", *args]) == 0
    return capsys.readouterr().out


def test_parts_command_json(local_tasks, capsys):
    out = _parts_cli(
        capsys, "interp_arc_easy_local", "--include_path", str(local_tasks), "--limit", "2", "--json"
    )
    prompts = [json.loads(line) for line in out.splitlines()]
    assert [p["doc_id"] for p in prompts] == [0, 1]
    first = prompts[0]
    assert first["prompt"] == "Question: Which gas do plants take in to make food?\nAnswer:"
    assert first["instruction_found"] is False and "instruction" not in first["spans"]
    assert [(p["part"], p["text"]) for p in first["pieces"]] == [
        ("label", "Question: "),
        ("content", "Which gas do plants take in to make food?"),
        ("cue", "\nAnswer:"),
    ]


def test_parts_command_colours_system_instruction_fewshot_and_chat(local_tasks, capsys):
    args = ["interp_boolq_local", "--include_path", str(local_tasks), "--limit", "1", "--num_fewshot", "2"]
    out = _parts_cli(capsys, *args, "--system_instruction", SYSTEM)
    assert f"\x1b[1;31m{SYSTEM}\x1b[0m\x1b[90m" in out  # instruction, then the demonstrations: defect 1
    assert "instruction found" in out
    out = _parts_cli(capsys, *args, "--apply_chat_template", "--system_instruction", SYSTEM, "--plain")
    assert f"[instruction|{SYSTEM}]" in out and "<|im_end|>\n<|im_start|>user\n][fewshot|" in out
    assert "[fewshot|" in out and "[label|\nQuestion: ]" in out
    out = _parts_cli(capsys, *args[:5], "--plain")
    assert "NO INSTRUCTION" in out


def test_compare_says_no_instruction_instead_of_averaging_zeros():
    from lm_interp_plugin.report.analysis import instruction_notes
    from lm_interp_plugin.report.loading import DocSample, TaskRun

    def run(found: list[float]) -> TaskRun:
        samples = {
            str(i): DocSample(str(i), i, {"acc": 1.0, "instruction_found": f}) for i, f in enumerate(found)
        }
        return TaskRun("interp_arc_easy", samples=samples)

    notes = instruction_notes("interp_arc_easy", {"base": run([0.0, 0.0]), "tuned": run([0.0, 1.0])})
    assert len(notes) == 1 and notes[0].startswith("base: no instruction in this task's prompts")
    assert "for all 2 examples" in notes[0]


def test_system_instruction_is_instruction_on_tasks_with_declared_fields():
    from lm_eval.tasks._yaml_loader import load_yaml

    from lm_interp_plugin.harness.tasks import InterpTask, tasks_dir

    task = InterpTask(config=load_yaml(tasks_dir() / "interp_instruct.yaml", resolve_func=False))
    doc = task.eval_docs[0]
    context = task.fewshot_context(doc, num_fewshot=0, system_instruction=SYSTEM)
    spans = task.segment(doc, context)
    assert text_of(context, spans, "instruction") == [SYSTEM, doc["instruction"]]


# the ChatML template with a default system prompt of its own when none is given (as SmolLM2's)
CHATML_DEFAULT_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}" + CHATML
)


@pytest.mark.parametrize("name", ["interp_instruct", "interp_instruct_mc"])
@pytest.mark.parametrize("shots", [0, 2])
def test_declared_fields_and_the_template_find_the_same_frame(name, shots, lm_tokenizer):
    """A task that declares its fields and the same prompt segmented from its template give the same
    demonstrations and chat-template text (one path: `segment.prompt_frame`), with or without a system
    instruction, a chat template, or text the template injects itself."""
    from lm_eval.tasks._yaml_loader import load_yaml

    from lm_interp_plugin.harness.tasks import InterpTask, tasks_dir

    task = InterpTask(
        config={**load_yaml(tasks_dir() / f"{name}.yaml", resolve_func=False), "num_fewshot": shots}
    )
    doc = task.eval_docs[0]
    for template in (None, CHATML, CHATML_DEFAULT_SYSTEM):
        for system in (None, SYSTEM):
            chat = {}
            if template is not None:

                def render(messages, add_generation_prompt=True, template=template):
                    return lm_tokenizer.apply_chat_template(
                        messages,
                        chat_template=template,
                        tokenize=False,
                        add_generation_prompt=add_generation_prompt,
                    )

                chat = {"apply_chat_template": True, "chat_template": render}
            context = task.fewshot_context(doc, num_fewshot=shots, system_instruction=system, **chat)
            context = context[0] if isinstance(context, list) else context
            declared, auto = task.segment(doc, context), task._auto_segment(doc, context)
            for part in ("fewshot", "chat"):
                assert declared.get(part) == auto.get(part), (template, system, part)
            assert bool(declared.get("fewshot")) == bool(shots)
            assert ("You are a helpful assistant." in "".join(text_of(context, declared, "chat"))) == (
                template == CHATML_DEFAULT_SYSTEM and system is None
            )
