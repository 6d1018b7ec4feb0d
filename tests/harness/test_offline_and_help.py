"""Standard benchmarks on a local copy of their data, one clear line without the hub; the CLI tells what
interp-hf takes and which tasks are the plugin's."""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path

import pytest

from lm_interp_plugin.harness import launcher, local_data, preflight, variants
from lm_interp_plugin.harness.local_data import DATA_DIR_ENV, DatasetUnavailableError, load_local_dataset
from lm_interp_plugin.interpret.settings_reference import settings_reference

from lmeval_run import cli_run, run_cli

REPO = Path(__file__).resolve().parents[2]
ARC_ROWS = [
    {
        "id": f"q{i}",
        "question": q,
        "choices": {"text": choices, "label": ["A", "B", "C", "D"]},
        "answerKey": key,
    }
    for i, (q, choices, key) in enumerate(
        [
            ("Which is a liquid at room temperature?", ["water", "iron", "salt", "wood"], "A"),
            ("What do plants need to make food?", ["sand", "sunlight", "noise", "plastic"], "B"),
            ("Which animal can fly?", ["dog", "fish", "bird", "cow"], "C"),
        ]
    )
]


def _jsonl_copy(root: Path, task: str = "arc_easy", split: str = "test") -> Path:
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ARC_ROWS))
    return root


def _variant(base: str = "arc_easy", **interp) -> variants.InterpVariant:
    return variants.InterpVariant(
        config={"task": f"interp_{base}", "metadata": {"interp": {"base": base, **interp}}}
    )


def test_variant_reads_a_jsonl_copy(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(_jsonl_copy(tmp_path)))
    monkeypatch.setattr(variants, "hub_reachable", lambda: pytest.fail("the hub must not be asked"))
    task = _variant()
    docs = list(task.test_docs())
    assert [d["id"] for d in docs] == ["q0", "q1", "q2"]
    assert task.config.training_split is None and task.config.validation_split is None  # not in the copy
    assert task.doc_to_text(docs[1]) == "Question: What do plants need to make food?\nAnswer:"
    assert task.doc_to_target(docs[2]) == 2


def test_variant_reads_a_save_to_disk_copy_named_in_its_yaml(tmp_path, monkeypatch):
    import datasets

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    datasets.DatasetDict(
        {"test": datasets.Dataset.from_list(ARC_ROWS), "train": datasets.Dataset.from_list(ARC_ROWS[:1])}
    ).save_to_disk(str(tmp_path / "saved"))
    task = _variant(local_data=str(tmp_path / "saved"))
    assert len(list(task.test_docs())) == 3 and task.config.training_split == "train"
    with pytest.raises(DatasetUnavailableError, match="local_data points at .*missing"):
        _variant(local_data=str(tmp_path / "missing"))


def test_data_files_named_in_the_yaml_need_no_hub(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(variants, "hub_reachable", lambda: pytest.fail("the hub must not be asked"))
    path = _jsonl_copy(tmp_path) / "arc_easy" / "test.jsonl"
    task = _variant(data_files={"test": str(path)})
    assert len(list(task.test_docs())) == 3


def test_a_copy_without_the_evaluated_split_says_which_file_to_add(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(_jsonl_copy(tmp_path, split="train")))
    with pytest.raises(DatasetUnavailableError, match="not 'test'.*add test.jsonl"):
        _variant()


def test_load_local_dataset_refuses_empty_and_mixed_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetUnavailableError, match="holds no dataset"):
        load_local_dataset(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "test.jsonl").write_text(json.dumps(ARC_ROWS[0]) + "\n")
    (mixed / "train.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetUnavailableError, match="mixes file formats"):
        load_local_dataset(mixed)


def test_unreachable_hub_is_one_line_naming_the_dataset_and_the_way(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))  # set, but no arc_easy copy in it: the hub is asked
    monkeypatch.setattr(variants, "hub_reachable", lambda: False)
    with pytest.raises(DatasetUnavailableError) as err:
        _variant()
    text = str(err.value)
    assert "\n" not in text and "allenai/ai2_arc/ARC-Easy" in text and "hub is unreachable" in text
    assert f"${DATA_DIR_ENV}/arc_easy/" in text and "save_local_copy('arc_easy'" in text
    assert err.value.__cause__ is None  # no chained traceback


def test_connection_error_from_datasets_becomes_the_same_line(monkeypatch):
    from lm_eval.api.task import ConfigurableTask

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(variants, "hub_reachable", lambda: True)

    def offline(self, *args, **kwargs):
        raise ConnectionError("Couldn't reach 'allenai/ai2_arc' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(ConfigurableTask, "download", offline)
    with pytest.raises(
        DatasetUnavailableError, match=r"allenai/ai2_arc/ARC-Easy could not be loaded \(Couldn't"
    ):
        _variant()


def test_validate_reports_where_each_variants_data_comes_from(tmp_path, monkeypatch):
    argv = ["validate", "--tasks", "interp_arc_easy,interp_arc_challenge,interp_instruct"]
    monkeypatch.setattr(local_data, "hub_reachable", lambda: False)
    monkeypatch.setenv(DATA_DIR_ENV, str(_jsonl_copy(tmp_path)))
    lines = launcher.validate_data(argv)
    assert lines == [
        "interp_arc_challenge: data: UNREACHABLE: allenai/ai2_arc/ARC-Challenge needs the hub, which cannot "
        f"be reached; set {DATA_DIR_ENV} (README)",
        f"interp_arc_easy: data: local copy {tmp_path / 'arc_easy'}",
    ]  # interp_instruct ships its data: nothing to say
    monkeypatch.setattr(local_data, "hub_reachable", lambda: True)
    assert "from the Hugging Face hub (reachable" in launcher.validate_data(argv)[0]


@pytest.mark.parametrize(
    ("args", "fast"),
    [
        (["--tasks", "interp_instruct_mc"], True),
        (["--tasks", "interp_instruct,interp_instruct_mc", "--limit", "1"], True),
        (["--tasks=interp_arc_easy"], True),  # a variant: its stock config comes from a text scan
        (["-tinterp_instruct_mc"], True),
        (["--task", "interp_instruct_mc"], True),  # argparse's abbreviation
        (["--tasks", "arc_easy"], False),  # a stock name
        (["--tasks", "interp_instruct_mc,arc_easy"], False),  # a mix
        (["--tasks", "interp_instruct_mc", "arc_easy"], False),  # a mix, space-separated (nargs="+")
        (["--tasks", "interp_instruct_mc", "-t", "arc_easy"], False),
        (["--tasks", "interp_instruct*"], False),  # a pattern
        (["--tasks", "tasks/interp_instruct_mc.yaml"], False),  # a YAML path
        (["--tasks", "interp_instruct_mc", "--include_path", "my_tasks"], False),  # the user's folder
        (["--tasks", "list"], False),
        ([], False),
    ],
)
def test_plugin_task_names_skip_lm_evals_task_index(args, fast):
    """lm-eval's ~15,000 stock configs (~7 s of CPU to index) are left out only when every task named is
    exactly one of the plugin's own."""
    tasks = preflight.plugin_tasks()
    assert launcher.plugin_tasks_only(["run", "--model", "interp-hf", *args], tasks) is fast
    assert not launcher.plugin_tasks_only(["ls", *args], tasks)


def test_run_builds_lm_evals_index_only_when_a_stock_task_is_named(monkeypatch):
    import lm_eval.__main__

    seen = []

    @contextlib.contextmanager
    def visible(builtin_tasks=True):
        seen.append(builtin_tasks)
        yield

    monkeypatch.setattr(launcher, "plugin_tasks_visible", visible)
    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", lambda: None)
    for tasks in ("interp_instruct_mc", "interp_instruct_mc,arc_easy", "arc_easy"):
        launcher.run_lmeval(["run", "--model", "hf", "--tasks", tasks])
    launcher.run_lmeval(["run", "--model", "hf", "--tasks", "interp_instruct_mc"], builtin_tasks=True)
    assert seen == [False, True, True, True]


def test_ls_plugin_only_is_fast_and_lists_the_plugins_tasks():
    start = time.perf_counter()
    proc = run_cli("lm-interp", "ls", "tasks", "--plugin-only")
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("lm-interp tasks (")
    names = [line.split()[0] for line in lines[2:] if line.startswith("  interp_")]
    assert names[:2] == ["interp_instruct", "interp_instruct_mc"] and "interp_arc_easy" in names
    assert all(n.startswith("interp_") for n in names) and len(names) == len(set(names)) >= 10
    assert elapsed < 20, f"ls --plugin-only took {elapsed:.1f} s"  # no task index (the full ls: ~30-60 s)


@pytest.mark.slow  # a subprocess of lm-eval's CLI
def test_run_help_lists_every_interp_argument_with_its_default():
    proc = run_cli("lm-interp", "run", "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert "--model_args" in text  # lm-eval's own help comes first
    section = text.split("interp-hf model arguments", 1)[1]
    assert "records_dir" in section
    for name, default, meaning in settings_reference():
        assert re.search(rf"^  {name} +default {re.escape(default)}$", section, re.MULTILINE), name
        assert meaning and meaning.split()[0] in section


def test_readme_table_matches_the_settings():
    """README's table of interp-hf arguments has one row per `InterpSettings` field, with its default."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(interp_\w+)` \| `([^`]*)` \|", readme, re.MULTILINE))
    assert rows == {name: default for name, default, _ in settings_reference()}


@pytest.mark.slow
def test_lm_interp_run_on_a_local_copy(tiny_llama_dir, tmp_path):
    out = tmp_path / "runs"
    proc = cli_run(
        "lm-interp",
        f"pretrained={tiny_llama_dir}",
        "interp_arc_easy",
        limit=2,
        out=out,
        env={DATA_DIR_ENV: str(_jsonl_copy(tmp_path / "data"))},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sample = json.loads(next(out.rglob("samples_interp_arc_easy_*.jsonl")).read_text().splitlines()[0])
    assert sample["doc"]["id"] == "q0" and "acc" in sample
    # ARC's prompt has no instruction (only the "Question:" label): the interpretation is there, the
    # instruction metrics are left out, not 0
    assert sample["instruction_found"] == 0.0 and "instruction_importance" not in sample
    assert sum(v for k, v in sample.items() if k.startswith("attribution_share_")) == pytest.approx(1.0)
