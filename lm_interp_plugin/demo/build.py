"""Build the demo's base model and its instruction-tuned version, locally and deterministically.

`lm-interp demo` needs a base/tuned pair that differs the way a real pretrained model and its instruction-
tuned version do, without downloading anything: a tiny Llama is pretrained on synthetic English-like text
(`synthetic.pretraining_text`), saved as the base, then a copy is tuned on instruction -> answer pairs with
the loss on the answer tokens only, and saved as the tuned model. Both load with `from_pretrained(path)`.

The pair this module built once is shipped with the package (`lm_interp_plugin/data/demo_pair`, see
`shipped_pair`), because float sums in a different order (another CPU, another thread count) train a
different pair, and the demo's verdicts should be the same everywhere. `lm-interp demo --rebuild` trains
one again from the recipe.

The output folder is keyed by a hash of the recipe (every hyper-parameter, the seed and `RECIPE_VERSION`), so
a second call with the same recipe returns at once, and a changed recipe never reuses stale weights. The
manifest (`demo_manifest.json`) also records held-out accuracies of both models, so the demo can say how much
better the tuned model follows instructions before any interpretation is run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lm_interp_plugin.demo import synthetic
from lm_interp_plugin.testing.tiny import build_tiny_model, save_tiny, train_tokenizer

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: Bump when the data generators or the training code change in a way that changes the weights.
RECIPE_VERSION = "demo-pair-v2"
MANIFEST_NAME = "demo_manifest.json"
HELDOUT_NAME = "heldout_instruct.jsonl"
HELDOUT_MC_NAME = "heldout_instruct_mc.jsonl"
BUILD_LOG_NAME = "build.log"
HASHES_NAME = "SHA256SUMS"
#: The seed of the shipped pair, and of `--rebuild` by default. Of the seeds 0 to 5 built here
#: (benchmarks/RESULTS.md, section 8), five give the same six verdicts; this one has the smallest p-values.
DEFAULT_SEED = 1
#: Sets the training's thread count, overriding `training_threads`' choice.
THREADS_ENV = "LM_INTERP_DEMO_THREADS"
#: More threads than this do not speed up a model this small (its matrices are 128 wide).
MAX_TRAINING_THREADS = 4


@dataclass(frozen=True)
class DemoRecipe:
    """Every knob of the build; its hash names the cache folder.

    The defaults are sized so that the whole build (both trainings and the evaluation) takes two to four
    minutes on two CPU cores (see demo/README.md); `small()` is a recipe for tests that builds in seconds.
    """

    vocab_size: int = 1000
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    max_positions: int = 256
    pretrain_docs: int = 4000
    pretrain_steps: int = 300
    pretrain_batch: int = 16
    pretrain_seq_len: int = 64
    pretrain_lr: float = 3e-3
    instruct_examples: int = 8000
    instruct_steps: int = 1500
    instruct_batch: int = 32
    instruct_lr: float = 3e-3
    warmup_fraction: float = 0.05
    weight_decay: float = 0.01
    eval_items: int = 54
    eval_mc_items: int = 96
    #: Add the word tasks (`synthetic.WORD_CATEGORIES`: the instruction names a word the answer uses).
    word_tasks: bool = True

    @property
    def categories(self) -> tuple[str, ...]:
        """The task types of the instruction data and the held-out items."""
        extra = synthetic.WORD_CATEGORIES if self.word_tasks else ()
        return synthetic.CATEGORIES + extra

    @classmethod
    def small(cls) -> DemoRecipe:
        """A recipe for tests: a one-layer model and a handful of steps (seconds on a CPU)."""
        return cls(
            vocab_size=300,
            hidden=32,
            layers=1,
            heads=2,
            kv_heads=1,
            max_positions=128,
            pretrain_docs=60,
            pretrain_steps=3,
            pretrain_batch=4,
            pretrain_seq_len=32,
            instruct_examples=60,
            instruct_steps=3,
            instruct_batch=4,
            eval_items=9,
            eval_mc_items=4,
        )

    def key(self, seed: int) -> str:
        """Hash of the recipe, the seed and `RECIPE_VERSION` (names the cache folder)."""
        blob = json.dumps({"version": RECIPE_VERSION, "seed": seed, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@dataclass
class DemoModels:
    """Where the built pair lives, plus the training and evaluation numbers from the manifest."""

    base_path: Path
    tuned_path: Path
    heldout_path: Path
    heldout_mc_path: Path
    manifest_path: Path
    stats: dict = field(default_factory=dict)


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch and turn on deterministic algorithms, restoring the global RNG and the previous setting
    after."""
    import torch

    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_on, warn_only=was_warn_only)


def training_threads() -> tuple[int, str]:
    """How many threads the build trains with, and why.

    `$LM_INTERP_DEMO_THREADS` if set; otherwise the cores this process may run on (`sched_getaffinity`,
    else `os.cpu_count()`) minus those the 1-minute load average says are busy, at least 1 and at most
    `MAX_TRAINING_THREADS`. More threads than free cores make every step wait on a descheduled thread (on 2
    shared cores torch's default took 1 to 6 s per step, one thread 0.2 s).
    """
    env = os.environ.get(THREADS_ENV)
    if env:
        return max(1, int(env)), f"${THREADS_ENV}={env}"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    free = cores - int(load)
    threads = max(1, min(MAX_TRAINING_THREADS, cores, free))
    return threads, f"{cores} usable cores, load average {load:.2f}, at most {MAX_TRAINING_THREADS}"


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """`torch.set_num_threads(n)` for the duration, the previous count restored after."""
    import torch

    was = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(was)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_partials(cache_dir: Path) -> list[Path]:
    """Delete `demo-*.partial-<pid>` folders whose building process is gone (a killed build's leftovers)."""
    removed = []
    for folder in Path(cache_dir).glob("demo-*.partial-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            logger.info("removed %s, left by a build that did not finish", folder)
    return removed


@contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Copy this package's INFO log lines into `path` (the build log kept beside the weights)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("lm_interp_plugin")
    was = root.level
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(was)
        handler.close()


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM (`kill PID`) into SystemExit for the duration, so a killed build still removes its
    partial folder (SIGKILL cannot be caught: `remove_stale_partials` clears those on the next build)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_demo_pair(
    cache_dir: Path,
    force: bool = False,
    seed: int = DEFAULT_SEED,
    recipe: DemoRecipe | None = None,
    threads: int | None = None,
) -> DemoModels:
    """Build (or load from the cache) the demo's base and instruction-tuned models.

    Args:
        cache_dir: parent folder; the pair goes to `cache_dir/demo-<recipe hash>/{base,tuned}`.
        force: rebuild even if a complete build with the same recipe exists.
        seed: seeds the data, the initial weights and the batch order.
        recipe: sizes and training lengths; `DemoRecipe()` by default.
        threads: torch threads while training; `training_threads()` decides by default. The count can
            change the weights in their last bits (float sums in another order); the manifest records it.

    Returns:
        The paths of both models, of the held-out JSONL files, of the manifest, and the manifest's stats.
    """
    recipe = recipe or DemoRecipe()
    out = Path(cache_dir) / f"demo-{recipe.key(seed)}"
    manifest_path = out / MANIFEST_NAME
    if manifest_path.is_file() and not force:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("key") == recipe.key(seed):
            logger.info("demo models found in cache at %s", out)
            return _models_from(out, manifest)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    remove_stale_partials(cache_dir)
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")  # a crashed build never looks finished
    tmp.mkdir(parents=True)
    if threads is None:
        threads, why = training_threads()
    else:
        why = "asked for"
    try:
        with _sigterm_raises(), _log_to(tmp / BUILD_LOG_NAME), torch_threads(threads), deterministic(seed):
            logger.info(
                "building demo pair %s (seed %d) with %d torch threads (%s)", out.name, seed, threads, why
            )
            stats = _build_into(tmp, recipe, seed)
            stats["threads"] = threads
            for part in ("base", "tuned"):
                portable_tokenizer_config(tmp / part)
            manifest = {
                "key": recipe.key(seed),
                "version": RECIPE_VERSION,
                "seed": seed,
                "recipe": asdict(recipe),
                **stats,
            }
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
            write_hashes(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:  # interrupted or failed: leave nothing half-written behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("demo models written to %s", out)
    return _models_from(out, manifest)


def portable_tokenizer_config(model_dir: Path) -> None:
    """Name the tokenizer class `PreTrainedTokenizerFast`, which transformers 4 and 5 both load (5 writes
    `TokenizersBackend`, unknown to 4); the tokenizer itself (tokenizer.json) is unchanged."""
    path = Path(model_dir) / "tokenizer_config.json"
    if path.is_file():
        config = json.loads(path.read_text())
        if config.get("tokenizer_class") == "TokenizersBackend":
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
            path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def _hashed_files(folder: Path) -> list[Path]:
    """Every file of a build whose bytes matter (weights, tokenizer, configs, data, manifest)."""
    skip = {HASHES_NAME, BUILD_LOG_NAME, "robustness.json"}  # the log and the later rebuild check vary
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in skip)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_hashes(folder: Path) -> Path:
    """`SHA256SUMS` (the `sha256sum -c` format) of every file of the build, beside them."""
    lines = [f"{_sha256(p)}  {p.relative_to(folder).as_posix()}" for p in _hashed_files(folder)]
    path = folder / HASHES_NAME
    path.write_text("\n".join(lines) + "\n")
    return path


def check_hashes(folder: Path) -> list[str]:
    """The files of `folder` whose bytes differ from its `SHA256SUMS` (or are missing); empty when intact."""
    bad = []
    for line in (folder / HASHES_NAME).read_text().splitlines():
        digest, name = line.split("  ", 1)
        path = folder / name
        if not path.is_file() or _sha256(path) != digest:
            bad.append(name)
    return bad


def shipped_pair_dir() -> Path:
    """Where the package keeps the pair it ships (`lm_interp_plugin/data/demo_pair`)."""
    from importlib.resources import files

    return Path(str(files("lm_interp_plugin.data"))) / "demo_pair"


def shipped_pair() -> DemoModels:
    """The base/tuned pair built once by `build_demo_pair` (default recipe, `DEFAULT_SEED`, one thread) and
    shipped with the package, after checking its files against their SHA-256 sums."""
    folder = shipped_pair_dir()
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"the shipped demo pair is missing ({manifest_path}); reinstall lm-interp, or train one with "
            "`lm-interp demo --rebuild`"
        )
    bad = check_hashes(folder)
    if bad:
        raise ValueError(
            f"the shipped demo pair in {folder} does not match its {HASHES_NAME} ({', '.join(bad)}); "
            "reinstall lm-interp, or train one with `lm-interp demo --rebuild`"
        )
    return _models_from(folder, json.loads(manifest_path.read_text()))


def export_pair(build: Path, dest: Path) -> Path:
    """Copy a finished build (weights, tokenizers, held-out data, manifest, build log, hashes) to `dest`,
    replacing what is there: how `data/demo_pair` is made (`python -m lm_interp_plugin.demo.build`)."""
    build, dest = Path(build), Path(dest)
    if check_hashes(build):
        raise ValueError(f"{build} does not match its {HASHES_NAME}")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(build, dest)
    return dest


def _models_from(out: Path, manifest: dict) -> DemoModels:
    """The `DemoModels` record of a finished build folder."""
    return DemoModels(
        base_path=out / "base",
        tuned_path=out / "tuned",
        heldout_path=out / HELDOUT_NAME,
        heldout_mc_path=out / HELDOUT_MC_NAME,
        manifest_path=out / MANIFEST_NAME,
        stats={k: v for k, v in manifest.items() if k not in ("key", "recipe")},
    )


def _build_into(out: Path, recipe: DemoRecipe, seed: int) -> dict:
    """Tokenizer, base pretraining, instruction tuning, held-out data and evaluation, written into `out`."""
    t0 = time.perf_counter()
    categories = recipe.categories
    docs = synthetic.pretraining_text(recipe.pretrain_docs, seed=seed, instruction_words=recipe.word_tasks)
    train_items = synthetic.instruction_examples(recipe.instruct_examples, seed=seed, categories=categories)
    heldout = synthetic.heldout_instruct(recipe.eval_items, seed=seed, categories=categories)
    heldout_mc = synthetic.heldout_instruct_mc(recipe.eval_mc_items, seed=seed, categories=categories)
    tok_texts = docs + [
        synthetic.format_prompt(x["instruction"], x["input"]) + " " + x["reference"] for x in train_items
    ]
    tok = train_tokenizer(tok_texts, vocab_size=recipe.vocab_size)
    logger.info("tokenizer: %d tokens", len(tok))

    model = build_tiny_model(
        "llama",
        tok,
        seed=seed,
        hidden=recipe.hidden,
        layers=recipe.layers,
        heads=recipe.heads,
        kv_heads=recipe.kv_heads,
        max_positions=recipe.max_positions,
    )
    t1 = time.perf_counter()
    pre_losses = _pretrain(model, tok, docs, recipe, seed)
    save_tiny(model, tok, out / "base")
    t2 = time.perf_counter()
    tuned = copy.deepcopy(model)
    tune_losses = _instruct_tune(tuned, tok, train_items, recipe, seed)
    save_tiny(tuned, tok, out / "tuned")
    t3 = time.perf_counter()

    _write_jsonl(out / HELDOUT_NAME, heldout)
    _write_jsonl(out / HELDOUT_MC_NAME, heldout_mc)
    evaluation = {
        name: {"exact_match": exact_match(m, tok, heldout), "mc": mc_accuracy(m, tok, heldout_mc)}
        for name, m in (("base", model), ("tuned", tuned))
    }
    t4 = time.perf_counter()
    for name, res in evaluation.items():
        logger.info(
            "%s: held-out exact match %.2f, multiple choice %.2f",
            name,
            res["exact_match"]["overall"],
            res["mc"]["overall"],
        )
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tok),
        "pretrain_loss": {"first": pre_losses[0], "last": _tail_mean(pre_losses)},
        "instruct_loss": {"first": tune_losses[0], "last": _tail_mean(tune_losses)},
        "evaluation": evaluation,
        "seconds": {
            "data_and_tokenizer": round(t1 - t0, 2),
            "pretrain": round(t2 - t1, 2),
            "instruct_tune": round(t3 - t2, 2),
            "evaluate": round(t4 - t3, 2),
            "total": round(t4 - t0, 2),
        },
    }


def _tail_mean(values: list[float], tail: int = 10) -> float:
    """Mean of the last `tail` values: a less noisy "final loss" than the last step alone."""
    last = values[-tail:]
    return sum(last) / len(last)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _optimizer(model: torch.nn.Module, lr: float, steps: int, recipe: DemoRecipe):
    """AdamW with linear warm-up and cosine decay to a tenth of `lr`."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=recipe.weight_decay, betas=(0.9, 0.98))
    warmup = max(1, int(recipe.warmup_fraction * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


@contextmanager
def _training(model: torch.nn.Module) -> Iterator[None]:
    """Train mode for the duration, eval mode afterwards (the saved models are used for inference)."""
    model.train()
    try:
        yield
    finally:
        model.eval()


def _run_steps(
    model: torch.nn.Module, batches: list[torch.Tensor], lr: float, steps: int, recipe: DemoRecipe, desc: str
) -> list[float]:
    """The shared optimisation loop: one batch (input_ids, attention_mask, labels) per step."""
    import torch
    from tqdm.auto import tqdm

    opt, sched = _optimizer(model, lr, steps, recipe)
    losses = []
    with _training(model):
        bar = tqdm(range(steps), desc=desc, leave=False)
        for step in bar:
            input_ids, mask, labels = batches(step)
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if step % 25 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step % 100 == 0 or step == steps - 1:
                logger.info("%s step %d/%d: loss %.4f", desc, step + 1, steps, losses[-1])
    logger.info("%s: loss %.3f -> %.3f over %d steps", desc, losses[0], _tail_mean(losses), steps)
    return losses


def _pretrain(
    model: torch.nn.Module, tok: PreTrainedTokenizerBase, docs: list[str], recipe: DemoRecipe, seed: int
) -> list[float]:
    """Causal-LM training on packed sequences of the documents (BOS ... EOS, concatenated, chunked)."""
    import torch

    stream: list[int] = []
    for ids in tok(docs)["input_ids"]:
        stream.extend(ids + [tok.eos_token_id])
    n = recipe.pretrain_seq_len
    chunks = torch.tensor(stream[: len(stream) // n * n]).view(-1, n)
    if len(chunks) < recipe.pretrain_batch:
        raise ValueError(
            f"pretraining text gives {len(chunks)} sequences of {n} tokens, fewer than pretrain_batch="
            f"{recipe.pretrain_batch}; raise pretrain_docs or lower pretrain_seq_len"
        )
    logger.info("pretraining on %d packed sequences of %d tokens", len(chunks), n)
    gen = torch.Generator().manual_seed(seed)

    def batches(step: int):
        ids = chunks[torch.randint(len(chunks), (recipe.pretrain_batch,), generator=gen)]
        return ids, torch.ones_like(ids), ids

    return _run_steps(model, batches, recipe.pretrain_lr, recipe.pretrain_steps, recipe, "pretrain")


def encode_example(
    tok: PreTrainedTokenizerBase, instruction: str, text: str, reference: str
) -> tuple[list[int], int]:
    """Token ids of prompt + answer + EOS, and the number of prompt tokens (the loss starts after them).

    The prompt and the answer are encoded separately, so the prompt's tokens are exactly those a model sees
    when asked to generate from the prompt alone.
    """
    prompt = tok(synthetic.format_prompt(instruction, text))["input_ids"]
    answer = tok(synthetic.format_answer(reference), add_special_tokens=False)["input_ids"]
    return prompt + answer + [tok.eos_token_id], len(prompt)


def _instruct_tune(
    model: torch.nn.Module, tok: PreTrainedTokenizerBase, items: list[dict], recipe: DemoRecipe, seed: int
) -> list[float]:
    """Supervised tuning on instruction items with the loss on the answer tokens (and EOS) only."""
    import torch

    encoded = [encode_example(tok, x["instruction"], x["input"], x["reference"]) for x in items]
    gen = torch.Generator().manual_seed(seed + 1)

    def batches(step: int):
        picks = torch.randint(len(encoded), (recipe.instruct_batch,), generator=gen).tolist()
        width = max(len(encoded[i][0]) for i in picks)
        ids = torch.full((len(picks), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for row, i in enumerate(picks):
            seq, n_prompt = encoded[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            labels[row, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
        return ids, mask, labels

    return _run_steps(model, batches, recipe.instruct_lr, recipe.instruct_steps, recipe, "instruct-tune")


def greedy_answer(
    model: torch.nn.Module,
    tok: PreTrainedTokenizerBase,
    instruction: str,
    text: str,
    max_new_tokens: int = 24,
) -> str:
    """Greedy continuation of the prompt up to EOS or a newline, stripped (the first line of the output).

    Through `generate`, which handles the KV cache for every transformers version (a hand-written loop that
    passes ``past_key_values`` is deprecated in transformers 5 and removed in 5.40).
    """
    import torch

    ids = torch.tensor([tok(synthetic.format_prompt(instruction, text))["input_ids"]])
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        )
    new: list[int] = []
    for nxt in out[0, ids.shape[1] :].tolist():  # greedy is causal: cutting after the fact is the same
        if nxt == tok.eos_token_id or "\n" in tok.decode([nxt]):
            break
        new.append(nxt)
    return tok.decode(new, skip_special_tokens=True).strip()


def _per_category(hits: list[tuple[str, bool]]) -> dict:
    """Overall and per-category share of hits."""
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for category, hit in hits:
        by_cat[category].append(hit)
    return {
        "overall": sum(h for _, h in hits) / max(1, len(hits)),
        "n": len(hits),
        "by_category": {c: sum(v) / len(v) for c, v in sorted(by_cat.items())},
    }


def exact_match(model: torch.nn.Module, tok: PreTrainedTokenizerBase, items: list[dict]) -> dict:
    """Held-out instruction following: greedy output's first line equals the reference."""
    hits = []
    for x in items:
        # a few tokens past the reference's length decide the match; generating further cannot undo a miss
        budget = len(tok(synthetic.format_answer(x["reference"]), add_special_tokens=False)["input_ids"]) + 3
        output = greedy_answer(model, tok, x["instruction"], x["input"], max_new_tokens=budget)
        hits.append((x["category"], output == x["reference"]))
    return _per_category(hits)


def mc_accuracy(model: torch.nn.Module, tok: PreTrainedTokenizerBase, items: list[dict]) -> dict:
    """Multiple choice: the choice with the highest summed log-probability (after the prompt) is the label."""
    import torch

    hits = []
    with torch.no_grad():
        for x in items:
            seqs = [encode_example(tok, x["instruction"], x["input"], c) for c in x["choices"]]
            width = max(len(s) for s, _ in seqs) - 1  # the trailing EOS is not scored
            ids = torch.full((len(seqs), width), tok.pad_token_id)
            mask = torch.zeros_like(ids)
            for row, (s, _) in enumerate(seqs):
                ids[row, : len(s) - 1] = torch.tensor(s[:-1])
                mask[row, : len(s) - 1] = 1
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            scores = []
            for row, (s, n_prompt) in enumerate(seqs):
                targets = torch.tensor(s[n_prompt:-1])
                positions = torch.arange(n_prompt - 1, len(s) - 2)
                scores.append(float(logp[row, positions, targets].sum()))
            hits.append((x["category"], max(range(len(scores)), key=scores.__getitem__) == x["label"]))
    return _per_category(hits)


def main(argv: list[str] | None = None) -> int:
    """`python -m lm_interp_plugin.demo.build [--seed S] [--threads N] [--export DEST]`: build a pair (and
    optionally copy it to DEST, e.g. `lm_interp_plugin/data/demo_pair` to renew the shipped one)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lm_interp_plugin.demo.build", description=main.__doc__)
    parser.add_argument("--cache_dir", type=Path, default=Path("lm_interp_demo/models"))
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: training_threads)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--export", type=Path, default=None, help="copy the finished build here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    models = build_demo_pair(args.cache_dir, force=args.force, seed=args.seed, threads=args.threads)
    folder = models.manifest_path.parent
    if args.export:
        export_pair(folder, args.export)
        folder = args.export
    logger.info("pair in %s: %s", folder, json.dumps(models.stats.get("evaluation")))
    return 0


if __name__ == "__main__":
    # run the imported module's main, so the log lines carry its name and reach build.log
    from lm_interp_plugin.demo.build import main as _main

    raise SystemExit(_main())
