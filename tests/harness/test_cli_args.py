"""The plugin reads lm-eval's flags through lm-eval's own parser (`harness.cli_args`): the forms a
hand-written reader missed (short flags, abbreviations, repeated ``--tasks`` and ``--model_args``) reach the
preflight checks and the records folder as lm-eval will read them."""

from __future__ import annotations

import json

import pytest

from lm_interp_plugin.harness.cli_args import lmeval_args
from lm_interp_plugin.harness.launcher import with_records_dir
from lm_interp_plugin.harness.preflight import PreflightError, check_run


def test_every_form_of_the_flags_reads_as_lm_eval_reads_it():
    args = lmeval_args(
        ["run", "-M", "interp-hf", "--task", "a,b", "-t", "c", "-a", "pretrained=p,interp_L=5"]
        + ["--model_args", '{"interp_ffn": false}', "-o", "out", "--include_path", "x,y"]
    )
    assert args.parsed and args.command == "run" and args.model == "interp-hf"
    assert args.tasks == ("a", "b", "c")  # repeats extend, commas split
    assert args.model_args == {"pretrained": "p", "interp_L": 5, "interp_ffn": False}  # merged, typed
    assert (args.output_path, args.include_path) == ("out", "x,y")
    legacy = lmeval_args(["--model", "hf", "--tasks", "a"])  # no subcommand: lm-eval reads a run
    assert legacy.command == "run" and legacy.tasks == ("a",)
    assert lmeval_args(["validate", "--tasks", "a, b"]).tasks == ("a", "b")
    assert not lmeval_args(["run", "--help"]).parsed  # lm-eval prints the help itself
    assert not lmeval_args(["run", "--tasks"]).parsed  # a flag without its value: lm-eval's own error


def test_preflight_sees_every_tasks_flag_and_the_short_model_flag(tmp_path):
    """A misspelt task in the first of two ``--tasks`` (a reader of the last value let it through) and a bad
    ``interp_`` argument under ``-M`` fail before lm-eval starts."""
    with pytest.raises(PreflightError, match="interp_instruct_mcc"):
        check_run(["--model", "hf", "--tasks", "interp_instruct_mcc", "--tasks", "interp_instruct"])
    with pytest.raises(PreflightError, match="interp_L"):
        check_run(
            ["-M", "interp-hf", "-a", f"pretrained={tmp_path}", "-a", "interp_L=0", "-t", "interp_instruct"]
        )
    check_run(["-M", "interp-hf", "-a", f"pretrained={tmp_path}", "--task", "interp_instruct"])


def test_the_records_folder_is_one_more_model_args_that_lm_eval_merges(tmp_path):
    argv = ["run", "-M", "interp-hf", "-a", "pretrained=org/my-model", "--model_args", "interp_L=5"]
    argv += ["-o", str(tmp_path / "out")]
    got = with_records_dir(argv)
    assert got[: len(argv)] == argv
    merged = lmeval_args(got).model_args
    assert merged == {
        "pretrained": "org/my-model",
        "interp_L": 5,
        "records_dir": str(tmp_path / "out" / "org__my-model"),
    }
    assert json.loads(got[-1]) == merged  # every argument: a --config file's would be replaced otherwise
    given = [*argv, "-a", "records_dir=mine"]
    assert with_records_dir(given) == given  # the user's folder stays
    assert with_records_dir(argv[:-2]) == argv[:-2]  # no --output_path: no records folder to put beside


def test_a_config_file_is_read_under_the_command_line(tmp_path):
    """lm-eval's ``--config`` YAML: its model, tasks and model_args count unless the command line gives them;
    the records folder keeps the file's model arguments (a command-line --model_args replaces them)."""
    config = tmp_path / "run.yaml"
    config.write_text(
        "model: interp-hf\nmodel_args: pretrained=org/m,interp_p=3\ntasks: [interp_instruct_mcc]\n"
        f"output_path: {tmp_path / 'out'}\n"
    )
    args = lmeval_args(["run", "--config", str(config)])
    assert (args.model, args.tasks) == ("interp-hf", ("interp_instruct_mcc",))
    assert args.model_args == {"pretrained": "org/m", "interp_p": 3}
    assert lmeval_args(["run", "--config", str(config), "--tasks", "a"]).tasks == ("a",)
    local = tmp_path / "local.yaml"
    local.write_text(f"model: interp-hf\nmodel_args: pretrained={tmp_path}\ntasks: interp_instruct_mcc\n")
    with pytest.raises(PreflightError, match="interp_instruct_mcc"):  # the file's misspelt task
        check_run(["--config", str(local)])
    with pytest.raises(PreflightError, match="pretrained=/nonexistent: no such folder"):  # and its model
        check_run(["--config", str(local), "-a", "pretrained=/nonexistent"])
    got = lmeval_args(with_records_dir(["run", "--config", str(config)]))
    assert got.model_args == {
        "pretrained": "org/m",
        "interp_p": 3,
        "records_dir": str(tmp_path / "out" / "org__m"),
    }
    assert lmeval_args(["run", "--config", str(tmp_path / "missing.yaml")]).parsed  # lm-eval names it
