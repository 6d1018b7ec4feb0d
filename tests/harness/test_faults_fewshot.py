"""Reliability rows of few-shot prompts (issue 24): demonstrations never contain the evaluated item, and
they are labelled ``fewshot``, not ``template``, on the shipped tasks too."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

TASKS = Path(__file__).resolve().parents[2] / "tasks"
SHIPPED = ("interp_instruct", "interp_instruct_mc")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def shipped():
    from lmeval_run import plugin_task_manager

    return plugin_task_manager(include_defaults=False).load(list(SHIPPED))["tasks"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_tasks_have_a_fewshot_split_of_other_items(name):
    """No item of the evaluated split (by id, instruction or input) is among the demonstrations."""
    test, fewshot = _rows(TASKS / f"{name}.jsonl"), _rows(TASKS / f"{name}_fewshot.jsonl")
    assert len(fewshot) >= 5
    for key in ("id", "instruction", "input"):
        seen = {row[key] for row in test if row[key]}
        assert not [row["id"] for row in fewshot if row[key] and row[key] in seen], key


@pytest.mark.parametrize("name", SHIPPED)
def test_no_prompt_contains_its_own_item(shipped, name):
    """`--num_fewshot 3` over every document: the evaluated item occurs once in its prompt (before the fix
    lm-eval drew demonstrations from the test split, and 4 of 118 prompts held their own item with its
    gold answer)."""
    task = shipped[name]
    task.set_config("num_fewshot", 3)
    task.set_fewshot_seed(1234)
    assert task.fewshot_source() == ("fewshot", False)
    for doc in task.test_docs():
        context = task.fewshot_context(doc, num_fewshot=3)
        assert context.count(task.doc_to_text(doc)) == 1, doc["id"]


def _leaky_task(tmp_path: Path, fewshot_split: str | None = None, split: str = "test"):
    from lm_interp_plugin.harness.tasks import InterpTask

    data = tmp_path / "items.jsonl"
    rows = _rows(TASKS / "interp_instruct_mc.jsonl")[:6]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = {
        "task": "leaky",
        "dataset_path": "json",
        f"{split}_split": split,
        "output_type": "multiple_choice",
        "doc_to_text": "{{instruction}}\n\nInput: {{input}}\n\nOutput:",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "metric_list": [{"metric": "acc"}],
        "metadata": {"interp": {"instruction_fields": ["instruction"], "data_files": {split: str(data)}}},
    }
    if fewshot_split:
        config["fewshot_split"] = fewshot_split
    return InterpTask(config=config)


@pytest.mark.parametrize("split", ["test", "validation"])
def test_demonstrations_from_the_evaluated_split_are_refused(tmp_path, split):
    """No fewshot_split: lm-eval falls back to the evaluated split (a test split; or a validation split, as
    with a local copy that lacks the training split) and does not leave the evaluated item out."""
    from lm_interp_plugin.harness.tasks import FewshotLeakError

    task = _leaky_task(tmp_path, split=split)
    doc = next(iter(task.eval_docs))
    assert task.fewshot_source() == (split, False)
    task.fewshot_context(doc, num_fewshot=0)  # zero-shot: nothing to refuse
    with pytest.raises(FewshotLeakError, match=rf"task leaky: --num_fewshot 2 .*'{split}'.*fewshot_split"):
        task.fewshot_context(doc, num_fewshot=2)


def test_fewshot_split_equal_to_the_test_split_warns_once(tmp_path, caplog):
    """lm-eval leaves the document itself out then, but the other evaluated items are the demonstrations."""
    task = _leaky_task(tmp_path, fewshot_split="test")
    with caplog.at_level(logging.WARNING, logger="lm_interp_plugin"):
        for doc in list(task.test_docs())[:3]:
            context = task.fewshot_context(doc, num_fewshot=2)
            assert context.count(task.doc_to_text(doc)) == 1
    warned = [r for r in caplog.records if "come from the evaluated split 'test'" in r.getMessage()]
    assert len(warned) == 1


@pytest.mark.parametrize("name", SHIPPED)
def test_demonstrations_of_field_declared_tasks_are_fewshot(shipped, name):
    """The shipped tasks declare their fields (metadata.interp.instruction_fields): their demonstrations
    are `fewshot`, and no text before the evaluated example is left as template."""
    task = shipped[name]
    task.set_config("num_fewshot", 2)
    task.set_fewshot_seed(1234)
    for doc in list(task.test_docs())[:4]:
        context = task.fewshot_context(doc, num_fewshot=2, system_instruction="Be brief.")
        spans = task.segment(doc, context)
        start = context.rfind(task.doc_to_text(doc))
        covered = [False] * len(context)
        for part in ("fewshot", "instruction"):
            for s, e in spans.get(part, []):
                covered[s:e] = [True] * (e - s)
        assert spans["fewshot"] and all(e <= start for s, e in spans["fewshot"])
        left = "".join(ch for ch, c in zip(context[:start], covered) if not c)
        assert not left.strip(), repr(left)
        assert context[spans["instruction"][0][0] :].startswith("Be brief.")
