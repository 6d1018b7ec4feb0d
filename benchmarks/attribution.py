"""Benchmark: gradient x input attribution, the batched engine against the loops it replaces and the floor.

For every (prompt length P, target length N) setting, on one random Llama built from a config (random token
ids, no tokenizer), the same inputs go through

* ``paper``   - the paper's loop as written: one forward with every parameter requiring grad, then one
  ``.backward(retain_graph=True)`` per target token (weight gradients computed and accumulated in ``.grad``);
* ``frozen``  - the same loop with the weights frozen (input-only backward per target token), i.e.
  `reference_gradient_x_input` under `frozen_parameters`;
* ``prefix``  - the per-prefix loop of Inseq and Captum: for every target token y_n, one forward AND one
  input-only backward on the prefix prompt + y_<n (weights frozen); the same matrix;
* ``engine``  - `gradient_x_input` with ``mode="auto"``, plus forced ``reverse`` and (where its pass count is
  at most twice the cheaper mode's) forced ``forward`` under eager attention;
* ``floor``   - not a method but a yardstick: the measured time of ONE forward + ONE input-only backward,
  times min(P, N) (the number of exact passes any per-row/per-column method needs); next to it the analytic
  matmul FLOP count of those passes (`pass_flops`) and the engine's achieved GFLOP/s.

Times are medians over ``--repeats`` repetitions; the methods are interleaved inside each repetition so that
load from other processes hits them alike. Ratios are ``engine / other`` (below 1: the engine is faster).
Every method's matrix is compared with the frozen loop's (max abs diff, and relative to the largest entry).
On CUDA the peak allocated memory of every method is recorded (``--max-memory`` prints it).

Example::

    python benchmarks/attribution.py --hidden 512 --layers 8 --prompt 128 --targets 8,32,128 --repeats 3 \\
        --device cpu --dtype float32 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lm_interp_plugin.methods.attribution import (
    choose_mode,
    gradient_x_input,
    reference_gradient_x_input,
)
from lm_interp_plugin.methods.model_state import eager_attention, frozen_parameters

logger = logging.getLogger("benchmarks.attribution")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
REQUIRED = ("frozen", "engine")  # the reference matrix and the method under test: never skipped
OPTIONAL = ("paper", "prefix")


@dataclass
class PassFlops:
    """Analytic matmul FLOPs of one pass over a sequence (multiply-add = 2 FLOPs).

    Attributes:
        forward: one forward, LM head at `head_positions` positions only.
        backward: one input-only backward (no weight gradients); also the cost of one JVP in forward mode.
    """

    forward: float
    backward: float


def pass_flops(config, seq_len: int, head_positions: int) -> PassFlops:
    """Approximate matmul FLOPs of one forward and one input-only backward of a Llama-style decoder.

    forward  = 2 * seq * params_nonembedding          (every linear layer: 2 FLOPs per weight per token)
             + 4 * layers * seq^2 * hidden_q          (Q K^T and A V, the full square, as eager computes it)
             + 2 * head_positions * hidden * vocab    (LM head, only where a target is scored)
    backward = 2 * seq * params_nonembedding          (input gradient dX = dY W^T; no dW)
             + 8 * layers * seq^2 * hidden_q          (dQ, dK from Q K^T, dA, dV from A V: twice the forward)
             + 2 * head_positions * hidden * vocab

    with hidden_q = heads x head_dim and params_nonembedding = layers x (q, k, v, o projections + 3 MLP
    matrices). Norms, softmax, rotary and element-wise ops are left out (a few per cent at most).
    """
    hidden = int(config.hidden_size)
    layers = int(config.num_hidden_layers)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    inter = int(config.intermediate_size)
    per_layer = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + 3 * hidden * inter
    linear = 2.0 * seq_len * layers * per_layer
    attention = 4.0 * layers * seq_len**2 * heads * head_dim
    head = 2.0 * head_positions * hidden * int(config.vocab_size)
    return PassFlops(forward=linear + attention + head, backward=linear + 2 * attention + head)


@dataclass
class Setting:
    """One measured (prompt, targets) cell: median seconds per example and agreement with the frozen loop.

    ``flops`` holds the analytic counts (`pass_flops`): one ``forward``, one input-only ``backward``, the
    ``floor`` (min(P, N) x (forward + backward)) and the ``engine``'s own work (one forward + one backward
    or JVP per pass). ``peak_bytes`` is torch.cuda.max_memory_allocated per method (CUDA only), ``failed``
    the methods that ran out of memory.
    """

    prompt: int
    targets: int
    auto_mode: str
    times: dict[str, float] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    rel_diff: dict[str, float] = field(default_factory=dict)
    forward_s: float = 0.0
    backward_s: float = 0.0
    floor_s: float = 0.0
    flops: dict[str, float] = field(default_factory=dict)
    peak_bytes: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ratios(self) -> dict[str, float]:
        """engine (auto) time divided by every loop that was timed and by the floor."""
        if "engine" not in self.times:
            return {}
        engine = self.times["engine"]
        out = {
            f"engine/{name}": engine / self.times[name]
            for name in (*OPTIONAL, "frozen")
            if name in self.times
        }
        if self.floor_s:
            out["engine/floor"] = engine / self.floor_s
        if "engine-fullhead" in self.times:
            out["engine/fullhead"] = engine / self.times["engine-fullhead"]
        if "pass" in self.times:
            out["pass/engine"] = self.times["pass"] / engine
        return out

    @property
    def engine_gflops(self) -> float:
        """Achieved GFLOP/s of the engine: its analytic FLOPs over its median time."""
        if "engine" not in self.times or not self.flops:
            return float("nan")
        return self.flops["engine"] / self.times["engine"] / 1e9


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
    hidden: int,
    layers: int,
    vocab: int,
    max_positions: int,
    device,
    dtype,
    attn: str,
    seed: int = 0,
    heads: int = 0,
    kv_heads: int = 0,
    intermediate: int = 0,
):
    """A random Llama in eval mode, built directly on `device` in `dtype` (no CPU copy of a large model).

    Defaults (0) follow Llama: head dim 64 where hidden allows, as many KV heads as heads, intermediate 8/3 x
    hidden rounded down to a multiple of 8.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig

    heads = heads or (max(1, hidden // 64) if hidden >= 128 else 4)
    if hidden % heads:
        raise SystemExit(f"--hidden {hidden} is not divisible by --heads {heads}; pick a divisor")
    kv_heads = kv_heads or heads
    if heads % kv_heads:
        raise SystemExit(f"--heads {heads} is not a multiple of --kv-heads {kv_heads}; pick a divisor")
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate or (int(8 * hidden / 3) // 8 * 8 or 8),
        max_position_embeddings=max_positions,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    with torch.device(device):
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
    """f(y_n) for the last len(target_ids) positions from one forward (the LM head only there)."""
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


def prefix_loop(model, prompt_ids, target_ids, objective="prob") -> torch.Tensor:
    """The per-prefix loop (Inseq, Captum): per target y_n a forward on prompt + y_<n and an input-only
    backward.

    A causal model's score of y_n depends only on its prefix, so this is the same matrix as the frozen loop,
    at the price of N forwards instead of one.
    """
    prompt_embeds, target_embeds = _embeds(model, prompt_ids, target_ids)
    columns = []
    with frozen_parameters(model):
        for n in range(len(target_ids)):
            leaf = prompt_embeds.clone().requires_grad_(True)
            score = _scores(model, leaf, target_embeds[:, :n], target_ids[n : n + 1], objective)[0]
            (grad,) = torch.autograd.grad(score, leaf)
            columns.append((grad.float() * leaf.detach().float()).sum(-1)[0])
    return torch.stack(columns, dim=1).cpu()


def engine(mode: str, head_shortcut: bool = True) -> Callable:
    """`gradient_x_input` in `mode` (forward mode under eager attention, which it needs); `head_shortcut`
    False is the former route through the LM head in every derivative pass (``engine-fullhead``)."""

    def run(model, prompt_ids, target_ids, objective="prob") -> torch.Tensor:
        run_mode = choose_mode(len(prompt_ids), len(target_ids), mode)
        context = eager_attention(model) if run_mode == "forward" else contextlib.nullcontext()
        with context:
            extra = {} if head_shortcut else {"head_shortcut": False}  # the call runs on older engines too
            return gradient_x_input(
                model, prompt_ids, target_ids, objective=objective, mode=mode, **extra
            ).raw

    return run


def pass_labels(prompt_len: int) -> list[str]:
    """Part labels for a random prompt: BOS, an instruction of a quarter of the prompt, content after it."""
    n_instr = max(1, prompt_len // 4)
    labels = ["special"] + ["instruction"] * n_instr + ["content"] * max(0, prompt_len - 1 - n_instr)
    return labels[:prompt_len]


def synthetic_ffn_probe(model, k: int = 8, seed: int = 0):
    """The pass's FFN probe with random orthonormal components per layer (no tokenizer, no cache): its cost
    inside the pass is the hooks and the projections, not the labels."""
    from types import SimpleNamespace

    from lm_interp_plugin.arch import get_adapter
    from lm_interp_plugin.interpret.ffn_probe import FFNProbe

    adapter = get_adapter(model)
    gen = torch.Generator().manual_seed(seed)
    components, labels = [], []
    for _ in range(adapter.num_layers):
        basis = torch.linalg.qr(torch.randn(adapter.hidden_size, k, generator=gen))[0].t().contiguous()
        components.append(SimpleNamespace(components=basis))
        labels.append([SimpleNamespace(concept="other") for _ in range(k)])
    if hasattr(FFNProbe, "from_parts"):
        return FFNProbe.from_parts(model, components, labels)
    probe = FFNProbe.__new__(FFNProbe)  # an engine before from_parts (before/after runs of this script)
    probe.adapter, probe.components, probe.labels = adapter, components, labels
    probe.concepts, probe._outputs = ["other"], {}
    return probe


def whole_pass(model, prompt_ids, target_ids, objective="prob") -> torch.Tensor:
    """`interpret.run_pass` with its defaults: attribution (auto mode), instruction attention, FFN concepts
    (`synthetic_ffn_probe`), instruction ablation; returns its raw matrix."""
    from lm_interp_plugin.interpret.passes import run_pass
    from lm_interp_plugin.interpret.settings import InterpSettings

    probe = getattr(model, "_bench_ffn_probe", None)
    if probe is None:
        probe = synthetic_ffn_probe(model)
        model._bench_ffn_probe = probe
    settings = InterpSettings(objective=objective)
    result = run_pass(
        model,
        prompt_ids.tolist(),
        target_ids.tolist(),
        pass_labels(len(prompt_ids)),
        settings,
        ffn_probe=probe,
        neutral_token_id=2,
    )
    return torch.from_numpy(result.raw)


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


def _timed(fn: Callable, model, prompt_ids, target_ids, objective) -> tuple[float, torch.Tensor, int | None]:
    """Seconds, result and (on CUDA) peak allocated bytes of one call."""
    device = prompt_ids.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = _now(device)
    out = fn(model, prompt_ids, target_ids, objective)
    seconds = _now(device) - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return seconds, out, peak


# ------------------------------------------------------------------------------------------------ measurement
def methods_for(
    prompt: int, targets: int, modes: str, skip: Sequence[str] = (), levers: bool = False, whole: bool = False
) -> dict[str, Callable]:
    """The methods to time for one cell: forced modes are added where their pass count is within 2x of
    auto; `levers` adds the engine without the LM-head shortcut, `whole` the product's whole pass."""
    bad = sorted(set(skip) - set(OPTIONAL))
    if bad:
        raise SystemExit(f"--skip {','.join(bad)}: only {', '.join(OPTIONAL)} can be skipped")
    chosen = {"paper": paper_loop, "frozen": frozen_loop, "prefix": prefix_loop, "engine": engine("auto")}
    chosen = {name: fn for name, fn in chosen.items() if name not in skip}
    best = min(prompt, targets)
    for mode, passes in (("reverse", targets), ("forward", prompt)):
        sensible = passes <= 2 * best and mode != choose_mode(prompt, targets)
        if modes == "all" or (modes == "sensible" and sensible):
            chosen[f"engine-{mode}"] = engine(mode)
    if levers:
        chosen["engine-fullhead"] = engine("auto", head_shortcut=False)
    if whole:
        chosen["pass"] = whole_pass
    return chosen


def _oom_errors() -> tuple[type[BaseException], ...]:
    return (torch.cuda.OutOfMemoryError,) if hasattr(torch.cuda, "OutOfMemoryError") else ()


def measure(
    model,
    prompt: int,
    targets: int,
    repeats: int,
    objective: str,
    modes: str,
    seed: int = 0,
    skip: Sequence[str] = (),
    warmup: int = 1,
    levers: bool = False,
    whole: bool = False,
) -> Setting:
    """Median seconds per example of every method on one (prompt, targets) cell, methods interleaved.

    With ``warmup=0`` the matrices compared with the frozen loop's come from the first timed repetition (for
    cells where one call takes minutes); a method that runs out of CUDA memory is recorded in ``failed``.
    """
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(seed + 1000 * prompt + targets)
    prompt_ids = torch.randint(3, vocab, (prompt,), generator=gen).to(device)
    target_ids = torch.randint(3, vocab, (targets,), generator=gen).to(device)
    methods = methods_for(prompt, targets, modes, skip, levers, whole)
    setting = Setting(prompt=prompt, targets=targets, auto_mode=choose_mode(prompt, targets))
    flops = pass_flops(model.config, prompt + targets - 1, targets)
    passes = targets if setting.auto_mode == "reverse" else prompt
    setting.flops = {
        "forward": flops.forward,
        "backward": flops.backward,
        "floor": min(prompt, targets) * (flops.forward + flops.backward),
        "engine": flops.forward + passes * flops.backward,
    }

    one_pass(model, prompt_ids, target_ids, objective)  # kernels, allocator and caches warm
    results: dict[str, torch.Tensor] = {}
    samples: dict[str, list[float]] = {name: [] for name in methods}
    fwd, bwd = [], []
    for rep in range(warmup + repeats):
        for name, fn in methods.items():
            if name in setting.failed:
                continue
            try:
                seconds, matrix, peak = _timed(fn, model, prompt_ids, target_ids, objective)
            except _oom_errors() as err:
                logger.warning("P=%d N=%d %s ran out of memory: %s", prompt, targets, name, str(err)[:200])
                setting.failed[name] = "out of memory"
                samples.pop(name, None)
                torch.cuda.empty_cache()
                continue
            results.setdefault(name, matrix)
            if peak is not None:
                setting.peak_bytes[name] = max(peak, setting.peak_bytes.get(name, 0))
            if rep >= warmup:
                samples[name].append(seconds)
            logger.info("P=%d N=%d rep %d %s %.3f s", prompt, targets, rep, name, seconds)
        if rep >= warmup:
            f, b = one_pass(model, prompt_ids, target_ids, objective)
            fwd.append(f)
            bwd.append(b)
    if "frozen" in results:
        reference = results["frozen"].float()
        scale = reference.abs().max().item() or 1.0
        for name, matrix in results.items():
            diff = (matrix.float() - reference).abs().max().item()
            setting.max_abs_diff[name] = diff
            setting.rel_diff[name] = diff / scale
    setting.times = {name: statistics.median(values) for name, values in samples.items() if values}
    setting.forward_s, setting.backward_s = statistics.median(fwd), statistics.median(bwd)
    setting.floor_s = (setting.forward_s + setting.backward_s) * min(prompt, targets)
    return setting


def _cell(value: float | None, width: int, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    return f"{value:{width}{spec}}"


def format_table(settings: Sequence[Setting], max_memory: bool = False) -> str:
    """A plain-text table: seconds per example, the engine's ratios, FLOPs and the worst disagreement.

    With `max_memory`, a second table gives each method's peak allocated GiB (CUDA only; '-' elsewhere).
    """
    names = ("paper", "frozen", "prefix", "engine", "engine-reverse", "engine-forward")
    ratios = ("engine/paper", "engine/frozen", "engine/prefix", "engine/floor")
    if any("engine-fullhead" in s.times or "engine-fullhead" in s.failed for s in settings):
        names, ratios = (*names, "engine-fullhead"), (*ratios, "engine/fullhead")
    if any("pass" in s.times or "pass" in s.failed for s in settings):
        names, ratios = (*names, "pass"), (*ratios, "pass/engine")
    short = {"engine-reverse": "reverse", "engine-forward": "forward", "engine-fullhead": "fullhead"}
    header = (
        f"{'P':>5} {'N':>5} {'auto':>7} "
        + " ".join(f"{short.get(n, n) + ' s':>10}" for n in names)
        + f" {'floor s':>10} "
        + " ".join(f"{r.replace('engine', 'eng'):>11}" for r in ratios)
        + f" {'floor GFLOP':>11} {'eng GFLOP/s':>11} {'max rel diff':>12}"
    )
    lines = [header, "-" * len(header)]
    for s in settings:
        r = s.ratios
        diffs = [d for d in s.rel_diff.values() if not math.isnan(d)]
        lines.append(
            f"{s.prompt:>5} {s.targets:>5} {s.auto_mode:>7} "
            + " ".join(_cell(s.times.get(n), 10, ".4f") for n in names)
            + f" {s.floor_s:10.4f} "
            + " ".join(_cell(r.get(k), 11, ".2f") for k in ratios)
            + f" {s.flops.get('floor', 0) / 1e9:11.4g} {_cell(s.engine_gflops, 11, '.2f')} "
            + _cell(max(diffs) if diffs else None, 12, ".2e")
        )
    if max_memory:
        lines += ["", f"{'P':>5} {'N':>5} " + " ".join(f"{short.get(n, n) + ' GiB':>12}" for n in names)]
        for s in settings:
            cells = []
            for n in names:
                if n in s.failed:
                    cells.append(f"{'OOM':>12}")
                else:
                    peak = s.peak_bytes.get(n)
                    cells.append(_cell(None if peak is None else peak / 2**30, 12, ".2f"))
            lines.append(f"{s.prompt:>5} {s.targets:>5} " + " ".join(cells))
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=0, help="attention heads (0: hidden / 64)")
    parser.add_argument("--kv-heads", type=int, default=0, help="key/value heads (0: as many as --heads)")
    parser.add_argument("--intermediate", type=int, default=0, help="MLP width (0: 8/3 x hidden)")
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
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed calls per method before the timed repeats (0: compare the first timed call's matrix)",
    )
    parser.add_argument(
        "--skip",
        type=_names,
        default=[],
        help="comma-separated loops not to run: paper, prefix (for cells where they take many minutes)",
    )
    parser.add_argument(
        "--levers",
        action="store_true",
        help="also time the engine without the LM-head shortcut (engine-fullhead: the former route)",
    )
    parser.add_argument(
        "--pass",
        dest="whole_pass",
        action="store_true",
        help="also time the product's whole pass (run_pass defaults: attribution, instruction attention, "
        "FFN concepts with a synthetic probe, ablation): column 'pass', ratio pass/engine",
    )
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
    parser.add_argument(
        "--max-memory",
        action="store_true",
        help="print each method's peak allocated memory (torch.cuda.max_memory_allocated; CUDA only)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error(f"--repeats must be >= 1 and --warmup >= 0 (got {args.repeats}, {args.warmup})")
    methods_for(1, 1, "auto", args.skip)  # validate --skip before building a model
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print the table, write JSON if asked; returns the JSON-able result."""
    args = parse_args(argv)
    device, dtype = resolve_device(args.device, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_memory and device.type != "cuda":
        logger.warning("--max-memory reports torch.cuda.max_memory_allocated: not available on %s", device)
    prompts = args.prompts or [args.prompt]
    targets = sorted(set(args.targets + ([512] if args.long else [])))
    model = build_model(
        args.hidden,
        args.layers,
        args.vocab,
        max(prompts) + max(targets),
        device,
        dtype,
        args.attn,
        args.seed,
        args.heads,
        args.kv_heads,
        args.intermediate,
    )
    cfg = model.config
    header = (
        f"device={device} dtype={dtype} threads={torch.get_num_threads()} hidden={cfg.hidden_size} "
        f"layers={cfg.num_hidden_layers} heads={cfg.num_attention_heads} kv_heads={cfg.num_key_value_heads} "
        f"intermediate={cfg.intermediate_size} vocab={cfg.vocab_size} attn={args.attn} "
        f"repeats={args.repeats} "
        f"warmup={args.warmup} skip={','.join(args.skip) or '-'}"
    )
    print(header, flush=True)
    config = {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device_used": str(device),
        "dtype_used": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": {
            k: getattr(cfg, k)
            for k in (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "intermediate_size",
                "vocab_size",
            )
        },
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    settings: list[Setting] = []
    result: dict = {}
    for prompt in prompts:
        for n in targets:
            logger.info("measuring P=%d N=%d", prompt, n)
            settings.append(
                measure(
                    model,
                    prompt,
                    n,
                    args.repeats,
                    args.objective,
                    args.modes,
                    args.seed,
                    args.skip,
                    args.warmup,
                    args.levers,
                    args.whole_pass,
                )
            )
            result = {
                "config": config,
                "settings": [
                    {**asdict(s), "ratios": s.ratios, "engine_gflops": s.engine_gflops} for s in settings
                ],
                "table": format_table(settings, args.max_memory),
            }
            if args.json:  # after every cell, so a long sweep that is cut short keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(result, indent=2))
            print(format_table(settings[-1:], args.max_memory), flush=True)
    print("\n" + result["table"], flush=True)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
