"""`InterpTask`: a stock lm-eval task plus the interpretation metrics of `interp-hf` in every sample.

A task YAML opts in with ``class: !function interp_task.InterpTask`` (the shim beside the YAMLs) and says in
``metadata.interp`` which parts of its prompt are the instruction:

```yaml
metadata:
  interp:
    instruction_fields: [instruction]   # doc fields whose text is the instruction
    content_fields: [input]             # optional: doc fields that are the example's content
    data_files: {test: interp_instruct.jsonl}   # optional: local JSONL, relative to the tasks folder
```

It marks each request with its prompt parts (character spans of the final context string) and its role
(`gold`, `choice`, `generated`), so the model knows what to interpret; after lm-eval's filters it re-attaches
the model's interpretation output to the filtered responses (filters such as `regex` return plain strings),
and its `process_results` adds the interpretation scalars next to the stock metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm_eval.api.metrics import mean
from lm_eval.api.task import ConfigurableTask

from .. import metric_names as names
from ..records import Role
from ..spans import InstructionNotFoundError, locate_fields

logger = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).resolve().parents[2] / "tasks"
INSTRUCTION_FOUND = names.INSTRUCTION_FOUND


@dataclass
class RequestTag:
    """What `InterpTask` tells `interp-hf` about one lm-eval ``Instance``, and what interp-hf answers.

    One typed attribute (``Instance.interp_tag``, see `tag_of`) instead of loose ``interp_*`` attributes.

    Attributes:
        role: which continuation this request scores (``gold``, ``choice``, ``generated``).
        spans: the prompt parts as character spans of the final context; None when the task declared none.
        skip: why the request is not interpreted (the reason ends up in the sample), or None.
        output: interp-hf's scalars for the request, set once it has been interpreted (or skipped).
    """

    role: Role | None = None
    spans: dict[str, list[tuple[int, int]]] | None = None
    skip: str | None = None
    output: dict[str, Any] | None = None


TAG_ATTRIBUTE = "interp_tag"


def tag_of(inst: Any) -> RequestTag:
    """The request's tag, created empty on first use (requests of non-interp tasks have none)."""
    tag = getattr(inst, TAG_ATTRIBUTE, None)
    if tag is None:
        tag = RequestTag()
        setattr(inst, TAG_ATTRIBUTE, tag)
    return tag


NO_INSTRUCTION = (
    "no instruction in this task's prompts: instruction_importance, instruction_attention and the ablation "
    "drops are left out (not 0); to measure instruction reliance here, give one with --system_instruction "
    "or a task description, or check the parts with `lm-interp parts TASK`"
)


def tasks_dir() -> Path:
    """The folder of the shipped interp_* task YAMLs and data (works for editable and regular installs)."""
    try:
        from importlib.resources import files

        path = Path(str(files("lm_interp_plugin.tasks")))
        if path.is_dir():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return TASKS_DIR


class _InterpMetrics(dict):
    """Aggregation table that averages any interpretation metric it was not told about.

    lm-eval aggregates each metric over the samples that report it, so the instruction metrics, absent for a
    prompt without an instruction, are means over the prompts that have one; ``instruction_found`` says how
    many those are, and a task where none has one is named in a warning instead of a table of zeros.
    """

    def __init__(self, stock: Mapping[str, Any], task_name: str) -> None:
        super().__init__(stock)
        self.task_name = task_name

    def __missing__(self, key: str):
        if key == INSTRUCTION_FOUND:
            return self._found_share
        if names.is_interp_metric(key):
            return mean
        raise KeyError(key)

    def _found_share(self, items: list[float]) -> float:
        share = mean(items)
        if items and share == 0:
            logger.warning("task %s: %s", self.task_name, NO_INSTRUCTION)
        elif items and share < 1:
            logger.warning(
                "task %s: %d of %d samples have no instruction; the instruction metrics average the other %d",
                self.task_name,
                round(len(items) * (1 - share)),
                len(items),
                round(len(items) * share),
            )
        return share


def attach(value: Any, interp: dict[str, Any], role: str | None) -> Any:
    """Return `value` carrying the interpretation output as ``.interp`` (and ``.interp_role``)."""
    cls = _CARRIERS.get(type(value))
    if cls is None:
        for base, carrier in _CARRIERS.items():
            if isinstance(value, base):
                cls = carrier
                break
    if cls is None:
        logger.debug("cannot attach interpretation to a response of type %s", type(value).__name__)
        return value
    carried = cls(value)
    carried.interp, carried.interp_role = interp, role
    return carried


def _carrier(base: type) -> type:
    def __reduce__(self):  # picklable for lm-eval's gathers across ranks: drops the extras
        return (base, (base(self),))

    return type(f"Interp{base.__name__.title()}", (base,), {"__reduce__": __reduce__})


_CARRIERS: dict[type, type] = {t: _carrier(t) for t in (tuple, str, list, float)}


class InterpTask(ConfigurableTask):
    """A `ConfigurableTask` whose samples carry `interp-hf`'s interpretation scalars."""

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        config = dict(config or {})
        config.pop("class", None)  # lm-eval passes it through; TaskConfig rejects it
        metadata = config.get("metadata") or {}
        self.interp_config: dict[str, Any] = dict(metadata.get("interp") or {})
        super().__init__(config=config, **kwargs)
        self._skipped = 0
        self._first_skip = ""
        self._system_instruction: str | None = None
        self._template_text: tuple[str, ...] = ()  # text the chat template injects by itself (`chat`)

    def fewshot_context(self, doc: dict, num_fewshot: int, *args: Any, **kwargs: Any):
        """lm-eval's context, remembering the ``--system_instruction`` it was built with: without a chat
        template nothing else separates it from the first few-shot example (see `segment_prompt`)."""
        self._system_instruction = kwargs.get("system_instruction", args[0] if args else None)
        apply = kwargs.get("apply_chat_template", args[1] if len(args) > 1 else False)
        template = kwargs.get("chat_template", args[3] if len(args) > 3 else None)
        self._template_text = ()
        if apply and template is not None:  # one small render of the template per prompt
            from .segment import template_text

            self._template_text = template_text(template)
        return super().fewshot_context(doc, num_fewshot, *args, **kwargs)

    # ------------------------------------------------------------------ data
    def download(self, dataset_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        data_files = self.interp_config.get("data_files")
        if not data_files:
            return super().download(dataset_kwargs, **kwargs)
        import datasets

        resolved = {}
        for split, name in data_files.items():
            path = Path(name)
            if not path.is_absolute():
                path = tasks_dir() / path
            if not path.is_file():
                raise FileNotFoundError(
                    f"task {self.config.task}: data file {path} not found; reinstall lm-interp "
                    "(pip install -e .) or fix metadata.interp.data_files in the task YAML"
                )
            resolved[split] = str(path)
        self.dataset = datasets.load_dataset("json", data_files=resolved)

    # ------------------------------------------------------------------ requests
    def segment(self, doc: dict, context: str) -> dict[str, list[tuple[int, int]]]:
        """Character spans of the prompt parts in `context`, from the fields named in metadata.interp.

        Without ``instruction_fields`` (or with ``auto: true``) the parts come from the task's own template
        (`lm_interp_plugin.harness.segment`), so any stock task works.
        """
        if self.interp_config.get("auto") or not self.interp_config.get("instruction_fields"):
            return self._auto_segment(doc, context)
        fields: dict[str, list[str]] = {}
        for part in ("instruction", "content"):
            for field_name in self.interp_config.get(f"{part}_fields", []) or []:
                value = doc.get(field_name)
                values = value if isinstance(value, list) else [value]
                fields.setdefault(part, []).extend(str(v) for v in values if v)
        where = f"task {self.config.task!r}, doc {self._doc_label(doc)}"
        spans = locate_fields(context, fields, where=where)
        located = [span for part in spans.values() for span in part]
        system = (self._system_instruction or "").strip()
        if system and (at := context.find(system)) >= 0:  # a system prompt is an instruction too
            spans.setdefault("instruction", []).insert(0, (at, at + len(system)))
        if located:  # chat-template markup, and a system prompt the template injected itself
            from .segment import chat_spans

            start, end = min(s for s, _ in located), max(e for _, e in located)
            chat = chat_spans(context, start, end, self._template_text)
            if chat:
                spans["chat"] = chat
        return spans

    def _auto_segment(self, doc: dict, context: str) -> dict[str, list[tuple[int, int]]]:
        from .segment import SegmentationError, segment_prompt

        try:
            return segment_prompt(
                self,
                doc,
                context,
                parts=self.interp_config.get("parts"),
                system_instruction=self._system_instruction,
                template=self._template_text,
            )
        except SegmentationError as err:
            raise InstructionNotFoundError(f"{err} (doc {self._doc_label(doc)})") from err

    def _doc_label(self, doc: dict) -> str:
        for key in ("id", "idx", "doc_id"):
            if key in doc:
                return f"{key}={doc[key]!r}"
        return "(no id field)"

    def _gold_index(self, doc: dict) -> int | None:
        gold = self.doc_to_text(doc) if self.multiple_input else self.doc_to_target(doc)
        if isinstance(gold, list):
            gold = gold[0] if gold else None
        if isinstance(gold, str):
            choices = self.doc_to_choice(doc)
            gold = choices.index(gold) if gold in choices else None
        return gold if isinstance(gold, int) else None

    def construct_requests(self, doc: dict, ctx: Any, **kwargs: Any):
        requests = super().construct_requests(doc, ctx, **kwargs)
        batch = requests if isinstance(requests, list) else [requests]
        gold = self._gold_index(doc) if self.OUTPUT_TYPE == "multiple_choice" else None
        n_choices = len(self.doc_to_choice(doc)) if self.OUTPUT_TYPE == "multiple_choice" else 0
        for inst in batch:
            context = inst.arguments[0]
            tag = tag_of(inst)
            if self.OUTPUT_TYPE == "multiple_choice":
                if (
                    inst.idx >= n_choices and not self.multiple_input
                ):  # acc_mutual_info's unconditional requests
                    tag.skip = "unconditional request (acc_mutual_info)"
                    continue
                tag.role = "gold" if inst.idx == gold else "choice"
            elif self.OUTPUT_TYPE == "generate_until":
                tag.role = "generated"
            else:
                tag.role = "gold"
            try:
                tag.spans = self.segment(doc, context)
            except InstructionNotFoundError as err:
                if self.interp_config.get("strict", False):
                    raise
                self._skipped += 1
                self._first_skip = self._first_skip or str(err)
                tag.skip = str(err)
        return requests

    # ------------------------------------------------------------------ results
    def apply_filters(self):
        out = super().apply_filters()
        for inst in self._instances:
            tag = tag_of(inst)
            if tag.output is None:
                continue
            for key, value in list(inst.filtered_resps.items()):
                inst.filtered_resps[key] = attach(value, tag.output, tag.role)
        if self._skipped:
            logger.warning(
                "task %s: %d of %d requests skipped by the interpretation (prompt parts not found; samples "
                "carry %s=0); the first: %s",
                self.config.task,
                self._skipped,
                len(self._instances),
                INSTRUCTION_FOUND,
                self._first_skip,
            )
        return out

    def process_results(self, doc: dict, results: list) -> dict:
        out = super().process_results(doc, results)
        carried = [r for r in results if hasattr(r, "interp")]
        if not carried:
            return out
        chosen = next((r for r in carried if r.interp_role == "gold"), None) or carried[0]
        interp = chosen.interp
        if "skipped" in interp:
            out[INSTRUCTION_FOUND] = 0.0
            return out
        out[INSTRUCTION_FOUND] = float(interp.get(INSTRUCTION_FOUND, names.INSTRUCTION_IMPORTANCE in interp))
        out.update({k: v for k, v in interp.items() if isinstance(v, (int, float))})
        return out

    def aggregation(self) -> dict:
        return _InterpMetrics(super().aggregation(), self.config.task)
