"""The segmenter against a reader's labels: >= 100 prompts of 11 stock tasks in 0-shot, few-shot,
chat-template and system-instruction settings (tests/fixtures/labelled_parts.jsonl, labelled_parts.py)."""

from __future__ import annotations

import pytest
from labelled_parts import format_confusion, load_set, score


def test_the_labelled_set_covers_tasks_and_settings():
    entries = load_set()
    assert len(entries) >= 60 and len({e["task"] for e in entries}) >= 10
    assert {e["chat"] for e in entries} >= {None, "chatml", "llama3", "mistral"}
    assert any(e["num_fewshot"] for e in entries) and any(e["system_instruction"] for e in entries)
    assert any(e["system_instruction"] and e["num_fewshot"] and not e["chat"] for e in entries)  # defect 1
    for e in entries:  # spans are in range and do not overlap
        spans = sorted(s for part in e["parts"].values() for s in part)
        assert all(0 <= s < t <= len(e["prompt"]) for s, t in spans)
        assert all(t1 <= s2 for (_, t1), (s2, _) in zip(spans, spans[1:]))


@pytest.mark.slow
def test_instruction_tokens_agree_with_the_reader(lm_tokenizer, capsys):
    result = score(lm_tokenizer, load_set())
    with capsys.disabled():
        print("\n" + format_confusion(result["confusion"]))
        print(f"instruction precision {result['precision']:.3f} recall {result['recall']:.3f}")
    assert result["precision"] >= 0.9 and result["recall"] >= 0.95, result["precision"]
    # no demonstration, field label or answer cue is ever called instruction
    for part in ("fewshot", "label", "cue", "chat", "choices"):
        assert result["confusion"][(part, "instruction")] == 0, part
