"""The demo's synthetic data and its locally built base / instruction-tuned pair."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from lm_interp_plugin.demo import build, synthetic
from lm_interp_plugin.demo.build import (
    DEFAULT_SEED,
    DemoRecipe,
    build_demo_pair,
    check_hashes,
    deterministic,
    encode_example,
    remove_stale_partials,
    shipped_pair,
    shipped_pair_dir,
    training_threads,
)

INSTRUCT_FIELDS = {"id", "category", "instruction", "input", "reference"}
MC_FIELDS = {"id", "group_id", "category", "instruction", "input", "choices", "label"}


# ---------------------------------------------------------------- synthetic data
def test_generators_are_deterministic_and_seed_dependent():
    assert synthetic.pretraining_text(20, seed=3) == synthetic.pretraining_text(20, seed=3)
    assert synthetic.instruction_examples(30, seed=3) == synthetic.instruction_examples(30, seed=3)
    assert synthetic.heldout_instruct(30, seed=3) == synthetic.heldout_instruct(30, seed=3)
    assert synthetic.heldout_instruct_mc(12, seed=3) == synthetic.heldout_instruct_mc(12, seed=3)
    assert synthetic.instruction_examples(30, seed=3) != synthetic.instruction_examples(30, seed=4)
    assert synthetic.pretraining_text(20, seed=3) != synthetic.pretraining_text(20, seed=4)


def test_answers_follow_the_task_definitions():
    text = "owl apple red cup"
    expected = {
        "copy": "owl apple red cup",
        "reverse": "cup red apple owl",
        "first_word": "owl",
        "last_word": "cup",
        "upper_case": "OWL APPLE RED CUP",
        "count": "4",
        "translate": " ".join(synthetic.TOY_DICTIONARY[w] for w in text.split()),
        "sort": "apple cup owl red",
        "animal": "yes",
    }
    assert {c: synthetic.answer(c, text) for c in synthetic.CATEGORIES} == expected
    assert synthetic.answer("animal", "apple red cup") == "no"
    with pytest.raises(ValueError, match="unknown demo task category 'poem'"):
        synthetic.answer("poem", text)


def test_word_tasks_take_their_word_from_the_instruction():
    text = "owl apple red"
    assert synthetic.answer("insert", text, "sun") == "owl sun apple sun red sun"
    assert synthetic.answer("replace", text, "sun") == "sun sun sun"
    assert synthetic.answer("prefix", text, "sun") == "sun owl apple red"
    with pytest.raises(ValueError, match="needs the word"):
        synthetic.answer("insert", text)
    assert not set(synthetic.INSTRUCTION_WORDS) & set(synthetic.INPUT_WORDS)
    categories = synthetic.CATEGORIES + synthetic.WORD_CATEGORIES
    items = synthetic.heldout_instruct(len(categories) * 3, seed=1, categories=categories)
    assert {x["category"] for x in items} == set(categories)
    for x in items:
        if x["category"] not in synthetic.WORD_CATEGORIES:
            continue
        named = [w for w in synthetic.INSTRUCTION_WORDS if w in _vocabulary([x["instruction"]])]
        assert len(named) == 1, x  # the instruction names exactly one word ...
        assert (
            named[0] in x["reference"].split() and named[0] not in x["input"].split()
        )  # ... the answer uses
        assert x["reference"] == synthetic.answer(x["category"], x["input"], named[0])
        phrasings = [f.format(word=named[0]) for f in synthetic.WORD_INSTRUCTIONS[x["category"]]]
        assert x["instruction"] in phrasings
    mc = synthetic.heldout_instruct_mc(40, seed=1, categories=categories)
    assert {x["category"] for x in mc} & set(synthetic.WORD_CATEGORIES)
    for x in mc:
        word = next((w for w in synthetic.INSTRUCTION_WORDS if w in _vocabulary([x["instruction"]])), None)
        assert x["choices"][x["label"]] == synthetic.answer(x["category"], x["input"], word)


def test_answer_depends_on_the_instruction():
    for x in synthetic.heldout_instruct(40):
        others = {synthetic.answer(c, x["input"]) for c in synthetic.CATEGORIES if c != x["category"]}
        assert len(others - {x["reference"]}) >= 4, x  # the same input has other answers under other tasks
    assert len(set(synthetic.TOY_DICTIONARY.values())) == len(synthetic.INPUT_WORDS)
    assert not set(synthetic.TOY_DICTIONARY.values()) & set(synthetic.INPUT_WORDS)


def test_items_have_the_task_schema_and_cover_every_category():
    items = synthetic.heldout_instruct(len(synthetic.CATEGORIES) * 2)
    assert all(set(x) == INSTRUCT_FIELDS for x in items)
    assert {x["category"] for x in items} == set(synthetic.CATEGORIES)
    assert all(x["instruction"] in synthetic.INSTRUCTIONS[x["category"]] for x in items)
    assert all(x["reference"] == synthetic.answer(x["category"], x["input"]) for x in items)
    assert len({x["id"] for x in items}) == len(items)
    assert synthetic.format_prompt("Do it.", "a b") == "Do it.\n\nInput: a b\n\nOutput:"
    assert synthetic.format_answer("b a") == " b a"


def test_heldout_inputs_never_occur_in_training():
    train = {x["input"] for x in synthetic.instruction_examples(3000)}
    heldout = {x["input"] for x in synthetic.heldout_instruct(300)}
    heldout |= {x["input"] for x in synthetic.heldout_instruct_mc(100)}
    assert train and heldout and not train & heldout
    assert all(synthetic.is_heldout_input(t) for t in heldout)
    assert not any(synthetic.is_heldout_input(t) for t in train)
    # pretraining text never contains a held-out input either (its word lists come from the training split)
    corpus = " ".join(synthetic.pretraining_text(300))
    assert not any(f"said {t}," in corpus or f"said {t} and" in corpus for t in heldout)


def _vocabulary(docs: list[str]) -> set[str]:
    return set(" ".join(docs).lower().replace(".", " ").replace(",", " ").replace("?", " ").split())


def test_pretraining_text_has_no_instruction_format():
    docs = synthetic.pretraining_text(200)
    assert not any("Input:" in d or "Output:" in d for d in docs)
    words = _vocabulary(docs)
    needed = {"reverse", "order", "first", "last", "word", "upper", "count", "number", "translate", "toy"}
    needed |= {"alphabetically", "animal", "yes", "no", "text"}
    assert needed <= words, needed - words
    assert not set(synthetic.INSTRUCTION_WORDS) & words
    with_words = synthetic.pretraining_text(200, instruction_words=True)
    assert set(synthetic.INSTRUCTION_WORDS) <= _vocabulary(with_words)
    assert not any("Input:" in d or "after every word" in d for d in with_words)


def test_mc_groups_share_input_and_choices_and_differ_in_instruction():
    items = synthetic.heldout_instruct_mc(18, group_size=3)
    assert len(items) == 18 and all(set(x) == MC_FIELDS for x in items)
    groups: dict[str, list[dict]] = {}
    for x in items:
        groups.setdefault(x["group_id"], []).append(x)
    assert len(groups) == 6
    for members in groups.values():
        assert len({x["input"] for x in members}) == 1
        assert len({tuple(x["choices"]) for x in members}) == 1
        assert len({x["label"] for x in members}) == len(members)  # same input, different answers
        assert len({x["category"] for x in members}) == len(members)
        for x in members:
            assert len(set(x["choices"])) == len(x["choices"]) == 3
            assert x["choices"][x["label"]] == synthetic.answer(x["category"], x["input"])
    assert len(synthetic.heldout_instruct_mc(5, group_size=4)) == 5
    with pytest.raises(ValueError, match="group_size"):
        synthetic.heldout_instruct_mc(4, group_size=1)


# ---------------------------------------------------------------- the build
@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    cache = tmp_path_factory.mktemp("demo")
    return cache, build_demo_pair(cache, recipe=DemoRecipe.small(), seed=0)


def test_small_build_writes_loadable_models(small_build):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, models = small_build
    for path in (models.base_path, models.tuned_path):
        model = AutoModelForCausalLM.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        assert model.config.model_type == "llama"
        assert model.config.vocab_size == len(tok)
        ids = tok(synthetic.format_prompt("Write the last word.", "cat dog"), return_tensors="pt")[
            "input_ids"
        ]
        assert ids[0, 0].item() == tok.bos_token_id
        assert torch.isfinite(model(input_ids=ids).logits).all()
    base = AutoModelForCausalLM.from_pretrained(models.base_path).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(models.tuned_path).state_dict()
    assert base.keys() == tuned.keys()
    assert any(not torch.equal(base[k], tuned[k]) for k in base)  # tuning changed the weights


def test_manifest_and_heldout_files(small_build):
    _, models = small_build
    manifest = json.loads(models.manifest_path.read_text())
    recipe = DemoRecipe.small()
    assert manifest["key"] == recipe.key(0) and manifest["recipe"]["hidden"] == recipe.hidden
    for name in ("base", "tuned"):
        ev = manifest["evaluation"][name]
        assert ev["exact_match"]["n"] == recipe.eval_items and ev["mc"]["n"] == recipe.eval_mc_items
        assert 0.0 <= ev["exact_match"]["overall"] <= 1.0 and 0.0 <= ev["mc"]["overall"] <= 1.0
    assert models.stats["evaluation"] == manifest["evaluation"]
    rows = [json.loads(line) for line in models.heldout_path.read_text().splitlines()]
    assert rows == synthetic.heldout_instruct(recipe.eval_items, seed=0)
    rows = [json.loads(line) for line in models.heldout_mc_path.read_text().splitlines()]
    assert rows == synthetic.heldout_instruct_mc(recipe.eval_mc_items, seed=0, categories=recipe.categories)


def test_second_call_uses_the_cache(small_build, monkeypatch):
    from lm_interp_plugin.demo import build

    cache, models = small_build

    def fail(*args, **kwargs):
        raise AssertionError("the cached build was rebuilt")

    monkeypatch.setattr(build, "_build_into", fail)
    again = build_demo_pair(cache, recipe=DemoRecipe.small(), seed=0)
    assert (again.base_path, again.tuned_path) == (models.base_path, models.tuned_path)
    assert again.stats == models.stats
    with pytest.raises(AssertionError, match="rebuilt"):
        build_demo_pair(cache, recipe=DemoRecipe.small(), seed=0, force=True)
    assert DemoRecipe.small().key(0) != DemoRecipe.small().key(1) != DemoRecipe().key(1)


def test_same_seed_gives_identical_weights(small_build, tmp_path):
    from safetensors.torch import load_file

    _, models = small_build
    again = build_demo_pair(tmp_path, recipe=DemoRecipe.small(), seed=0)
    for first, second in ((models.base_path, again.base_path), (models.tuned_path, again.tuned_path)):
        a, b = load_file(Path(first) / "model.safetensors"), load_file(Path(second) / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_build_restores_global_torch_state(tmp_path):
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    was = torch.are_deterministic_algorithms_enabled()
    with deterministic(7):
        torch.rand(5)
    assert torch.are_deterministic_algorithms_enabled() == was
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG stream is untouched
    with pytest.raises(RuntimeError, match="boom"), deterministic(7):
        raise RuntimeError("boom")
    assert torch.are_deterministic_algorithms_enabled() == was


def test_answer_tokens_follow_the_prompt_tokens(small_build):
    from transformers import AutoTokenizer

    _, models = small_build
    tok = AutoTokenizer.from_pretrained(models.tuned_path)
    ids, n_prompt = encode_example(tok, "Write the first word.", "cat dog", "cat")
    prompt = tok(synthetic.format_prompt("Write the first word.", "cat dog"))["input_ids"]
    assert ids[:n_prompt] == prompt and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == " cat"


def test_build_log_and_hashes_beside_the_weights(small_build):
    _, models = small_build
    folder = models.manifest_path.parent
    log = (folder / "build.log").read_text()
    assert "torch threads" in log and "pretrain step 1/3: loss" in log and "instruct-tune step 3/3" in log
    assert json.loads(models.manifest_path.read_text())["threads"] >= 1
    assert check_hashes(folder) == []
    listed = {line.split("  ", 1)[1] for line in (folder / "SHA256SUMS").read_text().splitlines()}
    assert {"base/model.safetensors", "tuned/model.safetensors", "demo_manifest.json"} <= listed


def test_hash_check_names_a_changed_file(small_build, tmp_path):
    import shutil

    _, models = small_build
    copy = shutil.copytree(models.manifest_path.parent, tmp_path / "pair")
    (copy / "heldout_instruct.jsonl").write_text("{}\n")
    (copy / "tuned" / "model.safetensors").unlink()
    assert check_hashes(copy) == ["heldout_instruct.jsonl", "tuned/model.safetensors"]


def test_training_threads(monkeypatch):
    monkeypatch.delenv(build.THREADS_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 0.0, 0.0))
    assert training_threads()[0] == 4  # 7 free cores, capped at MAX_TRAINING_THREADS
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert training_threads()[0] == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (7.0, 0.0, 0.0))
    assert training_threads() == (1, "2 usable cores, load average 7.00, at most 4")  # busy: one thread
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert training_threads()[0] == 2
    monkeypatch.setenv(build.THREADS_ENV, "3")
    assert training_threads() == (3, "$LM_INTERP_DEMO_THREADS=3")


def test_build_sets_and_restores_the_thread_count(tmp_path, monkeypatch):
    seen = []

    def fake(out, recipe, seed):
        seen.append(torch.get_num_threads())
        (out / "base").mkdir()
        return {}

    monkeypatch.setattr(build, "_build_into", fake)
    before = torch.get_num_threads()
    models = build_demo_pair(tmp_path, recipe=DemoRecipe.small(), threads=1)
    assert seen == [1] and torch.get_num_threads() == before
    assert json.loads(models.manifest_path.read_text())["threads"] == 1


def test_partial_folders_are_cleaned(tmp_path, monkeypatch):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that no longer runs: the leftover of a killed build
    stale = tmp_path / f"demo-0123456789abcdef.partial-{proc.pid}"
    live = tmp_path / f"demo-0123456789abcdef.partial-{os.getppid()}"  # a build still running elsewhere
    for folder in (stale, live):
        (folder / "base").mkdir(parents=True)
    assert remove_stale_partials(tmp_path) == [stale]
    assert not stale.exists() and live.is_dir()

    def boom(out, recipe, seed):
        (out / "base").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "_build_into", boom)
    with pytest.raises(KeyboardInterrupt):
        build_demo_pair(tmp_path, recipe=DemoRecipe.small())
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]  # the interrupted build left nothing


# ---------------------------------------------------------------- the shipped pair
def test_shipped_pair_is_intact_and_small():
    models = shipped_pair()
    folder = shipped_pair_dir()
    assert models.manifest_path == folder / "demo_manifest.json" and check_hashes(folder) == []
    manifest = json.loads(models.manifest_path.read_text())
    assert manifest["key"] == DemoRecipe().key(DEFAULT_SEED) and manifest["seed"] == DEFAULT_SEED
    assert manifest["threads"] == 1
    assert (folder / "build.log").read_text().count("loss") >= 10
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 8 * 2**20, size
    ev = manifest["evaluation"]
    assert ev["tuned"]["exact_match"]["overall"] >= ev["base"]["exact_match"]["overall"] + 0.5
    assert ev["tuned"]["mc"]["overall"] >= ev["base"]["mc"]["overall"] + 0.4
    rows = [json.loads(line) for line in models.heldout_mc_path.read_text().splitlines()]
    assert rows == synthetic.heldout_instruct_mc(
        DemoRecipe().eval_mc_items, seed=DEFAULT_SEED, categories=DemoRecipe().categories
    )


def test_shipped_pair_loads_and_follows_an_instruction():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lm_interp_plugin.demo.build import greedy_answer

    models = shipped_pair()
    tok = AutoTokenizer.from_pretrained(models.tuned_path)
    tuned = AutoModelForCausalLM.from_pretrained(models.tuned_path).eval()
    base = AutoModelForCausalLM.from_pretrained(models.base_path).eval()
    assert greedy_answer(tuned, tok, "Write the first word of the text.", "owl red cup") == "owl"
    assert greedy_answer(base, tok, "Write the first word of the text.", "owl red cup") != "owl"


def test_a_damaged_shipped_pair_is_refused(tmp_path, monkeypatch):
    import shutil

    copy = shutil.copytree(shipped_pair_dir(), tmp_path / "demo_pair")
    monkeypatch.setattr(build, "shipped_pair_dir", lambda: copy)
    (copy / "base" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"does not match its SHA256SUMS \(base/config.json\).*--rebuild"):
        shipped_pair()
    shutil.rmtree(copy)
    with pytest.raises(FileNotFoundError, match="shipped demo pair is missing"):
        shipped_pair()


@pytest.mark.skipif(
    not os.environ.get("LM_INTERP_FULL_DEMO"),
    reason="full demo build takes minutes; set LM_INTERP_FULL_DEMO=1 to run it",
)
def test_full_build_tuned_model_follows_instructions(tmp_path):
    models = build_demo_pair(tmp_path)
    ev = models.stats["evaluation"]
    assert ev["tuned"]["exact_match"]["overall"] >= ev["base"]["exact_match"]["overall"] + 0.3
    assert ev["tuned"]["mc"]["overall"] > ev["base"]["mc"]["overall"]


@pytest.mark.slow  # a real build process, killed
def test_a_terminated_build_removes_its_partial_folder(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import time; from pathlib import Path; from lm_interp_plugin.demo import build\n"
        "def slow(out, recipe, seed):\n"
        "    (out / 'base').mkdir(); Path(out.parent / 'started').touch(); time.sleep(60)\n"
        "build._build_into = slow\n"
        f"build.build_demo_pair(Path({str(tmp_path)!r}), recipe=build.DemoRecipe.small())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert list(tmp_path.glob("demo-*.partial-*")), "the build did not start"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not list(tmp_path.glob("demo-*.partial-*"))
