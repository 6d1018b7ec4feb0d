"""`lm-interp run` fails in seconds, with one line naming the input and the fix, before lm-eval starts.

No network: the hub checks run with HF_HUB_OFFLINE or a stubbed reachability probe, against an empty cache.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lm_interp_plugin.harness import preflight
from lm_interp_plugin.harness.preflight import (
    PreflightError,
    check_run,
    format_plugin_tasks,
    plugin_tasks,
    yaml_task_names,
)

from lmeval_run import run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(preflight, "hub_reachable", lambda: pytest.fail("no network in tests"))
    return cache


def _run_args(pretrained: str, tasks: str = "interp_instruct_mc", extra: str = "") -> list[str]:
    return ["--model", "interp-hf", "--model_args", f"pretrained={pretrained}{extra}", "--tasks", tasks]


def test_absolute_folder_that_does_not_exist(empty_hub_cache):
    with pytest.raises(
        PreflightError, match=r"pretrained=/nonexistent: no such folder \(/nonexistent does not"
    ):
        check_run(_run_args("/nonexistent"))


def test_missing_relative_folder_says_so_with_the_nearest_name(empty_hub_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "my_model").mkdir(parents=True)
    with pytest.raises(PreflightError) as err:
        check_run(_run_args("runs/my_modle"))
    text = str(err.value)
    assert f"no folder {tmp_path / 'runs' / 'my_modle'}" in text and "did you mean runs/my_model?" in text
    assert "not in the local Hugging Face cache while offline" in text and "\n" not in text
    check_run(_run_args("runs/my_model"))  # the folder that exists passes


def test_hub_id_cached_passes_uncached_fails_offline_and_when_unreachable(empty_hub_cache, monkeypatch):
    snapshot = empty_hub_cache / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    check_run(_run_args("org/tiny"))
    with pytest.raises(
        PreflightError, match="org/other is not in the local Hugging Face cache while offline"
    ):
        check_run(_run_args("org/other"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(preflight, "hub_reachable", lambda: False)
    with pytest.raises(PreflightError, match=r"cannot be reached; fix the path, or download it"):
        check_run(_run_args("org/other"))
    monkeypatch.setattr(preflight, "hub_reachable", lambda: True)
    check_run(_run_args("org/other"))  # reachable: lm-eval downloads it


def test_misspelt_task_gets_did_you_mean_and_the_listing_command(empty_hub_cache, tmp_path):
    with pytest.raises(PreflightError) as err:
        check_run(_run_args(str(tmp_path), "interp_instruct_mcc"))
    text = str(err.value)
    assert text.startswith("--tasks interp_instruct_mcc: no such task; did you mean interp_instruct_mc")
    assert "`lm-interp ls tasks --plugin-only`" in text
    check_run(_run_args(str(tmp_path), "interp_instruct_mc,interp_instruct*"))  # names and patterns pass


def test_stock_task_names_come_from_the_yaml_text(empty_hub_cache, tmp_path, monkeypatch):
    stock = tmp_path / "stock"
    (stock / "sub").mkdir(parents=True)
    (stock / "a.yaml").write_text("task: hellaswag\ntag: [multiple_choice, 'commonsense']\n")
    (stock / "sub" / "b.yaml").write_text(
        "group: mmlu  # the group\ntag:\n  - knowledge\n  - exam\ntask: mmlu_x\n"
    )
    (stock / "c.yaml").write_text("task: !function x.y\n")
    (stock / "_template_yaml").write_text('"tag":\n- "quoted_tag"\n')  # quoted keys, an included template
    (stock / "notes.md").write_text("task: not_a_task\n")
    assert yaml_task_names([stock]) == {
        "hellaswag",
        "multiple_choice",
        "commonsense",
        "mmlu",
        "knowledge",
    } | {
        "exam",
        "mmlu_x",
        "quoted_tag",
    }
    monkeypatch.setattr(preflight, "lmeval_tasks_folder", lambda: stock)
    check_run(_run_args(str(tmp_path), "hellaswag,mmlu_*,exam"))
    with pytest.raises(PreflightError, match="--tasks hellaswagg: no such task; did you mean hellaswag"):
        check_run(_run_args(str(tmp_path), "hellaswagg"))
    with pytest.raises(PreflightError, match="no such task file"):
        check_run(_run_args(str(tmp_path), str(tmp_path / "missing.yaml")))


def test_bad_interp_argument_before_the_start_up(empty_hub_cache, tmp_path):
    with pytest.raises(
        PreflightError, match="unknown model argument 'interp_bb' for interp-hf. Did you mean 'interp_b'"
    ):
        check_run(_run_args(str(tmp_path), extra=",interp_bb=3"))
    with pytest.raises(PreflightError, match="interp_ffn='ture' is not a boolean"):
        check_run(_run_args(str(tmp_path), extra=",interp_ffn=ture"))


def test_help_and_other_models_are_not_checked(empty_hub_cache):
    check_run(["--model", "interp-hf", "--model_args", "pretrained=/nonexistent", "--help"])
    check_run(
        ["--model", "dummy", "--model_args", "pretrained=/nonexistent", "--tasks", "interp_instruct_mc"]
    )


def test_ls_name_column_fits_the_longest_name():
    tasks = plugin_tasks()
    lines = format_plugin_tasks(tasks).splitlines()[2 : 2 + len(tasks)]
    width = max(len(t.name) for t in tasks)
    assert width > 30  # the old cap: names longer than it ran into their description
    for task, line in zip(tasks, lines):
        assert line.startswith(f"  {task.name}  ") and line[2 + width + 2] != " ", line
        assert line[2 : 2 + width + 2].rstrip() == task.name


@pytest.mark.slow  # subprocesses
@pytest.mark.parametrize(
    ("pretrained", "tasks", "expected"),
    [
        ("/nonexistent", "interp_instruct_mc", "pretrained=/nonexistent: no such folder"),
        ("runs/my_modle", "interp_instruct_mc", "pretrained=runs/my_modle: no folder"),
        (
            ".",
            "interp_instruct_mcc",
            "--tasks interp_instruct_mcc: no such task; did you mean interp_instruct_mc",
        ),
    ],
)
def test_the_command_fails_in_under_5_seconds(tmp_path, pretrained, tasks, expected):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    start = time.perf_counter()
    done = run_cli(
        "lm-interp", "run", *_run_args(pretrained, tasks), cwd=tmp_path, env=env, quiet=False, timeout=120
    )
    seconds = time.perf_counter() - start
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("lm-interp: error: "), done.stderr
    assert expected in lines[0]
    assert seconds < 5, f"{seconds:.1f} s"
