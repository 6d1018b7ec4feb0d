"""`lm-interp parts`: the rendered prompts of a task with their parts, to check a segmentation before a run.

Why: the instruction metrics are only as right as the tokens labelled ``instruction``; a user should see, for
any task and setting (few-shot, chat template, system instruction), what lm-interp will call instruction,
content, field label, demonstration, ... before spending hours of GPU time. The prompts are built by lm-eval
exactly as ``lm-interp run`` builds them and segmented by the same `InterpTask.segment`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..spans import PART_PRIORITY, Span

logger = logging.getLogger(__name__)

#: lm-eval's default few-shot seed (``--fewshot_seed``), so the demonstrations are the ones a run shows.
FEWSHOT_SEED = 1234
#: A generic ChatML template, used for ``--apply_chat_template`` when no tokenizer is given.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: ANSI styles per part (the legend of the coloured view).
STYLES = {
    "instruction": "1;31",
    "content": "32",
    "choices": "36",
    "label": "34",
    "cue": "35",
    "fewshot": "90",
    "chat": "2;33",
}


NO_INSTRUCTION_NOTE = "NO INSTRUCTION (its instruction metrics will be left out)"


@dataclass
class PromptParts:
    """One rendered prompt and its parts (character spans of ``prompt``)."""

    task: str
    doc_id: int
    prompt: str
    spans: dict[str, list[Span]]
    context_index: int = 0  # multiple-input tasks (Winogrande) build one context per option
    error: str | None = None  # the segmentation error, when the prompt could not be segmented
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def instruction_found(self) -> bool:
        return bool(self.spans.get("instruction"))

    def pieces(self) -> list[tuple[str | None, str]]:
        """The prompt cut into consecutive (part, text) pieces; part None for text in no part."""
        order = {p: i for i, p in enumerate(PART_PRIORITY)}
        owner: list[str | None] = [None] * len(self.prompt)
        for part, spans in sorted(self.spans.items(), key=lambda kv: -order.get(kv[0], len(order))):
            for s, e in spans:  # higher-priority parts are painted last
                owner[s:e] = [part] * (e - s)
        out: list[tuple[str | None, str]] = []
        for ch, part in zip(self.prompt, owner):
            if out and out[-1][0] == part:
                out[-1] = (part, out[-1][1] + ch)
            else:
                out.append((part, ch))
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["spans"] = {k: [list(s) for s in v] for k, v in self.spans.items()}
        out["instruction_found"] = self.instruction_found
        out["pieces"] = [{"part": p, "text": t} for p, t in self.pieces()]
        return out


def chat_renderer(tokenizer: str | None = None) -> Callable[..., str]:
    """The ``chat_template`` callable lm-eval expects: the tokenizer's own template (a folder, hub id or
    ``.gguf`` file), or generic ChatML."""
    if tokenizer:
        from transformers import AutoTokenizer

        from ..explain.loading import model_source

        source, gguf = model_source(tokenizer)  # a .gguf file carries its tokenizer and chat template
        tok = AutoTokenizer.from_pretrained(source, **gguf)

        def render(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
            return tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )

        return render
    import jinja2

    template = jinja2.Environment().from_string(CHATML)

    def render_chatml(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt)

    return render_chatml


def load_interp_tasks(name: str, include_path: Sequence[str] | None = None) -> list[Any]:
    """The task(s) `name` names, as `InterpTask`s: an interp_ task as shipped or in `include_path`, or any
    stock task wrapped as its interp_ variant. A group gives its leaf tasks."""
    from lm_eval.tasks import TaskManager

    from .tasks import InterpTask, tasks_dir
    from .variants import InterpVariant, variant_name

    paths = [str(tasks_dir()), *(include_path or [])]
    manager = TaskManager(include_path=paths, include_defaults=False)  # fast: no index of 14k stock names
    if name not in manager.all_tasks and name not in manager.all_groups:
        manager = TaskManager(include_path=paths)
    leaves: list[Any] = list(manager.load([name])["tasks"].values())  # a group's leaf tasks, flat
    out = []
    for task in leaves:
        if isinstance(task, InterpTask):
            out.append(task)
        else:
            base = task.config.task
            config = {"task": variant_name(base), "metadata": {"interp": {"base": base}}}
            out.append(InterpVariant(config=config))
    return out


def render_parts(
    task_name: str,
    num_fewshot: int | None = None,
    apply_chat_template: bool = False,
    system_instruction: str | None = None,
    limit: int = 3,
    include_path: Sequence[str] | None = None,
    tokenizer: str | None = None,
    fewshot_as_multiturn: bool = False,
) -> list[PromptParts]:
    """The first `limit` prompts of each task `task_name` names, built by lm-eval and segmented."""
    from .segment import SegmentationError

    chat = chat_renderer(tokenizer) if apply_chat_template else None
    out: list[PromptParts] = []
    for task in load_interp_tasks(task_name, include_path):
        if num_fewshot is not None:
            task.set_config("num_fewshot", num_fewshot)
        task.set_fewshot_seed(FEWSHOT_SEED)
        shots = task.config.num_fewshot or 0
        settings = {
            "num_fewshot": shots,
            "apply_chat_template": apply_chat_template,
            "system_instruction": system_instruction,
        }
        for doc_id, doc in task.doc_iterator(limit=limit):
            contexts = task.fewshot_context(
                doc,
                num_fewshot=shots,
                system_instruction=system_instruction,
                apply_chat_template=apply_chat_template,
                fewshot_as_multiturn=fewshot_as_multiturn,
                chat_template=chat,
                gen_prefix=task.doc_to_prefix(doc),
            )
            for i, context in enumerate(contexts if isinstance(contexts, list) else [contexts]):
                try:
                    spans, error = task.segment(doc, context), None
                except (SegmentationError, ValueError) as err:
                    spans, error = {}, str(err)
                out.append(PromptParts(task.config.task, int(doc_id), context, spans, i, error, settings))
    return out


def format_ansi(prompts: Sequence[PromptParts], color: bool = True) -> str:
    """The prompts with each part coloured (ANSI), or, without colour, wrapped as ``[part|text]``."""
    legend = "  ".join(f"\x1b[{STYLES[p]}m{p}\x1b[0m" if color else p for p in STYLES)
    lines = [f"parts: {legend}  (uncoloured: template text in no part)"]
    for p in prompts:
        setting = (
            f"{p.settings.get('num_fewshot', 0)}-shot"
            + (", chat template" if p.settings.get("apply_chat_template") else "")
            + (", system instruction" if p.settings.get("system_instruction") else "")
        )
        extra = f", context {p.context_index}" if p.context_index else ""
        found = "instruction found" if p.instruction_found else NO_INSTRUCTION_NOTE
        lines.append(f"\n=== {p.task} doc {p.doc_id}{extra} ({setting}): {found}")
        if p.error:
            lines.append(f"segmentation failed: {p.error}")
        text = []
        for part, piece in p.pieces():
            if part is None:
                text.append(piece)
            elif color:
                text.append(f"\x1b[{STYLES.get(part, '0')}m{piece}\x1b[0m")
            else:
                text.append(f"[{part}|{piece}]")
        lines.append("".join(text))
    return "\n".join(lines)
