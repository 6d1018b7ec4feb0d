"""The benchmark scripts run end to end at toy size and every method computes the same matrix.

No timing is asserted (the CI machine is shared and noisy); we check the output's structure, that the ratios
are the quotients of the reported times, and that the methods agree numerically.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from lm_interp_plugin.methods.attribution import gradient_x_input
from lm_interp_plugin.methods.model_state import frozen_parameters

from tolerances import (
    BENCH_MATRIX_REL,
    BENCH_TOY_KAPPA,
    assert_matrix_close,
    condition_by_perturbation,
    rounding_bound,
)

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def attribution():
    threads = torch.get_num_threads()
    try:
        yield _load("attribution")
    finally:
        torch.set_num_threads(threads)  # main(--threads 1) changes the process-wide setting


@pytest.mark.float_sensitive
def test_attribution_benchmark_toy(attribution, tmp_path, capsys):
    out = tmp_path / "attr.json"
    result = attribution.main(
        [
            "--hidden",
            "32",
            "--layers",
            "1",
            "--vocab",
            "97",
            "--prompt",
            "8",
            "--targets",
            "4,16",
            "--repeats",
            "1",
            "--modes",
            "all",
            "--threads",
            "1",
            "--max-memory",
            "--json",
            str(out),
        ]
    )
    assert json.loads(out.read_text())["settings"] == json.loads(json.dumps(result["settings"]))
    printed = capsys.readouterr().out
    assert "eng/floor" in printed and "eng/prefix" in printed and result["table"] in printed
    assert "prefix GiB" in result["table"]  # --max-memory column ('-' on a CPU)
    assert [(s["prompt"], s["targets"], s["auto_mode"]) for s in result["settings"]] == [
        (8, 4, "reverse"),
        (8, 16, "forward"),
    ]
    for s in result["settings"]:
        methods = {"paper", "frozen", "prefix", "engine", "engine-reverse", "engine-forward"}
        assert set(s["times"]) == methods == set(s["rel_diff"])
        assert all(t > 0 for t in s["times"].values())
        assert max(s["rel_diff"].values()) <= BENCH_MATRIX_REL, s["rel_diff"]
        assert s["peak_bytes"] == {} and s["failed"] == {}  # CPU: no CUDA peak, nothing ran out of memory
        assert s["floor_s"] == pytest.approx(
            (s["forward_s"] + s["backward_s"]) * min(s["prompt"], s["targets"])
        )
        for other in ("paper", "frozen", "prefix"):
            assert s["ratios"][f"engine/{other}"] == pytest.approx(s["times"]["engine"] / s["times"][other])
        assert s["ratios"]["engine/floor"] == pytest.approx(s["times"]["engine"] / s["floor_s"])
        flops = s["flops"]
        passes = s["targets"] if s["auto_mode"] == "reverse" else s["prompt"]
        assert flops["floor"] == pytest.approx(
            min(s["prompt"], s["targets"]) * (flops["forward"] + flops["backward"])
        )
        assert flops["engine"] == pytest.approx(flops["forward"] + passes * flops["backward"])
        assert s["engine_gflops"] == pytest.approx(flops["engine"] / s["times"]["engine"] / 1e9)


def test_skip_and_warmup_zero(attribution):
    flags = "--hidden 32 --layers 1 --vocab 97 --prompt 6 --targets 3 --repeats 1 --warmup 0 --modes auto"
    result = attribution.main([*flags.split(), "--skip", "paper,prefix", "--threads", "1"])
    (s,) = result["settings"]
    assert set(s["times"]) == {"frozen", "engine"}
    assert set(s["ratios"]) == {"engine/frozen", "engine/floor"}
    assert "-" in result["table"].splitlines()[-1]  # skipped loops print as '-'
    with pytest.raises(SystemExit, match="frozen"):
        attribution.parse_args(["--skip", "frozen"])
    with pytest.raises(SystemExit):
        attribution.parse_args(["--repeats", "0"])


@pytest.mark.float_sensitive
def test_prefix_loop_equals_the_frozen_loop(attribution):
    """Inseq/Captum's per-prefix loop (N forwards) gives the frozen loop's matrix (one shared forward)."""
    model = attribution.build_model(
        32, 2, 61, 40, torch.device("cpu"), torch.float32, "eager", heads=4, kv_heads=2
    )
    gen = torch.Generator().manual_seed(3)
    prompt, target = torch.randint(3, 61, (9,), generator=gen), torch.randint(3, 61, (7,), generator=gen)
    for objective in ("prob", "logprob"):
        expected = attribution.frozen_loop(model, prompt, target, objective)
        got = attribution.prefix_loop(model, prompt, target, objective)
        assert got.shape == (9, 7)
        assert_matrix_close(got, expected, rtol=BENCH_MATRIX_REL, atol_scale=BENCH_MATRIX_REL)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_pass_flops_match_torch_flop_counter(attribution):
    """The analytic count against torch's own matmul FLOP counter (forward and input-only backward, GQA)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = attribution.build_model(
        64, 2, 101, 64, torch.device("cpu"), torch.float32, "eager", heads=4, kv_heads=2, intermediate=96
    )
    prompt, targets = 20, 6
    seq = prompt + targets - 1
    embeds = torch.randn(1, seq, 64, requires_grad=True)
    with frozen_parameters(model):
        with FlopCounterMode(display=False) as counter:
            logits = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=targets).logits
        forward = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            torch.autograd.grad(logits[0, -1].logsumexp(-1), embeds)
        backward = counter.get_total_flops()
    flops = attribution.pass_flops(model.config, seq, targets)
    assert flops.forward == pytest.approx(forward, rel=0.02)
    assert flops.backward == pytest.approx(backward, rel=0.02)
    # grows with the prompt (linearly plus the quadratic attention term), positive
    counts = [attribution.pass_flops(model.config, p + targets - 1, targets).forward for p in (64, 128, 256)]
    assert 0 < counts[0] < counts[1] < counts[2]
    assert counts[2] - counts[1] > counts[1] - counts[0]  # the seq^2 attention term


@pytest.mark.float_sensitive
def test_paper_loop_matches_an_independent_jacobian(attribution):
    """The paper loop (weights requiring grad, .backward per target) against torch.autograd.functional."""
    model = attribution.build_model(16, 1, 50, 32, torch.device("cpu"), torch.float32, "eager")
    prompt, target = torch.tensor([3, 7, 9, 11, 4]), torch.tensor([5, 6, 8])
    got = attribution.paper_loop(model, prompt, target)
    embeds = model.get_input_embeddings().weight.detach()
    prompt_e, target_e = embeds[prompt][None], embeds[target[:-1]][None]

    def probs(x):
        logits = model(inputs_embeds=torch.cat([x, target_e], 1)).logits[0, -len(target) :]
        return logits.log_softmax(-1).gather(-1, target[:, None])[:, 0].exp()

    jac = torch.autograd.functional.jacobian(probs, prompt_e)  # [target, 1, prompt, hidden]
    expected = (jac[:, 0] * prompt_e[0]).sum(-1).T
    assert_matrix_close(got, expected, rtol=BENCH_MATRIX_REL, atol_scale=BENCH_MATRIX_REL)
    assert all(p.grad is None for p in model.parameters())  # grads dropped on exit
    assert all(p.requires_grad for p in model.parameters())


def test_sensible_modes_add_forced_modes_only_near_the_cheaper_one(attribution):
    loops = {"paper", "frozen", "prefix", "engine"}
    assert set(attribution.methods_for(128, 8, "sensible")) == loops
    assert set(attribution.methods_for(128, 128, "sensible")) == loops | {"engine-forward"}
    assert set(attribution.methods_for(64, 100, "sensible")) == loops | {"engine-reverse"}
    assert set(attribution.methods_for(64, 100, "sensible", skip=("paper",))) == loops - {"paper"} | {
        "engine-reverse"
    }
    assert "engine-reverse" not in attribution.methods_for(8, 4, "auto")


def test_cuda_request_without_cuda_falls_back_to_cpu(attribution, caplog):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    device, dtype = attribution.resolve_device("cuda", "bfloat16")
    assert (device.type, dtype) == ("cpu", torch.float32)
    assert "falling back to cpu" in caplog.text


@pytest.mark.slow
def test_overhead_benchmark_toy(tmp_path):
    """gpu.sh's overhead stage, exactly as its dry run gives it (toy size, CPU), in this process: the
    whole-script dry run below leaves this stage to this test, so its two lm-eval runs are paid once."""
    overhead, threads = _load("overhead"), torch.get_num_threads()
    script, argv = _gpu_commands(dry=True)["overhead_1b"]
    assert script == "benchmarks/overhead.py" and "--no-noattn" in argv
    argv[argv.index("--json") + 1] = str(tmp_path / "o.json")
    try:
        result = overhead.main(argv)
    finally:
        torch.set_num_threads(threads)
    assert set(result["times"]) == {"hf", "interp-hf"}
    assert result["ratios"]["hf"] == 1.0
    for name, seconds in result["times"].items():
        assert math.isclose(result["ratios"][name], seconds / result["times"]["hf"])
    # interp-hf answers exactly as hf does
    assert len(set(result["accuracy"].values())) == 1
    assert json.loads((tmp_path / "o.json").read_text())["ratios"] == result["ratios"]


def _gpu_stages() -> dict[str, list[str]]:
    """benchmarks/gpu.sh's attribution.py command line per stage, from its print mode (DRY_RUN=1)."""
    return {
        name: argv for name, (script, argv) in _gpu_commands().items() if script.endswith("attribution.py")
    }


def _gpu_commands(dry: bool = False) -> dict[str, tuple[str, list[str]]]:
    """benchmarks/gpu.sh's (script, argv) per Python-benchmark stage, from its print mode (`dry`: at the dry
    run's toy size on the CPU)."""
    import os
    import subprocess

    out = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh"), "--dry-run" if dry else "all"],
        env={**os.environ, "DRY_RUN": "1"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return {line.split()[0]: (line.split()[1], line.split()[2:]) for line in out.splitlines() if line.strip()}


@pytest.mark.float_sensitive
def test_gpu_script_stages_parse_and_run_at_toy_size(attribution, tmp_path):
    """Every gpu.sh stage is a valid benchmark command; the longest one runs here at toy size (CPU)."""
    stages = _gpu_stages()
    assert {"llama1b_p512", "llama7b_p512", "llama7b_p4096_n256"} <= set(stages)
    for name, argv in stages.items():
        args = attribution.parse_args(argv)
        assert (args.device, args.dtype, args.max_memory) == ("cuda", "bfloat16", True), name
    big = attribution.parse_args(stages["llama7b_p4096_n256"])
    assert (big.hidden, big.layers, big.prompt, big.targets) == (4096, 32, 4096, [256])
    assert big.attn == "sdpa" and big.whole_pass  # the product's pass at 7B/4k under the model's attention
    one_b = attribution.parse_args(stages["llama1b_p512"])
    assert (one_b.kv_heads, one_b.intermediate, one_b.vocab) == (8, 8192, 128256)
    assert one_b.targets == [8, 32, 128] and one_b.levers and one_b.whole_pass
    others = {name: script for name, (script, _) in _gpu_commands().items() if name not in stages}
    assert others == {
        "precision_1b": "benchmarks/precision.py",
        "precision_demo": "benchmarks/precision.py",
        "profile_1b": "benchmarks/profile_engine.py",
        "overhead_1b": "benchmarks/overhead.py",
        "explain_7b": "benchmarks/explain.py",
        "shift_1b": "benchmarks/shift_signals.py",
    }
    commands = _gpu_commands()
    precision = _load("precision").parse_args(commands["precision_1b"][1])
    assert (precision.hidden, precision.prompt, precision.targets, precision.device) == (
        2048,
        512,
        128,
        "cuda",
    )
    demo = _load("precision").parse_args(commands["precision_demo"][1])
    assert demo.model_dir.name == "tuned" and demo.items.name == "heldout_instruct.jsonl"
    assert (REPO / demo.model_dir).is_dir() and (REPO / demo.items).is_file() and demo.n_items == 54
    overhead = _load("overhead").parse_args(commands["overhead_1b"][1])
    assert (overhead.hidden, overhead.layers, overhead.device, overhead.dtype) == (
        2048,
        16,
        "cuda",
        "bfloat16",
    )

    toy = "--hidden 32 --layers 1 --heads 4 --kv-heads 2 --intermediate 64 --vocab 97 --prompt 6 --targets 3"
    argv = list(stages["llama7b_p4096_n256"])
    if "--json" in argv:  # the print mode's '$WORK/...' path: write into the test's folder instead
        argv[argv.index("--json") + 1] = str(tmp_path / "stage.json")
    result = attribution.main(argv + toy.split() + ["--threads", "1", "--skip", ""])
    (s,) = result["settings"]
    assert {"frozen", "engine", "pass"} <= set(s["times"])
    assert max(s["rel_diff"].values()) <= BENCH_MATRIX_REL
    assert "engine GiB" in result["table"]
    if not torch.cuda.is_available():
        assert result["config"]["device_used"] == "cpu" and s["peak_bytes"] == {}
    else:
        assert set(s["peak_bytes"]) == set(s["times"]) and min(s["peak_bytes"].values()) > 0


@pytest.mark.float_sensitive
def test_levers_and_whole_pass_columns(attribution):
    """--levers times the engine without the LM-head shortcut, --pass the product's whole pass; both give
    the frozen loop's matrix, and their ratios are quotients of the reported times."""
    flags = "--hidden 32 --layers 1 --heads 4 --kv-heads 2 --vocab 97 --prompt 10 --targets 4,14 --repeats 1"
    result = attribution.main(
        [*flags.split(), "--levers", "--pass", "--skip", "paper,prefix", "--threads", "1"]
    )
    for s in result["settings"]:
        assert set(s["times"]) >= {"engine-fullhead", "pass"}
        assert max(s["rel_diff"].values()) <= BENCH_MATRIX_REL, s["rel_diff"]
        assert s["ratios"]["engine/fullhead"] == pytest.approx(
            s["times"]["engine"] / s["times"]["engine-fullhead"]
        )
        assert s["ratios"]["pass/engine"] == pytest.approx(s["times"]["pass"] / s["times"]["engine"])
    assert "fullhead s" in result["table"] and "pass/eng" in result["table"]


@pytest.mark.slow
def test_memory_benchmark_toy(tmp_path):
    """benchmarks/memory.py at toy size: one fresh process per configuration, a positive peak for each."""
    memory = _load("memory")
    out = tmp_path / "mem.json"
    flags = "--hidden 64 --layers 2 --vocab 500 --prompt 32 --targets 4 --chunks 2"
    rows = memory.main([*flags.split(), "--json", str(out)])
    assert [(r["chunk"], r["checkpoint"]) for r in rows] == [(2, False), (2, True)]
    assert all(r["peak_extra_mib"] >= 0 and r["seconds"] > 0 for r in rows)
    assert json.loads(out.read_text())["rows"] == rows


@pytest.mark.float_sensitive
def test_precision_benchmark_toy(tmp_path):
    precision = _load("precision")
    flags = (
        "--hidden 32 --layers 1 --heads 4 --kv-heads 2 --intermediate 64 --vocab 97 --prompt 40 --targets 4"
    )
    result = precision.main(
        [*flags.split(), "--repeats", "1", "--threads", "1", "--json", str(tmp_path / "p.json")]
    )
    assert result["reference"] == "float64" and set(result["candidates"]) == {
        "float32",
        "bfloat16",
        "float16",
    }
    f32 = result["candidates"]["float32"]
    # float32 against float64: within kappa * sqrt(k) * u of it, kappa this model's condition (measured in
    # float64), k its longest reduction (the vocabulary, 97); 5.6e-5 on one CPU, 2.1e-5 on another
    model = precision.build_model(32, 1, 97, 44, torch.device("cpu"), torch.float64, "sdpa", 0, 4, 2, 64)
    gen = torch.Generator().manual_seed(0)
    prompt, target = torch.randint(3, 97, (40,), generator=gen), torch.randint(3, 97, (4,), generator=gen)
    kappa = condition_by_perturbation(lambda m: gradient_x_input(m, prompt, target).raw, model, samples=2)
    assert kappa <= BENCH_TOY_KAPPA, kappa  # the constant the other benchmark tests rely on
    bound = rounding_bound(kappa, 97)
    assert f32["max_entry_rel"] <= bound and f32["frobenius_rel"] <= bound, (f32, kappa, bound)
    # the table tells the precisions apart
    assert result["candidates"]["bfloat16"]["max_entry_rel"] > f32["max_entry_rel"]
    for row in result["candidates"].values():
        assert row["frobenius_rel"] >= 0 and row["x_reference"] == pytest.approx(
            row["seconds"] / result["reference_seconds"]
        )
    within = [n for n, r in result["candidates"].items() if r["instruction_importance_rel"] <= 0.01]
    assert result["chosen"] == (
        min(within, key=lambda n: result["candidates"][n]["seconds"]) if within else None
    )
    assert json.loads((tmp_path / "p.json").read_text())["chosen"] == result["chosen"]
    reference_ii = next(iter(result["candidates"].values()))["instruction_importance_ref"]
    if reference_ii == 0:  # the criterion is undefined: the table says so instead of "None"
        assert "undecidable" in result["table"] and result["chosen"] is None
    else:
        assert "chosen default (fastest within 1%" in result["table"]


def test_profile_names_the_per_derivative_loops(tmp_path):
    """On the CPU the SDPA backward has no batching rule: the profile says so, with its time share."""
    profile = _load("profile_engine")
    flags = (
        "--hidden 32 --layers 1 --heads 4 --kv-heads 2 --intermediate 64 --vocab 97 --prompt 12 --targets 6"
    )
    result = profile.main([*flags.split(), "--threads", "1", "--json", str(tmp_path / "p.json")])
    assert result["mode"] == "reverse" and result["passes"] == 6
    assert any("scaled_dot_product" in op for op in result["vmap_fallback_ops"]), result["vmap_fallback_ops"]
    assert all(0 <= v <= 1 for v in result["fallback_time_share"].values())
    assert "Self CPU time total" in result["table"]


@pytest.mark.slow
def test_gpu_script_dry_run_writes_one_tarball_and_one_summary(tmp_path):
    """`gpu.sh --dry-run`: every stage at toy size on the CPU (the overhead stage, two lm-eval runs, is
    test_overhead_benchmark_toy's); every JSON and log in ONE tarball, and ONE summary."""
    import subprocess
    import tarfile

    # llama1b_p512_eager is optional: it runs only when --only names it
    expected = {
        "env", "deps", "shift_1b", "llama1b_p512", "llama7b_p4096_n256", "precision_1b", "precision_demo",
        "profile_1b", "pytest_gpu", "llama7b_p512", "explain_7b",
    }  # fmt: skip
    out = tmp_path / "results"
    only = ",".join(sorted(expected))
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh"), "--dry-run", "--out", str(out), "--budget", "400"]
        + ["--only", only],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_results.tar.gz", "summary.txt"]
    with tarfile.open(out / "gpu_results.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
        stages = tar.extractfile("./stages.tsv").read().decode().splitlines()[1:]
    assert {row.split("\t")[0] for row in stages} == expected
    assert all(row.split("\t")[1] == "ok" for row in stages), stages
    assert {f"{name}.log" for name in expected} <= names and "summary.txt" in names
    assert {f"{name}.json" for name in expected - {"env", "deps", "pytest_gpu"}} <= names
    summary = (out / "summary.txt").read_text()
    assert "DRY RUN" in summary and "eng/paper" in summary and "chosen default" in summary
    assert "[pytest_gpu]" in summary and "per-derivative loops" in summary
    assert "[shift_1b] base-vs-tuned signals" in summary and "foil added" in summary


def _stage_status(out: Path) -> dict[str, str]:
    import tarfile

    with tarfile.open(out / "gpu_results.tar.gz") as tar:
        rows = tar.extractfile("./stages.tsv").read().decode().splitlines()[1:]
    return {row.split("\t")[0]: row.split("\t")[1] for row in rows}


def test_gpu_script_stage_timeout_and_budget(tmp_path):
    """A stage past its time limit is killed and marked (exit 1), and a stage the budget cannot hold is
    skipped, saying so; the tarball and the summary are written either way."""
    import subprocess

    script = str(REPO / "benchmarks" / "gpu.sh")
    slow = subprocess.run(
        [
            "bash",
            script,
            "--dry-run",
            "--only",
            "pytest_gpu",
            "--stage-timeout",
            "1",
            "--out",
            str(tmp_path / "a"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert _stage_status(tmp_path / "a") == {"pytest_gpu": "timed out"}  # pytest cannot even import in 1 s
    assert slow.returncode == 1 and "timed out" in (tmp_path / "a" / "summary.txt").read_text()
    short = subprocess.run(
        ["bash", script, "--dry-run", "--only", "env", "--budget", "10", "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert _stage_status(tmp_path / "b")["env"].startswith("skipped (budget")
    assert short.returncode == 0


def test_explain_benchmark_toy(tmp_path):
    """benchmarks/explain.py at toy size: every head and layer explained, extrapolation is linear in depth."""
    explain = _load("explain")
    out = tmp_path / "explain.json"
    result = explain.main(
        [
            "--hidden",
            "64",
            "--intermediate",
            "128",
            "--heads",
            "4",
            "--kv-heads",
            "2",
            "--vocab",
            "900",
            "--words",
            "300",
            "--layers",
            "2",
            "--full-layers",
            "6",
            "--k",
            "3",
            "--device",
            "cpu",
            "--json",
            str(out),
        ]
    )
    assert result["explained"] == {"heads": 2 * 4, "ffn_layers": 2}
    assert result["extrapolated_full_s"]["total"] == pytest.approx(
        3 * (result["explain_heads_s"] + result["explain_ffn_s"])
    )
    assert json.loads(out.read_text())["config"]["hidden"] == 64
    vocab = explain.synthetic_vocab(1000, 300)
    assert len(set(vocab.token_ids)) == len(vocab.token_ids) == 300 and max(vocab.token_ids) < 1000


@pytest.mark.float_sensitive
def test_precision_benchmark_on_real_items_of_the_demo_pair(tmp_path):
    """--model-dir --items: real prompts of the shipped demo pair, with the instruction's tokens labelled, so
    the instruction_importance criterion is defined (random ids leave it at 0)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lm_interp_plugin.demo.build import shipped_pair

    precision = _load("precision")
    pair = shipped_pair()
    tok = AutoTokenizer.from_pretrained(pair.tuned_path)
    requests = precision.item_requests(tok, pair.heldout_path, 3)
    item = json.loads(pair.heldout_path.read_text().splitlines()[0])
    prompt, target, labels = requests[0]
    assert len(requests) == 3 and len(labels) == len(prompt)
    instruction = [t for t, lab in zip(prompt.tolist(), labels) if lab == "instruction"]
    assert tok.decode(instruction).strip() == item["instruction"]
    assert tok.decode(target.tolist()).strip() == item["reference"]
    assert labels[0] == "special" and "content" in labels
    result = precision.main(
        ["--model-dir", str(pair.tuned_path), "--items", str(pair.heldout_path), "--n-items", "3"]
        + ["--device", "cpu", "--threads", "1", "--repeats", "1"]
    )
    f32 = result["candidates"]["float32"]
    assert f32["requests"] == 3 and f32["instruction_importance_ref"] > 0  # the criterion is defined here
    # float32 against float64 within kappa * sqrt(k) * u (k: the vocabulary), kappa measured in float64
    model = AutoModelForCausalLM.from_pretrained(pair.tuned_path, dtype=torch.float64).eval()

    def matrices(m):
        return torch.cat([gradient_x_input(m, p, t).raw.flatten() for p, t, _ in requests])

    kappa = condition_by_perturbation(matrices, model, samples=1)
    bound = rounding_bound(kappa, model.config.vocab_size)
    assert f32["max_entry_rel"] <= bound and f32["frobenius_rel"] <= bound, (f32, kappa, bound)
    # II is a mean of quantised levels: equal unless an entry within `bound` of a level edge flips, which
    # moves it by a level step of one token; the benchmark's own criterion (1%) holds either way
    assert f32["instruction_importance_rel"] <= 0.01
    assert "3 items of heldout_instruct.jsonl" in result["table"] and "undecidable" not in result["table"]


@pytest.mark.slow
def test_shift_signals_benchmark_toy(capsys):
    """The signals' cost benchmark runs at toy size; every ratio is its column's time over the pass's."""
    bench = _load("shift_signals")
    rows = bench.main(
        ["--hidden", "32", "--layers", "1", "--vocab", "300", "--prompt", "8", "--targets", "2"]
    )
    row = rows[0]
    assert set(row["seconds"]) == {
        "pass",
        "pass+foil",
        "pass+capture",
        "reference",
        "lens",
        "contrastive",
        "contrast(pass)",
    }
    for name, seconds in row["seconds"].items():
        assert row["ratio_to_pass"][name] == pytest.approx(seconds / row["seconds"]["pass"])
    assert -1.0 < row["foil_added"] < float("inf")  # (pass+foil - pass) / pass of positive times
    assert "contrast(pass)" in capsys.readouterr().out
