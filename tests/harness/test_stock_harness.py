"""The stock `lm_eval` CLI, both ways: the entry points lm-eval's plugin discovery reads (releases after
0.4.13), the forms that work with 0.4.13, and `compare` finding records wherever a run wrote them."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from lm_interp_plugin.records import RECORDS_DIR_KEY
from lm_interp_plugin.report import RunDirError, compare

from fixtures_report import make_docs, scored, write_run
from lmeval_run import cli_run

REPO = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def _entry_points() -> dict[str, dict[str, str]]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return data["project"]["entry-points"]


def test_model_entry_point_names_the_registered_class():
    """`lm_eval.models` (upstream PR #4013): the name maps to the class that registers itself under it."""
    from lm_eval.api.registry import get_model

    value = _entry_points()["lm_eval.models"]["interp-hf"]
    module, _, attr = value.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    assert get_model("interp-hf") is cls


def test_task_entry_point_names_the_shipped_task_folder():
    """`lm_eval.tasks` (upstream PR #4015, open): a module whose folder holds the interp_* task YAMLs."""
    from lm_interp_plugin.harness.tasks import tasks_dir

    module = importlib.import_module(_entry_points()["lm_eval.tasks"]["lm-interp"])
    folder = Path(module.__file__).parent
    assert folder.resolve() == tasks_dir().resolve()
    assert {"interp_instruct.yaml", "interp_instruct_mc.yaml"} <= {p.name for p in folder.glob("*.yaml")}


def _split_run(root: Path, *, recorded: bool) -> tuple[Path, Path]:
    """A run whose samples are in `root/run/<model>` and whose records are in `root/elsewhere`, as with
    ``--model_args records_dir=...`` under the stock CLI; `recorded`: its results file names the records."""
    docs = make_docs(10, seed=7)
    write_run(root / "tmp", "org/m", {"t": scored(docs, 1)})
    folder = write_run(root / "run", "org/m", {"t": scored(docs, 1)}, records=False)
    elsewhere = root / "elsewhere"
    (root / "tmp" / "org__m").rename(elsewhere)
    for p in elsewhere.iterdir():
        if not p.name.startswith("interp_records_"):
            p.unlink()
    results = next(folder.glob("results_*.json"))
    data = json.loads(results.read_text())
    if recorded:
        data["config"][RECORDS_DIR_KEY] = str(elsewhere.resolve())
    results.write_text(json.dumps(data))
    return folder, elsewhere


def test_compare_finds_records_named_by_the_results_file(tmp_path):
    folder, elsewhere = _split_run(tmp_path / "a", recorded=True)
    result = compare([folder, folder], tmp_path / "out", labels=["base", "tuned"], examples=1)
    assert result.chosen_examples["t"], "the records were not found"
    assert not [n for n in result.task("t").notes if "no interpretation records" in n]


def test_compare_records_option_and_its_advice(tmp_path):
    folder, elsewhere = _split_run(tmp_path / "a", recorded=False)
    result = compare([folder, folder], tmp_path / "o1", labels=["base", "tuned"], examples=1)
    notes = [n for n in result.task("t").notes if "no interpretation records" in n]
    assert notes and all("--records DIR" in n for n in notes)
    assert not any("run with --model interp-hf" in n for n in notes)  # the run did use interp-hf
    result = compare(
        [folder, folder], tmp_path / "o2", labels=["base", "tuned"], examples=1, records=[elsewhere] * 2
    )
    assert result.chosen_examples["t"]
    with pytest.raises(RunDirError, match="2 runs"):
        compare([folder, folder], tmp_path / "o3", records=[elsewhere])


def test_moved_records_folder_is_named_in_the_note(tmp_path):
    folder, elsewhere = _split_run(tmp_path / "a", recorded=True)
    elsewhere.rename(tmp_path / "moved")
    result = compare([folder, folder], tmp_path / "out", labels=["base", "tuned"], examples=1)
    notes = [n for n in result.task("t").notes if "no interpretation records" in n]
    assert notes and str(elsewhere.resolve()) in notes[0] and "does not exist" in notes[0]


@pytest.mark.slow
def test_stock_cli_yaml_path_with_records_elsewhere_then_compare(tiny_llama_dir, tmp_path):
    """The 0.4.13 form `lm_eval run --model interp-hf --tasks PATH.yaml` with records_dir outside the output
    folder: the samples carry the metrics next to accuracy, lm-eval's results file carries the records
    folder, and `compare` reads the records from it."""
    out, records = tmp_path / "out", tmp_path / "somewhere" / "records"
    proc = cli_run(
        "lm_eval",
        f"pretrained={tiny_llama_dir},records_dir={records}",
        str(REPO / "tasks" / "interp_instruct_mc.yaml"),
        limit=3,
        out=out,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = json.loads(next(out.rglob("samples_interp_instruct_mc_*.jsonl")).read_text().splitlines()[0])
    assert "acc" in first and "instruction_importance" in first
    assert (records / "interp_records_interp_instruct_mc.jsonl").is_file()
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    assert results["config"][RECORDS_DIR_KEY] == str(records.resolve())
    result = compare([out, out], tmp_path / "report", labels=["base", "tuned"], examples=1)
    assert result.chosen_examples.get("interp_instruct_mc")
    # and the stock CLI with a task *name* needs the plugin loaded first: on 0.4.13 (no entry-point
    # discovery) it cannot find the model, which is why README shows the YAML path and `lm-interp run`
    proc = cli_run(
        "lm_eval",
        f"pretrained={tiny_llama_dir}",
        "interp_instruct_mc",
        limit=1,
        extra=["--include_path", str(REPO / "tasks")],
        cwd=tmp_path,
    )
    from importlib.metadata import entry_points

    discovered = any(ep.name == "interp-hf" for ep in entry_points(group="lm_eval.models"))
    registry = importlib.import_module("lm_eval.api.registry")
    if discovered and hasattr(registry, "import_plugins"):  # a release with PR #4013, this package installed
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        assert proc.returncode != 0 and "no model for this name found" in proc.stderr
