"""Instruction spans to token labels: with and without BOS, several spans, chat templates, no offsets."""

from __future__ import annotations

import pytest

from lm_interp_plugin.spans import InstructionNotFoundError, label_tokens, locate_fields, token_offsets
from lm_interp_plugin.testing.tiny import sample_corpus, train_tokenizer

PROMPT = "Rewrite the sentence in French.\n\nInput: the cat sat on the mat.\n\nOutput:"
INSTRUCTION = "Rewrite the sentence in French."


def instruction_text(tok, text, ids, labels):
    return tok.decode([i for i, lab in zip(ids, labels) if lab == "instruction"]).strip()


@pytest.mark.parametrize("add_bos", [True, False])
def test_instruction_tokens_are_exactly_the_instruction(add_bos):
    tok = train_tokenizer(sample_corpus(), vocab_size=400, add_bos=add_bos)
    ids = tok(PROMPT)["input_ids"]
    assert (ids[0] == tok.bos_token_id) == add_bos
    offsets = token_offsets(tok, PROMPT, ids, add_special_tokens=True)
    labels = label_tokens(offsets, PROMPT, locate_fields(PROMPT, {"instruction": [INSTRUCTION]}))
    assert instruction_text(tok, PROMPT, ids, labels) == INSTRUCTION
    assert (labels[0] == "special") == add_bos
    # the instruction is one contiguous block at the start (after BOS)
    first = labels.index("instruction")
    assert first == (1 if add_bos else 0)
    assert "instruction" not in labels[labels.index("template", first) :]


def test_several_spans_and_parts_with_priority(lm_tokenizer):
    text = "Answer briefly. Question: what is five? Be polite.\n\nOutput:"
    spans = locate_fields(
        text, {"instruction": ["Answer briefly.", "Be polite."], "content": ["Question: what is five?"]}
    )
    ids = lm_tokenizer(text)["input_ids"]
    labels = label_tokens(token_offsets(lm_tokenizer, text, ids, True), text, spans)
    got = lm_tokenizer.decode([i for i, lab in zip(ids, labels) if lab == "instruction"])
    assert got.split() == ["Answer", "briefly.", "Be", "polite."]
    assert "content" in labels and labels[-1] == "template"


def test_last_occurrence_is_used_so_fewshot_copies_do_not_count():
    text = "Say hi.\n\nOutput: hi\n\nSay hi.\n\nOutput:"
    (span,) = locate_fields(text, {"instruction": ["Say hi."]})["instruction"]
    assert span == (text.rindex("Say hi."), text.rindex("Say hi.") + len("Say hi."))


def test_chat_template_prompt(lm_tokenizer):
    chat = f"<|user|>\n{INSTRUCTION}\nthe cat sat.<|end|>\n<|assistant|>\n"
    ids = lm_tokenizer(chat)["input_ids"]
    labels = label_tokens(
        token_offsets(lm_tokenizer, chat, ids, True),
        chat,
        locate_fields(chat, {"instruction": [INSTRUCTION]}),
    )
    assert (
        lm_tokenizer.decode([i for i, lab in zip(ids, labels) if lab == "instruction"]).strip() == INSTRUCTION
    )


def test_offsets_by_decoding_when_reencoding_differs(lm_tokenizer):
    ids = lm_tokenizer(PROMPT)["input_ids"]
    by_decoding = token_offsets(lm_tokenizer, PROMPT, ids, add_special_tokens=False)  # forces the fallback
    by_offsets = token_offsets(lm_tokenizer, PROMPT, ids, add_special_tokens=True)
    assert by_decoding == by_offsets


def test_missing_instruction_names_the_doc():
    with pytest.raises(InstructionNotFoundError, match="task 'x', doc id=3.*Translate"):
        locate_fields(PROMPT, {"instruction": ["Translate it."]}, where="task 'x', doc id=3")
    assert locate_fields(PROMPT, {"content": ["not there"]}) == {}
