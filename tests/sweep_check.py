"""What lm-interp computes on one tiny random model of a family: the every-family sweep's unit (a test helper:
it uses the interpretation pass and the explainers, above `lm_interp_plugin.testing` in the layering).

`check_family` builds the family's tiny model (`families.build_family_model`) and runs, in turn: the
interpretation pass (attribution, instruction attention, FFN concepts; it must never crash), the per-layer
attention probe against eager attention's probabilities on a prompt longer than the sliding window and the
attention chunk, FFN concepts from every layer's value vectors, explain-heads and explain-ffn. A family is
fully supported when all of them hold; otherwise each check that does not apply says why (``left_out``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

CHECKS = ("attribution", "probe_equals_eager", "ffn_concepts", "explain_heads", "explain_ffn")

#: Prompt and target lengths of the check: the prompt crosses the tiny models' 8-token windows and chunks.
PROMPT_LEN, TARGET_LEN = 20, 4


@dataclass
class FamilyCheck:
    """The sweep's result for one family: which checks passed, and why each other one did not."""

    family: str
    passed: dict[str, bool] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    crashed: str | None = None  # the interpretation pass raised: the one outcome that is never acceptable

    @property
    def fully_supported(self) -> bool:
        return self.crashed is None and all(self.passed.get(c) for c in CHECKS)


def _mass_tolerance(prompt_len: int) -> float:
    """Probabilities from two kernels differ by float32 rounding of a softmax over `prompt_len` keys; the
    mass sums at most `prompt_len` of them."""
    import torch

    return 64 * prompt_len * torch.finfo(torch.float32).eps


def _inputs(vocab: int):
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (PROMPT_LEN + TARGET_LEN,), generator=g)
    labels = ["template"] * 2 + ["instruction"] * 7 + ["input"] * (PROMPT_LEN - 9)
    return ids[:PROMPT_LEN], ids[PROMPT_LEN:], labels


def _eager_rows(model, sequence, adapter):
    """Every softmax layer's eager probabilities, keyed by model layer index (None where not returned)."""
    import torch

    from lm_interp_plugin.methods.model_state import eager_attention

    with eager_attention(model), torch.no_grad():
        attentions = model(input_ids=sequence[None], output_attentions=True).attentions
    if attentions is None:
        return None
    attentions = list(attentions)
    if len(attentions) == adapter.num_layers:
        return {layer: attentions[layer] for layer in adapter.attention_layers}
    square = [a for a in attentions if a is not None and a.dim() == 4 and a.shape[-1] == a.shape[-2]]
    if len(square) == len(adapter.attention_layers):
        return dict(zip(adapter.attention_layers, square))
    return None


def check_probe(model, adapter, prompt, target, labels) -> tuple[bool, str]:
    """The probe's per-head mass (under the model's own implementation) equals eager's, within rounding."""
    import torch

    from lm_interp_plugin.methods.attention import instruction_attention, target_query_positions
    from lm_interp_plugin.methods.attention_probe import InstructionAttentionProbe

    mask = torch.tensor([label == "instruction" for label in labels])
    positions = target_query_positions(len(prompt), len(target))
    sequence = torch.cat([prompt, target[:-1]])
    probe = InstructionAttentionProbe(model, mask, positions)
    with probe.capture(), torch.no_grad():
        model(input_ids=sequence[None])
    got = probe.result()
    rows = _eager_rows(model, sequence, adapter)
    if rows is None or any(rows.get(layer) is None for layer in probe.layers):
        return False, "eager attention returned no seq x seq probabilities to compare with"
    reference = instruction_attention(
        torch.stack([rows[layer][0] for layer in probe.layers]), mask, positions
    )
    diff = float((got.mass - reference.mass).abs().max())
    tol = _mass_tolerance(len(prompt))
    if not diff <= tol:
        return False, f"probe differs from eager by {diff:.2e} (tolerance {tol:.1e})"
    return True, ""


def check_family(model_type: str, tokenizer: PreTrainedTokenizerBase) -> FamilyCheck:
    """Run every check on the tiny model of `model_type` (see the module docstring)."""
    import torch

    from lm_interp_plugin.arch import UnsupportedArchitectureError, get_adapter
    from lm_interp_plugin.interpret.ffn_probe import FFNProbe
    from lm_interp_plugin.interpret.passes import run_pass
    from lm_interp_plugin.interpret.settings import InterpSettings
    from lm_interp_plugin.methods.ffn import ffn_pca
    from lm_interp_plugin.testing.families import build_family_model

    result = FamilyCheck(model_type)
    try:
        model = build_family_model(model_type, vocab_size=len(tokenizer))
    except Exception as err:
        result.crashed = f"tiny model does not build: {type(err).__name__}: {err}"[:300]
        return result
    try:
        adapter = get_adapter(model)
    except UnsupportedArchitectureError as err:
        adapter = None
        for check in CHECKS[1:]:
            result.left_out[check] = f"layout not found: {err}"[:300]
    prompt, target, labels = _inputs(len(tokenizer))

    probe = None
    if adapter is not None and adapter.ffn_missing() is None:
        try:
            k = min(
                4,
                adapter.hidden_size,
                *(adapter.down_proj_weight(i).shape[1] - 1 for i in adapter.ffn_layers),
            )
            comps = [ffn_pca(adapter.down_proj_weight(i).float(), k) for i in adapter.ffn_layers]
            labels_ffn = [[type("L", (), {"concept": "other"})() for _ in range(k)] for _ in comps]
            probe = FFNProbe.from_parts(model, comps, labels_ffn)
        except (UnsupportedArchitectureError, ValueError) as err:
            result.left_out["ffn_concepts"] = str(err)[:300]
    elif adapter is not None:
        result.left_out["ffn_concepts"] = adapter.ffn_missing() or ""
    settings = InterpSettings(mode="reverse", ablation=False, fp32_check=0)
    try:
        out = run_pass(model, prompt.tolist(), target.tolist(), labels, settings, ffn_probe=probe)
    except UnsupportedArchitectureError as err:  # refused up front, naming why: not a crash
        out = None
        for check in ("attribution", "ffn_concepts"):
            result.left_out[check] = f"the interpretation pass refuses the family: {err}"[:300]
    except Exception as err:
        result.crashed = f"run_pass: {type(err).__name__}: {err}"[:300]
        return result
    if out is not None:
        result.passed["attribution"] = bool(math.isfinite(float(abs(out.raw).sum()))) and out.raw.size > 0
    if probe is not None and out is not None:
        shares = out.ffn.get("concept_shares")
        result.passed["ffn_concepts"] = bool(shares) and len(out.ffn["component_distribution"]) == len(
            adapter.ffn_layers
        )

    if adapter is not None:
        try:
            ok, why = check_probe(model, adapter, prompt, target, labels)
            result.passed["probe_equals_eager"] = ok
            if not ok:
                result.left_out["probe_equals_eager"] = why
        except UnsupportedArchitectureError as err:
            result.left_out["probe_equals_eager"] = str(err)[:300]
        except Exception as err:
            result.left_out["probe_equals_eager"] = f"{type(err).__name__}: {err}"[:300]
        for check, run in (("explain_heads", _explain_heads), ("explain_ffn", _explain_ffn)):
            try:
                run(model, tokenizer)
                result.passed[check] = True
            except Exception as err:
                result.left_out[check] = f"{type(err).__name__}: {err}"[:300]
    del torch
    return result


def _explain_heads(model, tokenizer) -> None:
    from lm_interp_plugin.explain.heads import explain_heads

    expl = explain_heads(model, tokenizer, top_k=3, max_words=60, neighbors=5, progress=False)
    if not expl.heads:
        raise ValueError("explain-heads explained no head")


def _explain_ffn(model, tokenizer) -> None:
    from lm_interp_plugin.explain.ffn import explain_ffn

    expl = explain_ffn(model, tokenizer, k=3, top_n=3, max_words=60, progress=False)
    if len(expl.layers) == 0:
        raise ValueError("explain-ffn explained no layer")


README_START = "<!-- supported-families:start (generated: python tests/sweep_check.py --write) -->"
README_END = "<!-- supported-families:end -->"


def render_families_section(supported: list[str] | tuple[str, ...], total: int, version: str) -> str:
    """README's generated list of fully supported families (between `README_START` and `README_END`), of
    the `total` families transformers `version` registers."""
    names = ", ".join(f"`{f}`" for f in sorted(supported))
    return (
        f"{README_START}\n"
        f"Fully supported (attribution, instruction attention through the per-layer probe equal to eager, "
        f"FFN "
        f"concepts, explain-heads, explain-ffn), measured on tiny random models of each family: "
        f"**{len(supported)} of the {total} decoder-only families** transformers {version} registers: "
        f"{names}.\n"
        f"{README_END}"
    )


def replace_section(readme: str, section: str) -> str:
    """`readme` with its generated families section replaced by `section`."""
    start, end = readme.index(README_START), readme.index(README_END) + len(README_END)
    return readme[:start] + section + readme[end:]


def write_support(results: list[FamilyCheck], package_dir, readme_path) -> list[str]:
    """Write `support.SUPPORTED_FAMILIES` and README's section from a sweep's results."""
    from pathlib import Path

    import transformers

    from lm_interp_plugin.testing.families import decoder_families

    supported = sorted(r.family for r in results if r.fully_supported)
    body = ",\n".join(f'    "{f}"' for f in supported)
    path = Path(package_dir) / "support.py"
    text = path.read_text(encoding="utf-8")
    head = text[: text.index("#: the transformers version the sweep measured")]
    total, version = len(decoder_families()), transformers.__version__
    path.write_text(
        head
        + "#: the transformers version the sweep measured the list on\n"
        + f'MEASURED_TRANSFORMERS = "{version}"\n'
        + "#: how many decoder-only families that version registers (`testing.families.decoder_families`)\n"
        + f"MEASURED_DECODER_FAMILIES = {total}\n\n"
        + f"SUPPORTED_FAMILIES: tuple[str, ...] = (\n{body},\n)\n",
        encoding="utf-8",
    )
    readme = Path(readme_path)
    section = render_families_section(supported, total, version)
    readme.write_text(replace_section(readme.read_text(encoding="utf-8"), section), encoding="utf-8")
    return supported


def main(argv: list[str] | None = None) -> int:
    """``python tests/sweep_check.py [--write] [FAMILY...]``: run the sweep, print one line per
    family; with ``--write`` regenerate `support.py` and README's list (run from the repository root)."""
    import argparse
    from pathlib import Path

    from lm_interp_plugin.testing.families import decoder_families
    from lm_interp_plugin.testing.tiny import sample_corpus, train_tokenizer

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("families", nargs="*")
    args = parser.parse_args(argv)
    tokenizer = train_tokenizer(sample_corpus(), vocab_size=300)
    results = []
    for family in args.families or decoder_families():
        result = check_family(family, tokenizer)
        results.append(result)
        status = "full" if result.fully_supported else "partial"
        detail = result.crashed or "; ".join(f"{k}: {v}" for k, v in result.left_out.items())
        print(f"{status:8} {family:28} {detail[:200]}", flush=True)
    print(f"{sum(r.fully_supported for r in results)} of {len(results)} fully supported")
    if args.write:
        root = Path(__file__).resolve().parents[1]
        write_support(results, root / "lm_interp_plugin", root / "README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
