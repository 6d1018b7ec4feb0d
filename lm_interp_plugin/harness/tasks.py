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

import json
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
_AGGREGATIONS = {"mean": mean}


class FewshotLeakError(ValueError):
    """A task would show the model demonstrations that may contain the evaluated item and its answer."""


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


class TaskDataError(ValueError):
    """A task's local data file cannot be evaluated as it stands (encoding, JSON, fields, choices)."""


def check_local_data(config: Mapping[str, Any]) -> dict[str, Path]:
    """The local data files of a task config (``metadata.interp.data_files``), checked line by line.

    Why: lm-eval reads them only after the model has loaded, and its errors name no file ("string index
    out of range" for an empty answer choice, "'instruction' is undefined" for a missing field, a decoding
    error for invalid UTF-8); `lm-interp run` calls this before lm-eval starts, and `InterpTask` again when
    it loads the data.

    Returns:
        split -> the file's path (relative names resolved against the shipped task folder).

    Raises:
        FileNotFoundError: a file is missing.
        TaskDataError: a file is not UTF-8 or not JSON lines, a line lacks a declared field, or a multiple
            choice line has an empty choice; the message names the file, the line and the fix.
    """
    task = config.get("task", "?")
    interp = (config.get("metadata") or {}).get("interp") or {}
    fields = [*(interp.get("instruction_fields") or []), *(interp.get("content_fields") or [])]
    choices = config.get("doc_to_choice")
    choice_field = (
        choices
        if config.get("output_type") == "multiple_choice" and isinstance(choices, str) and "{" not in choices
        else None
    )
    resolved: dict[str, Path] = {}
    for split, name in (interp.get("data_files") or {}).items():
        path = Path(name)
        if not path.is_absolute():
            path = tasks_dir() / path
        if not path.is_file():
            raise FileNotFoundError(
                f"task {task}: data file {path} not found; reinstall lm-interp "
                "(pip install -e .) or fix metadata.interp.data_files in the task YAML"
            )
        _check_rows(task, path, fields, choice_field)
        resolved[split] = path
    return resolved


def _check_rows(task: str, path: Path, fields: list[str], choice_field: str | None) -> None:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise TaskDataError(
            f"task {task}: data file {path} is not valid UTF-8 (line {line}, byte {err.start}: "
            f"{data[err.start : err.start + 4]!r}); save it as UTF-8"
        ) from err
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise TaskDataError(
                f"task {task}: {path}:{lineno} is not a JSON object ({err.msg}); one JSON object per line"
            ) from err
        if not isinstance(row, dict):
            raise TaskDataError(
                f"task {task}: {path}:{lineno} is not a JSON object; one JSON object per line"
            )
        missing = [f for f in fields if f not in row]
        if missing:
            raise TaskDataError(
                f"task {task}: {path}:{lineno} has no field {missing[0]!r} (declared in "
                "metadata.interp of the task YAML); add it to every line or fix the YAML"
            )
        options = row.get(choice_field) if choice_field else None
        if isinstance(options, list):
            empty = [i for i, c in enumerate(options) if not isinstance(c, str) or not c.strip()]
            if empty:
                raise TaskDataError(
                    f"task {task}: {path}:{lineno}: choice {empty[0]} of {choice_field!r} is empty "
                    f"({options[empty[0]]!r}); an empty answer cannot be scored, give it text"
                )


class _InterpMetrics(dict):
    """Aggregation table that aggregates every interpretation metric as the metric table says.

    lm-eval aggregates each metric over the samples that report it, so the instruction metrics, absent for a
    prompt without an instruction, are means over the prompts that have one; ``instruction_found`` says how
    many those are, and a task where none has one is named in a warning instead of a table of zeros. A name
    the table does not know (a signal that registered no metric) is averaged with a warning: a `KeyError`
    inside lm-eval's aggregation would lose the whole run.
    """

    def __init__(self, stock: Mapping[str, Any], task_name: str, seen: set[str] | None = None) -> None:
        super().__init__(stock)
        self.task_name = task_name
        self.seen = seen if seen is not None else set()

    def __missing__(self, key: str):
        self.seen.add(key)
        if key == INSTRUCTION_FOUND:
            return self._found_share
        spec = names.metric_spec(key)
        if spec is None:
            logger.warning(
                "task %s: metric %r is in no table (lm-eval's or lm-interp's metric_names.METRICS); "
                "averaging it",
                self.task_name,
                key,
            )
            return mean
        return _AGGREGATIONS[spec.aggregation]

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
        try:
            super().__init__(config=config, **kwargs)
        except IndexError as err:  # lm-eval's check of the first document reads choice[0] of each choice
            raise TaskDataError(
                f"task {config.get('task', '?')}: lm-eval's check of the task's first document failed "
                f"({err}); an empty answer choice does this (lm-eval reads its first character): give every "
                "choice text"
            ) from err
        self._skipped = 0
        self._first_skip = ""
        self._system_instruction: str | None = None
        self._warned_fewshot = False
        self._template_text: tuple[str, ...] = ()  # text the chat template injects by itself (`chat`)

    def fewshot_context(self, doc: dict, num_fewshot: int, *args: Any, **kwargs: Any):
        """lm-eval's context, remembering the ``--system_instruction`` it was built with: without a chat
        template nothing else separates it from the first few-shot example (see `segment_prompt`).

        Raises:
            FewshotLeakError: the demonstrations would be drawn from the evaluated split without lm-eval
                leaving the evaluated document out (see `check_demonstrations`).
        """
        self.check_demonstrations(num_fewshot)
        self._system_instruction = kwargs.get("system_instruction", args[0] if args else None)
        apply = kwargs.get("apply_chat_template", args[1] if len(args) > 1 else False)
        template = kwargs.get("chat_template", args[3] if len(args) > 3 else None)
        self._template_text = ()
        if apply and template is not None:  # one small render of the template per prompt
            from .segment import template_text

            self._template_text = template_text(template)
        return super().fewshot_context(doc, num_fewshot, *args, **kwargs)

    def fewshot_source(self) -> tuple[str | None, bool]:
        """The split lm-eval draws demonstrations from (None: a fixed list in ``fewshot_config.samples``),
        and whether it leaves the evaluated document out of them.

        lm-eval leaves the evaluated document out only when ``fewshot_split`` names the test split; without
        a ``fewshot_split`` it falls back to the training, validation, then test split, and from the
        evaluated split (a task that evaluates its validation split, a local copy without a training
        split) it may draw the evaluated item itself, with its answer, as a demonstration.
        """
        cfg = getattr(self, "fewshot_cfg", None)
        declared = getattr(cfg, "split", None) or self.config.fewshot_split
        if declared is not None:
            return declared, declared == self.config.test_split
        fixed = self.config.fewshot_config
        samples = getattr(cfg, "samples", None)
        if samples is None and isinstance(fixed, Mapping):
            samples = fixed.get("samples")
        if samples is not None:
            return None, False
        if self.has_training_docs():
            return self.config.training_split, False
        if self.has_validation_docs():
            return self.config.validation_split, False
        return self.config.test_split, False

    def check_demonstrations(self, num_fewshot: int | None) -> None:
        """Refuse demonstrations that may contain the evaluated item; warn (once) when they come from the
        evaluated split with the item itself left out."""
        if not num_fewshot or num_fewshot <= 0:
            return
        split, drops_itself = self.fewshot_source()
        evaluated = self.config.test_split if self.has_test_docs() else self.config.validation_split
        if split is None or split != evaluated:
            return
        if not drops_itself:
            raise FewshotLeakError(
                f"task {self.config.task}: --num_fewshot {num_fewshot} would draw the demonstrations from "
                f"the split it evaluates ({split!r}, with no fewshot_split of other items), so a prompt can "
                "contain its own item with its answer. Give the task a "
                "fewshot_split of other items (the shipped interp_ tasks have one), or run with "
                "--num_fewshot 0"
            )
        if not self._warned_fewshot:
            self._warned_fewshot = True
            logger.warning(
                "task %s: the demonstrations of --num_fewshot come from the evaluated split %r (lm-eval "
                "leaves each prompt's own document out, but the other evaluated items serve as "
                "demonstrations); a fewshot_split of other items keeps them apart",
                self.config.task,
                split,
            )

    # ------------------------------------------------------------------ data
    def download(self, dataset_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not self.interp_config.get("data_files"):
            return super().download(dataset_kwargs, **kwargs)
        import datasets

        config = {
            "task": self.config.task,
            "output_type": self.config.output_type,
            "doc_to_choice": self.config.doc_to_choice,
            "metadata": {"interp": self.interp_config},
        }
        resolved = check_local_data(config)
        self.dataset = datasets.load_dataset("json", data_files={k: str(v) for k, v in resolved.items()})

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
        from .segment import demonstration_spans

        demos = demonstration_spans(self, doc, context, self._system_instruction)
        if demos:  # the demonstrations of --num_fewshot, which would otherwise be template text
            spans["fewshot"] = demos
        if located:  # chat-template markup, and a system prompt the template injected itself
            from .segment import prompt_frame

            start, end = min(s for s, _ in located), max(e for _, e in located)
            instruction = spans.get("instruction", [])
            frame = prompt_frame(
                self, doc, context, start, end, self._system_instruction, self._template_text, instruction
            )
            if frame.chat:
                spans["chat"] = frame.chat
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
        return _InterpMetrics(super().aggregation(), self.config.task, self._interp_names)

    def higher_is_better(self) -> dict:
        """lm-eval's up/down column: the stock metrics' directions plus those the metric table gives for the
        interpretation metrics this task aggregated (none for a metric without a better direction)."""
        out = dict(super().higher_is_better())
        for name in sorted(self._interp_names):
            spec = names.metric_spec(name)
            if name not in out and spec is not None and spec.higher_is_better is not None:
                out[name] = spec.higher_is_better
        return out

    @property
    def _interp_names(self) -> set[str]:
        if not hasattr(self, "_seen_interp_names"):
            self._seen_interp_names: set[str] = set()
        return self._seen_interp_names
