"""Explain one answer of a model: which prompt tokens did it rest on? (the Python API, no lm-eval)

    python examples/attribute_one_prompt.py [--out DIR]

Loads the tiny instruction-tuned model shipped with lm-interp (any Hugging Face causal LM works the same
way), lets it answer one prompt, attributes the answer to the prompt tokens with `lm_interp_plugin.attribute`
(gradient x input, the paper's raw matrix), prints a text heatmap of the importance density per prompt token
and writes the quantised matrix as a PNG heatmap (DIR/heatmap.png). `attribute` labels the tokens of the
`instruction=` text "instruction" and every other prompt token "template".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt
from transformers import AutoModelForCausalLM, AutoTokenizer

from lm_interp_plugin import attribute, importance_density, quantise
from lm_interp_plugin.demo.build import greedy_answer, shipped_pair
from lm_interp_plugin.report.tokens import display_token  # "Ġcat" -> " cat"

INSTRUCTION = "Reverse the order of the words."  # one of the phrasings the tuned model learned
TEXT = "cat river gold"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("example_out"), help="where heatmap.png goes")
    args = parser.parse_args(argv)

    path = shipped_pair().tuned_path  # or your own model: a local folder or a hub id
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompt = f"{INSTRUCTION}\n\nInput: {TEXT}\n\nOutput:"
    answer = greedy_answer(model, tokenizer, INSTRUCTION, TEXT)  # the model's own answer is what we explain

    result = attribute(model, tokenizer, prompt, " " + answer, instruction=INSTRUCTION)
    S = quantise(result.raw)  # prompt tokens x answer tokens, integer levels 0..10
    density = importance_density(S, b=7, p=4)  # per prompt token, the paper's thresholded density, 0..1

    print(f"prompt: {prompt!r}\nanswer: {answer!r}")
    print(f"instruction_importance = {result.metrics['instruction_importance']:.3f}")
    tokens = [display_token(t) for t in result.prompt_tokens]
    for token, part, value in zip(tokens, result.token_parts, density):
        print(f"  {token!r:>14} {part:<12} {value:4.2f} {'#' * round(20 * value)}")

    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4 + 0.5 * S.shape[1], 1 + 0.3 * S.shape[0]))
    image = ax.imshow(S, cmap="viridis", vmin=0, vmax=10, aspect="auto")
    ax.set_yticks(range(S.shape[0]), [f"{t!r} ({p})" for t, p in zip(tokens, result.token_parts)])
    ax.set_xticks(range(S.shape[1]), [repr(display_token(t)) for t in result.target_tokens])
    ax.set_xlabel("answer token")
    ax.set_title(f"instruction_importance {result.metrics['instruction_importance']:.3f}", fontsize=10)
    fig.colorbar(image, ax=ax, label="quantised importance (0-10)")
    fig.tight_layout()
    png = args.out / "heatmap.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"wrote {png}")
    return {"answer": answer, "density": density, "metrics": result.metrics, "png": png}


if __name__ == "__main__":
    main()
