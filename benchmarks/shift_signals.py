"""Benchmark: the added cost of issue 23's signals as a ratio of the interpretation pass, in one process.

Two random Llamas of the same shape built from a config (`--vocab` 32000 by default, so the LM head, the
logit lens and the KL run at a realistic width): the evaluated model and its reference; or, with `--model`, a
real model (a Hugging Face folder, e.g. SmolLM2's from `python -m lm_interp_plugin.testing.real`) and a
second copy of it as the reference. Per request (a prompt
of `--prompt` tokens, a target of N tokens for each N in `--targets`; multiple choice has N of 1 to 3,
generation more) it times, interleaved within each repetition:

* ``pass``: `interpret.passes.run_pass` with its defaults (attribution, instruction attention, ablation; no
  FFN concepts: they need the model's global components);
* ``reference``: the reference model's teacher-forced forward (`methods.shift.target_logits`) plus the shift
  (`distribution_shift`; the evaluated model's logits come from the pass's own forward);
* ``lens``: the logit lens at the target positions (`methods.logit_lens.logit_lens`) on residuals captured in
  the pass's forward (the hooks' own cost is inside ``pass+capture``, timed separately);
* ``contrastive``: `methods.contrastive.contrastive_gradient_x_input` with a foil of the same length (one
  two-row forward, one backward);
* ``contrast(pass)``: the same contrast with the gold term taken from the pass's matrix (`gold_term`): one
  forward and one backward of the foil only (the signal's route where the pass cannot carry the foil);
* ``pass+foil``: `run_pass` with the contrastive signal and a foil: the foil rides in the pass's own forward
  (its first token from the gold's first logits, its other tokens on the prompt's key/value cache) and is one
  more row of its batched backward. Its added cost is ``foil added``: per repetition, (pass+foil - pass) /
  pass of the two timed back to back, the median printed as a ratio.

Each column's median seconds and its ratio to the median ``pass`` are printed (targets: reference <= 0.5x,
lens and contrastive <= 0.2x each).

Example::

    python benchmarks/shift_signals.py --hidden 512 --layers 8 --prompt 128 --targets 1,3,16 --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


#: the clock of `_timed`: wall seconds, or this process's CPU seconds (``--clock cpu``: with ``--threads 1``
#: on a shared machine the other jobs' load does not enter it; cache and memory-bandwidth contention do)
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCKS["wall"]


def _timed(fn: Callable[[], object]) -> float:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = _clock()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return _clock() - start


def _cell(model, reference, adapter, settings, prompt, target, foil, labels, repeats: int) -> dict:
    """Median seconds of every column for one (prompt, target) request."""
    import torch

    from lm_interp_plugin.interpret.capture import capture
    from lm_interp_plugin.interpret.passes import run_pass
    from lm_interp_plugin.interpret.signals.contrastive import FOIL
    from lm_interp_plugin.methods.contrastive import (
        contrast_with_gold_term,
        contrastive_gradient_x_input,
        gold_term,
    )
    from lm_interp_plugin.methods.logit_lens import logit_lens
    from lm_interp_plugin.methods.shift import distribution_shift, target_logits

    n = len(target)
    captured: dict = {}
    with_foil = dataclasses.replace(settings, signals="contrastive")

    def the_pass():
        return run_pass(model, prompt, target, labels, settings)

    def pass_with_capture():
        captured.clear()
        with capture(model, ["resid_post"], n, captured):
            return run_pass(model, prompt, target, labels, settings)

    result = pass_with_capture()
    residuals = torch.stack([r[0] for r in captured["resid_post"]])
    evaluated_logits = target_logits(model, prompt, target)

    def contrast_reusing_the_pass():
        term = gold_term(result.raw, result.target_logprobs, settings.objective)
        return contrast_with_gold_term(model, prompt, term, float(result.target_logprobs.sum()), foil)

    def pass_with_foil():
        out = run_pass(model, prompt, target, labels, with_foil, resources={FOIL: foil})
        assert out.details["contrastive"].route == "pass", out.notes  # the foil rode in the pass
        return out

    columns = {
        "pass": the_pass,
        "pass+foil": pass_with_foil,
        "pass+capture": pass_with_capture,
        "reference": lambda: distribution_shift(evaluated_logits, target_logits(reference, prompt, target)),
        "lens": lambda: logit_lens(adapter, residuals, target),
        "contrastive": lambda: contrastive_gradient_x_input(model, prompt, target, foil),
        "contrast(pass)": contrast_reusing_the_pass,
    }
    for fn in columns.values():  # warm-up: allocator, kernels
        fn()
    times: dict[str, list[float]] = {name: [] for name in columns}
    for _ in range(repeats):
        for name, fn in columns.items():
            times[name].append(_timed(fn))
    medians = {name: statistics.median(values) for name, values in times.items()}
    added = [(f - p) / p for f, p in zip(times["pass+foil"], times["pass"])]  # timed back to back
    return medians, statistics.median(added)


def measure(args: argparse.Namespace) -> list[dict]:
    """One row per target length: median seconds of every column and their ratios to the pass."""
    import torch
    from transformers import AutoModelForCausalLM

    from lm_interp_plugin.arch import get_adapter
    from lm_interp_plugin.interpret.settings import InterpSettings
    from lm_interp_plugin.testing.tiny import tiny_config

    if args.threads:
        torch.set_num_threads(args.threads)
    models = []
    if args.model:  # a real model; its reference is a second copy (the cost depends on shapes, not weights)
        for _ in range(2):
            loaded = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
            models.append(loaded.eval().to(args.device))
    else:
        config = tiny_config(
            "llama",
            vocab_size=args.vocab,
            hidden=args.hidden,
            layers=args.layers,
            heads=max(2, args.hidden // 64),
            kv_heads=None,
            max_positions=4096,
        )
        for seed in (0, 1):  # the evaluated model and its reference: same shape, other weights
            torch.manual_seed(seed)
            random_llama = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            models.append(random_llama.eval().to(args.device))
    model, reference = models
    adapter = get_adapter(model)
    vocab = model.get_output_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    rows = []
    for n in args.targets:
        prompt = torch.randint(4, vocab, (args.prompt,), generator=generator).tolist()
        target = torch.randint(4, vocab, (n,), generator=generator).tolist()
        foil = torch.randint(4, vocab, (n,), generator=generator).tolist()
        third = args.prompt // 3
        labels = ["instruction"] * third + ["content"] * (args.prompt - third)
        medians, foil_added = _cell(
            model, reference, adapter, InterpSettings(), prompt, target, foil, labels, args.repeats
        )
        rows.append(
            {
                "prompt": args.prompt,
                "targets": n,
                "seconds": medians,
                "ratio_to_pass": {name: medians[name] / medians["pass"] for name in medians},
                "foil_added": foil_added,
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    names = list(rows[0]["seconds"])
    header = f"{'P':>5} {'N':>4} " + " ".join(f"{name:>13}" for name in names)
    header += f" {'foil added':>11}"
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = " ".join(
            f"{row['seconds'][name] * 1000:7.1f}ms {row['ratio_to_pass'][name]:4.2f}x" for name in names
        )
        lines.append(f"{row['prompt']:>5} {row['targets']:>4} {cells} {row['foil_added']:10.2f}x")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000, help="vocabulary size (the LM head's width)")
    parser.add_argument(
        "--model",
        default=None,
        help="a Hugging Face folder or hub id of a real model instead of the random Llamas (--hidden, "
        "--layers and --vocab are then the model's); the reference is a second copy of it",
    )
    parser.add_argument("--prompt", type=int, default=96, help="prompt tokens")
    parser.add_argument(
        "--targets", type=lambda s: [int(x) for x in s.split(",")], default=[1, 3, 16], help="target lengths"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall", help="wall seconds, or process CPU seconds"
    )
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    global _clock
    args = parse_args(argv)
    if args.clock == "cpu" and args.device != "cpu":
        raise SystemExit("--clock cpu measures this process's CPU time: use it with --device cpu")
    _clock = CLOCKS[args.clock]
    rows = measure(args)
    print(format_table(rows))
    if args.json:
        args.json.write_text(
            json.dumps({"args": {**vars(args), "json": str(args.json)}, "rows": rows}, indent=1)
        )
    return rows


if __name__ == "__main__":
    main()
