"""Benchmark: gradient x input attribution, the paper's loop vs the frozen loop vs the batched engine.

For every (prompt length P, target length N) setting, on one random Llama built from a config (random token
ids, no tokenizer), the same inputs go through

* ``paper``   - the paper's loop as written: one forward with every parameter requiring grad, then one
  ``.backward(retain_graph=True)`` per target token (weight gradients computed and accumulated in ``.grad``);
* ``frozen``  - the same loop with the weights frozen (input-only backward per target token), i.e.
  `reference_gradient_x_input` under `frozen_parameters`;
* ``engine``  - `gradient_x_input` with ``mode="auto"``, plus forced ``reverse`` and (where its pass count is
  at most twice the cheaper mode's) forced ``forward`` under eager attention;
* ``floor``   - not a method but a yardstick: the measured time of ONE forward + ONE input-only backward,
  times min(P, N) (the number of exact passes any per-row/per-column method needs).

Times are medians over ``--repeats`` repetitions; the methods are interleaved inside each repetition so that
load from other processes hits them alike. Ratios are ``engine / other`` (below 1: the engine is faster).
Every method's matrix is compared with the frozen loop's (max abs diff, and relative to the largest entry).

Example::

    python benchmarks/attribution.py --hidden 512 --layers 8 --prompt 128 --targets 8,32,128 --repeats 3 \\
        --device cpu --dtype float32 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lm_interp_plugin.interpret import eager_attention
from lm_interp_plugin.methods.attribution import (
    choose_mode,
    frozen_parameters,
    gradient_x_input,
    reference_gradient_x_input,
)

logger = logging.getLogger("benchmarks.attribution")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Setting:
    """One measured (prompt, targets) cell: median seconds per example and agreement with the frozen loop."""

    prompt: int
    targets: int
    auto_mode: str
    times: dict[str, float] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    rel_diff: dict[str, float] = field(default_factory=dict)
    forward_s: float = 0.0
    backward_s: float = 0.0
    floor_s: float = 0.0

    @property
    def ratios(self) -> dict[str, float]:
        """engine (auto) time divided by the paper loop, the frozen loop and the floor."""
        engine = self.times["engine"]
        return {
            "engine/paper": engine / self.times["paper"],
            "engine/frozen": engine / self.times["frozen"],
            "engine/floor": engine / self.floor_s,
        }


# ---------------------------------------------------------------------------------------------- model, inputs
def resolve_device(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """The device and dtype to run on; a CUDA request without CUDA falls back to CPU float32, loudly."""
    if dtype not in DTYPES:
        raise SystemExit(f"--dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("--device %s requested but CUDA is not available: falling back to cpu float32", device)
        return torch.device("cpu"), torch.float32
    return torch.device(device), DTYPES[dtype]


def build_model(
    hidden: int, layers: int, vocab: int, max_positions: int, device, dtype, attn: str, seed: int = 0
):
    """A random Llama (head dim 64 where hidden allows, intermediate 8/3 x hidden as in Llama) in eval mode."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    heads = max(1, hidden // 64) if hidden >= 128 else 4
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=int(8 * hidden / 3) // 8 * 8 or 8,
        max_position_embeddings=max_positions,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    return model.to(device).eval()


@contextlib.contextmanager
def trainable_parameters(model: torch.nn.Module) -> Iterator[None]:
    """Make every parameter require grad (the paper's setting), then restore the flags and drop the grads."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------------------- methods
def _scores(model, prompt_embeds, target_embeds, target_ids, objective):
    """f(y_n) for every target token from one forward (the LM head only at the target positions)."""
    n = target_ids.shape[0]
    out = model(
        inputs_embeds=torch.cat([prompt_embeds, target_embeds], dim=1), use_cache=False, logits_to_keep=n
    )
    logp = out.logits[0, -n:].float().log_softmax(-1).gather(-1, target_ids[:, None])[:, 0]
    return logp.exp() if objective == "prob" else logp


def _embeds(model, prompt_ids, target_ids):
    with torch.no_grad():
        all_embeds = model.get_input_embeddings()(torch.cat([prompt_ids, target_ids[:-1]])[None])
    return all_embeds[:, : len(prompt_ids)].detach(), all_embeds[:, len(prompt_ids) :].detach()


def paper_loop(model, prompt_ids, target_ids, objective="prob") -> torch.Tensor:
    """The paper's loop: weights require grad, one ``.backward(retain_graph=True)`` per target token."""
    prompt_embeds, target_embeds = _embeds(model, prompt_ids, target_ids)
    with trainable_parameters(model):
        leaf = prompt_embeds.clone().requires_grad_(True)
        scores = _scores(model, leaf, target_embeds, target_ids, objective)
        columns = []
        for n in range(len(target_ids)):
            leaf.grad = None  # the input gradient per target; parameter .grad keeps accumulating
            scores[n].backward(retain_graph=n < len(target_ids) - 1)
            columns.append((leaf.grad.float() * leaf.detach().float()).sum(-1)[0])
    return torch.stack(columns, dim=1).cpu()


def frozen_loop(model, prompt_ids, target_ids, objective="prob") -> torch.Tensor:
    """The same loop with the weights frozen: the engine module's reference implementation."""
    with frozen_parameters(model):
        return reference_gradient_x_input(model, prompt_ids, target_ids, objective).float()


def engine(mode: str) -> Callable:
    """`gradient_x_input` in `mode` (forward mode under eager attention, which it needs)."""

    def run(model, prompt_ids, target_ids, objective="prob") -> torch.Tensor:
        context = eager_attention(model) if mode == "forward" else contextlib.nullcontext()
        with context:
            return gradient_x_input(model, prompt_ids, target_ids, objective=objective, mode=mode).raw

    return run


def one_pass(model, prompt_ids, target_ids, objective="prob") -> tuple[float, float]:
    """Seconds of one forward and of one input-only backward (from one target score), weights frozen."""
    prompt_embeds, target_embeds = _embeds(model, prompt_ids, target_ids)
    with frozen_parameters(model):
        leaf = prompt_embeds.clone().requires_grad_(True)
        start = _now(leaf.device)
        scores = _scores(model, leaf, target_embeds, target_ids, objective)
        mid = _now(leaf.device)
        torch.autograd.grad(scores[-1], leaf)
        end = _now(leaf.device)
    return mid - start, end - mid


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _timed(fn: Callable, *args) -> tuple[float, torch.Tensor]:
    device = args[1].device
    start = _now(device)
    out = fn(*args)
    return _now(device) - start, out


# ------------------------------------------------------------------------------------------------ measurement
def methods_for(prompt: int, targets: int, modes: str) -> dict[str, Callable]:
    """The methods to time for one cell: forced modes are added where their pass count is within 2x of auto."""
    chosen = {"paper": paper_loop, "frozen": frozen_loop, "engine": engine("auto")}
    best = min(prompt, targets)
    for mode, passes in (("reverse", targets), ("forward", prompt)):
        sensible = passes <= 2 * best and mode != choose_mode(prompt, targets)
        if modes == "all" or (modes == "sensible" and sensible):
            chosen[f"engine-{mode}"] = engine(mode)
    return chosen


def measure(
    model, prompt: int, targets: int, repeats: int, objective: str, modes: str, seed: int = 0
) -> Setting:
    """Median seconds per example of every method on one (prompt, targets) cell, methods interleaved."""
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(seed + 1000 * prompt + targets)
    prompt_ids = torch.randint(3, vocab, (prompt,), generator=gen).to(device)
    target_ids = torch.randint(3, vocab, (targets,), generator=gen).to(device)
    methods = methods_for(prompt, targets, modes)
    setting = Setting(prompt=prompt, targets=targets, auto_mode=choose_mode(prompt, targets))

    results = {name: fn(model, prompt_ids, target_ids, objective) for name, fn in methods.items()}  # warm-up
    one_pass(model, prompt_ids, target_ids, objective)
    reference = results["frozen"].float()
    scale = reference.abs().max().item() or 1.0
    for name, matrix in results.items():
        diff = (matrix.float() - reference).abs().max().item()
        setting.max_abs_diff[name] = diff
        setting.rel_diff[name] = diff / scale

    samples: dict[str, list[float]] = {name: [] for name in methods}
    fwd, bwd = [], []
    for _ in range(repeats):
        for name, fn in methods.items():
            seconds, _ = _timed(fn, model, prompt_ids, target_ids, objective)
            samples[name].append(seconds)
        f, b = one_pass(model, prompt_ids, target_ids, objective)
        fwd.append(f)
        bwd.append(b)
    setting.times = {name: statistics.median(values) for name, values in samples.items()}
    setting.forward_s, setting.backward_s = statistics.median(fwd), statistics.median(bwd)
    setting.floor_s = (setting.forward_s + setting.backward_s) * min(prompt, targets)
    return setting


def format_table(settings: Sequence[Setting]) -> str:
    """A plain-text table: seconds per example, the engine's ratios and the worst relative disagreement."""
    header = (
        f"{'P':>5} {'N':>5} {'auto':>7} {'paper s':>9} {'frozen s':>9} {'engine s':>9} {'reverse s':>9} "
        f"{'forward s':>9} {'floor s':>9} {'eng/paper':>9} {'eng/frozen':>10} {'eng/floor':>9} "
        f"{'max rel diff':>12}"
    )
    lines = [header, "-" * len(header)]
    for s in settings:
        r = s.ratios
        opt = {
            m: (f"{s.times[k]:9.4f}" if (k := f"engine-{m}") in s.times else f"{'-':>9}")
            for m in ("reverse", "forward")
        }
        lines.append(
            f"{s.prompt:>5} {s.targets:>5} {s.auto_mode:>7} {s.times['paper']:9.4f} {s.times['frozen']:9.4f} "
            f"{s.times['engine']:9.4f} {opt['reverse']} {opt['forward']} {s.floor_s:9.4f} "
            f"{r['engine/paper']:9.2f} {r['engine/frozen']:10.2f} {r['engine/floor']:9.2f} "
            f"{max(s.rel_diff.values()):12.2e}"
        )
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000, help="vocabulary size (the LM head's width)")
    parser.add_argument("--prompt", type=int, default=128, help="prompt length P")
    parser.add_argument(
        "--prompts",
        type=_ints,
        default=None,
        help="prompt sweep, e.g. 64,128,256,512,1024,2048 (overrides --prompt)",
    )
    parser.add_argument("--targets", type=_ints, default=[8, 32, 128], help="target lengths N")
    parser.add_argument("--long", action="store_true", help="also N=512")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--objective", choices=("prob", "logprob"), default="prob")
    parser.add_argument(
        "--modes",
        choices=("sensible", "all", "auto"),
        default="sensible",
        help="forced engine modes to time besides auto: within 2x of auto's passes, all, or none",
    )
    parser.add_argument(
        "--attn",
        choices=("eager", "sdpa"),
        default="eager",
        help="attention implementation for all methods (forward mode always runs eager)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch.set_num_threads (0: leave torch's default; 1 on a CPU shared with other jobs, "
        "where intra-op threads waiting on each other dominate the timings)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print the table, write JSON if asked; returns the JSON-able result."""
    args = parse_args(argv)
    device, dtype = resolve_device(args.device, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = args.prompts or [args.prompt]
    targets = sorted(set(args.targets + ([512] if args.long else [])))
    model = build_model(
        args.hidden, args.layers, args.vocab, max(prompts) + max(targets), device, dtype, args.attn, args.seed
    )
    header = (
        f"device={device} dtype={dtype} threads={torch.get_num_threads()} hidden={args.hidden} "
        f"layers={args.layers} vocab={args.vocab} attn={args.attn} repeats={args.repeats}"
    )
    print(header, flush=True)
    config = {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device_used": str(device),
        "dtype_used": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    settings: list[Setting] = []
    result: dict = {}
    for prompt in prompts:
        for n in targets:
            logger.info("measuring P=%d N=%d", prompt, n)
            settings.append(measure(model, prompt, n, args.repeats, args.objective, args.modes, args.seed))
            result = {
                "config": config,
                "settings": [{**asdict(s), "ratios": s.ratios} for s in settings],
                "table": format_table(settings),
            }
            if args.json:  # after every cell, so a long sweep that is cut short keeps what it measured
                args.json.write_text(json.dumps(result, indent=2))
            print(result["table"].splitlines()[-1] if len(settings) > 1 else result["table"], flush=True)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
