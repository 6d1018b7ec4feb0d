"""Tests for the shipped data: instruction tasks (JSONL), verb lists and concept lexicons.

These files are what users see first and what the attention and FFN analyses count against, so every rule
stated in `lm_interp_plugin/data/README.md` is checked here.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTRUCT = ROOT / "tasks" / "interp_instruct.jsonl"
INSTRUCT_MC = ROOT / "tasks" / "interp_instruct_mc.jsonl"
DATA = ROOT / "lm_interp_plugin" / "data"

REQUIRED_CATEGORIES = {
    "rewriting",
    "classification",
    "extraction",
    "brainstorming",
    "coding",
    "math",
    "translation",
    "summarisation",
    "question_answering",
    "formatting",
}
WORD = re.compile(r"\S+")


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            assert line.strip(), f"{path.name}: blank line {n}"
            rows.append(json.loads(line))
    return rows


def _render(row: dict) -> str:
    """The prompt as the interp_instruct task renders it."""
    if row["input"]:
        return f"{row['instruction']}\n\nInput: {row['input']}\n\nOutput:"
    return f"{row['instruction']}\n\nOutput:"


@pytest.fixture(scope="module")
def instruct() -> list[dict]:
    return _read_jsonl(INSTRUCT)


@pytest.fixture(scope="module")
def mc() -> list[dict]:
    return _read_jsonl(INSTRUCT_MC)


# ---------------------------------------------------------------- interp_instruct.jsonl


def test_instruct_schema(instruct: list[dict]) -> None:
    for row in instruct:
        assert set(row) == {"id", "category", "instruction", "input", "reference"}, row.get("id")
        for key in row:
            assert isinstance(row[key], str), (row["id"], key)
        assert row["instruction"].strip() and row["reference"].strip(), row["id"]
        assert row["instruction"] == row["instruction"].strip(), row["id"]
        assert "\n" not in row["instruction"], f"{row['id']}: instruction must be sentence(s) on one line"


def test_instruct_counts(instruct: list[dict]) -> None:
    per_cat = Counter(row["category"] for row in instruct)
    assert len(instruct) >= 200
    assert len(per_cat) >= 10
    assert REQUIRED_CATEGORIES <= set(per_cat), REQUIRED_CATEGORIES - set(per_cat)
    small = {c: n for c, n in per_cat.items() if n < 15}
    assert not small, f"categories with fewer than 15 items: {small}"


def test_instruct_ids(instruct: list[dict]) -> None:
    ids = [row["id"] for row in instruct]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    for row in instruct:
        assert re.fullmatch(rf"{re.escape(row['category'])}_\d{{3}}", row["id"]), row["id"]


def test_instruct_instruction_separate_from_input(instruct: list[dict]) -> None:
    for row in instruct:
        assert row["instruction"] not in row["input"], row["id"]
        assert "Output:" not in row["input"] and "Input:" not in row["input"], row["id"]
        prompt = _render(row)
        # the instruction span is exactly the prompt's first len(instruction) characters, found once
        assert prompt.startswith(row["instruction"]) and prompt.count(row["instruction"]) == 1, row["id"]


def test_instruct_pairs_unique_and_inputs_mostly_present(instruct: list[dict]) -> None:
    pairs = [(row["instruction"], row["input"]) for row in instruct]
    assert len(pairs) == len(set(pairs))
    instructions = [row["instruction"] for row in instruct]
    assert len(instructions) == len(set(instructions)), "instructions should not repeat"
    empty = sum(not row["input"] for row in instruct)
    assert 0 < empty <= 0.2 * len(instruct), f"{empty} empty inputs: input may be empty for a few items only"


def test_instruct_references_short(instruct: list[dict]) -> None:
    long = {row["id"]: len(WORD.findall(row["reference"])) for row in instruct}
    long = {k: v for k, v in long.items() if v > 60}
    assert not long, f"references over 60 words: {long}"


def test_instruct_varied_verbs(instruct: list[dict]) -> None:
    first_words = Counter(row["instruction"].split()[0].lower() for row in instruct)
    assert len(first_words) >= 40, first_words.most_common(10)
    assert first_words.most_common(1)[0][1] <= 0.15 * len(instruct), first_words.most_common(3)
    lengths = [len(row["instruction"].split()) for row in instruct]
    assert min(lengths) <= 4 and max(lengths) >= 14, (min(lengths), max(lengths))


# ---------------------------------------------------------------- interp_instruct_mc.jsonl


def test_mc_schema(mc: list[dict]) -> None:
    for row in mc:
        assert set(row) == {"id", "group_id", "category", "instruction", "input", "choices", "label"}, row
        for key in ("id", "group_id", "category", "instruction", "input"):
            assert isinstance(row[key], str) and row[key].strip(), (row["id"], key)
        choices = row["choices"]
        assert isinstance(choices, list) and 2 <= len(choices) <= 5, row["id"]
        assert all(isinstance(c, str) and c.strip() for c in choices), row["id"]
        assert len(set(choices)) == len(choices), f"{row['id']}: choices not unique"
        assert isinstance(row["label"], int) and not isinstance(row["label"], bool), row["id"]
        assert 0 <= row["label"] < len(choices), row["id"]
        assert row["instruction"] not in row["input"], row["id"]
        assert "\n" not in row["instruction"], row["id"]


def test_mc_counts_and_ids(mc: list[dict], instruct: list[dict]) -> None:
    assert len(mc) >= 80
    ids = [row["id"] for row in mc]
    assert len(ids) == len(set(ids))
    assert not set(ids) & {row["id"] for row in instruct}, "MC ids must not collide with free-form ids"
    known = {row["category"] for row in instruct}
    assert {row["category"] for row in mc} <= known


def test_mc_groups_share_input_and_choices(mc: list[dict]) -> None:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in mc:
        groups[row["group_id"]].append(row)
    assert len(groups) >= 20
    for gid, rows in groups.items():
        assert len(rows) >= 2, f"{gid} has a single item"
        assert len({r["input"] for r in rows}) == 1, f"{gid}: inputs differ"
        assert len({tuple(r["choices"]) for r in rows}) == 1, f"{gid}: choices differ"
        assert len({r["instruction"] for r in rows}) == len(rows), f"{gid}: repeated instruction"
        assert len({r["label"] for r in rows}) >= 2, f"{gid}: the instruction never changes the answer"


def test_mc_input_identifies_group(mc: list[dict]) -> None:
    """One group per (input, choices): otherwise 'same input, different answer' pairs hide across groups."""
    key_to_groups: dict[tuple, set[str]] = defaultdict(set)
    for row in mc:
        key_to_groups[(row["input"], tuple(row["choices"]))].add(row["group_id"])
    assert all(len(g) == 1 for g in key_to_groups.values())


def test_mc_label_balance(mc: list[dict]) -> None:
    """A model that always picks one position must not do well."""
    by_label = Counter(row["label"] for row in mc)
    assert max(by_label.values()) <= 0.4 * len(mc), by_label


def test_mc_code_answers_match_execution(mc: list[dict]) -> None:
    """Independent check of the Python-expression items: evaluate them and compare with the labelled
    choice."""
    checked = 0
    for row in mc:
        m = re.fullmatch(r"What (?:is|does) (.+?)(?: return| evaluate to)?\?", row["instruction"])
        if row["category"] != "coding" or not m or not row["input"].startswith("nums ="):
            continue
        scope: dict = {}
        exec(row["input"], {}, scope)
        value = eval(m.group(1), {"max": max, "min": min, "sum": sum}, scope)
        assert str(value) == row["choices"][row["label"]], row["id"]
        checked += 1
    assert checked >= 4


# ---------------------------------------------------------------- verbs.json and concepts.json


def _load_json(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def _check_lexicon(name: str, words: list, lo: int, hi: int) -> None:
    assert isinstance(words, list) and lo <= len(words) <= hi, (name, len(words))
    assert all(isinstance(w, str) and w and w == w.strip() for w in words), name
    assert all(w == w.lower() for w in words), (name, [w for w in words if w != w.lower()])
    assert len(words) == len(set(words)), (name, [w for w, n in Counter(words).items() if n > 1])


def test_verbs() -> None:
    verbs = _load_json("verbs.json")
    assert set(verbs) == {"instruction_verbs", "general_verbs"}
    for key, words in verbs.items():
        _check_lexicon(key, words, 30, 60)
        assert all(w.isalpha() for w in words), key
    overlap = set(verbs["instruction_verbs"]) & set(verbs["general_verbs"])
    assert not overlap, f"verb lists overlap: {sorted(overlap)}"
    assert {"write", "summarize", "translate", "classify"} <= set(verbs["instruction_verbs"])


def test_instruction_verbs_are_used_in_tasks(instruct: list[dict]) -> None:
    """The instruction verbs are the verbs the shipped instructions actually use."""
    verbs = set(_load_json("verbs.json")["instruction_verbs"])
    tokens = Counter(w for row in instruct for w in re.findall(r"[a-z]+", row["instruction"].lower()))
    used = {v for v in verbs if tokens[v]}
    assert len(used) >= 0.6 * len(verbs), sorted(verbs - used)


def test_concepts() -> None:
    concepts = _load_json("concepts.json")
    assert set(concepts) == {"task_concepts", "linguistic_levels", "validation_categories"}
    validation = concepts.pop("validation_categories")
    categories = {json.loads(line)["category"] for line in (ROOT / "tasks" / "interp_instruct.jsonl").open()}
    assert set(validation) == set(concepts["task_concepts"])  # every concept can be validated
    assert all(cats and set(cats) <= categories for cats in validation.values()), validation
    assert set(concepts["task_concepts"]) == {"writing", "coding", "math", "translation"}
    assert set(concepts["linguistic_levels"]) == {"morphology", "syntax", "semantics"}
    for section in concepts.values():
        for name, words in section.items():
            _check_lexicon(name, words, 40, 80)
        seen: dict[str, str] = {}
        for name, words in section.items():
            for w in words:
                assert w not in seen, f"{w!r} is in both {seen[w]} and {name}"
                seen[w] = name
    assert {"function", "python", "loop"} <= set(concepts["task_concepts"]["coding"])
    assert {"ing", "ed", "tion"} <= set(concepts["linguistic_levels"]["morphology"])
