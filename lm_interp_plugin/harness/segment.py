"""Automatic prompt segmentation for any lm-eval task, from the task's own config (no per-task code).

Why: the interpretation metrics need to know which prompt characters are instruction, content, choices, ...;
hand-written spans per benchmark do not scale. Instead the task's ``doc_to_text`` is rendered on a copy of the
doc whose every string (and every list element) is replaced by a unique marker. What is left between markers
is the template's own text. The real rendering is then matched against that skeleton and located (last
occurrence) in the final context, which may also hold the description, a system instruction, few-shot
demonstrations and chat-template markup.

Parts (names from `spans.PART_PRIORITY`):

- ``content``: text that comes from a doc field (question, passage).
- ``choices``: a list element shown in the prompt (MMLU's options) and its option label ("\\nA. ").
- ``instruction``: template text before or between doc fields, the task ``description`` and any system
  instruction (text before the few-shot examples).
- ``cue``: template text after the last doc field (e.g. "\\nAnswer:"), and a ``gen_prefix`` after the prompt.
- ``fewshot``: the demonstrations, from the first example up to the evaluated example.
- ``chat``: chat-template markup (``<|im_start|>user``, ``[INST]``, ``<s>`` ...) outside the evaluated
example.

A task overrides parts with ``metadata.interp.parts``: ``{doc_field: part}`` for doc fields (top-level key),
plus the keys ``template`` (template text other than the cue) and ``cue``; e.g. IFEval's ``{prompt:
instruction}``. When ``doc_to_text`` cannot be rendered on markers (callables such as Winogrande's, which
return an index), the doc's strings are searched in the context instead (longest found prefix, at least 12
characters).

Variants: `stock_task_config(name)` loads an installed task's config (YAML found by a fast text scan of the
stock task folder) and `variant_config` turns a short YAML ``{task: interp_x, metadata: {interp: {base: x}}}``
into the stock config plus the interpretation; `write_variant(name, out_dir)` writes such a YAML for any task.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..spans import Span, trim_span
from .sentences import is_instruction, is_label, merge_pieces, sentences, split_request

logger = logging.getLogger(__name__)

PARTS = ("instruction", "content", "choices", "fewshot", "chat", "label", "cue")
#: Override value for a doc field that mixes a request with its material (IFEval's ``prompt``): split by the
#: sentence rule of `harness.sentences` into ``instruction`` and ``content``.
MIXED = "mixed"
_TEXT, _CUE = "_template_text", "_template_cue"  # provisional parts of template text, see `_read_template`
_MARK = "\x00{}\x00"
_MARK_RE = re.compile("\x00(\\d+)\x00")
_OPTION_LABEL = re.compile(r"^\s*[\(\[]?[A-Za-z0-9]{1,2}[\.\):\]]\s*$")
#: Chat markup: special-token-like tags, an optional role name, and the newlines after them.
CHAT_MARKUP = re.compile(
    r"(?:<\|[^|<>\n]{1,40}\|>|\[/?INST\]|<</?SYS>>|</?[A-Za-z_][\w\-]{0,30}>)"
    r"(?:[ \t]*(?:system|user|assistant|model)\b)?\n*"
)
_MIN_PREFIX = 12


class SegmentationError(ValueError):
    """A prompt could not be segmented."""


# ----------------------------------------------------------------------------------------------------
# skeleton
def _marker_doc(
    value: Any, fields: list[tuple[str, bool]], root: str | None = None, in_list: bool = False
) -> Any:
    if isinstance(value, str):
        fields.append((root or "", in_list))
        return _MARK.format(len(fields) - 1)
    if isinstance(value, list):
        return [_marker_doc(v, fields, root, True) for v in value]
    if isinstance(value, dict):
        return {k: _marker_doc(v, fields, root if root is not None else k, in_list) for k, v in value.items()}
    return value


def skeleton(task: Any, doc: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """The rendered template as pieces ``("template", text)`` / ``("field:<root key>", "")`` or
    ``("list:<key>", "")``.

    None when ``doc_to_text`` does not render on markers to a string (then the caller falls back to search).
    """
    fields: list[tuple[str, bool]] = []
    marked = {k: _marker_doc(v, fields, k) for k, v in doc.items()}
    try:
        rendered = task.doc_to_text(marked)
    except Exception as err:  # any template/callable may choke on markers; the fallback handles it
        logger.debug("doc_to_text does not render on markers: %s", err)
        return None
    if not isinstance(rendered, str) or not _MARK_RE.search(rendered):
        return None
    pieces: list[tuple[str, str]] = []
    pos = 0
    for m in _MARK_RE.finditer(rendered):
        if m.start() > pos:
            pieces.append(("template", rendered[pos : m.start()]))
        root, in_list = fields[int(m.group(1))]
        pieces.append((("list:" if in_list else "field:") + root, ""))
        pos = m.end()
    if pos < len(rendered):
        pieces.append(("template", rendered[pos:]))
    if "\x00" in "".join(t for k, t in pieces if k == "template"):
        return None  # a marker was cut (e.g. sliced): the template does not treat fields as opaque
    return pieces


def _skeleton_regex(pieces: list[tuple[str, str]], anchored: bool) -> re.Pattern:
    out, last_field = [], False
    for kind, text in pieces:
        if kind == "template":
            out.append(re.escape(text))
            last_field = False
        elif not last_field:
            out.append("(.*?)")
            last_field = True
        else:  # two fields with nothing between them: one group, ambiguous split
            out.append("()")
    body = "".join(out)
    return re.compile(f"^{body}$" if anchored else body, re.DOTALL)


def _piece_parts(pieces: list[tuple[str, str]], overrides: Mapping[str, str]) -> list[str]:
    """Part of each skeleton piece; template text is left as `_TEXT` / `_CUE` for `_read_template`."""
    field_idx = [i for i, (k, _) in enumerate(pieces) if k != "template"]
    last_field = field_idx[-1] if field_idx else -1
    parts = []
    for i, (kind, text) in enumerate(pieces):
        if kind != "template":
            root = kind.split(":", 1)[1]
            parts.append(overrides.get(root) or ("choices" if kind.startswith("list:") else "content"))
        elif i > last_field and field_idx:
            parts.append(overrides.get("cue", _CUE))
        elif (
            i + 1 < len(pieces)
            and pieces[i + 1][0].startswith("list:")
            and _OPTION_LABEL.match(text)
            and "choices" == (overrides.get(pieces[i + 1][0].split(":", 1)[1]) or "choices")
        ):
            parts.append("choices")
        else:
            parts.append(overrides.get("template", _TEXT))
    return parts


def _read_template(context: str, s: int, e: int, cue: bool) -> list[tuple[int, int, str]]:
    """Template text of the example, read as a reader would (`sentences` rule).

    Before the last field: field labels ("Question: ") are ``label``; paragraphs that open with the same
    label as the example's last paragraph are demonstrations written into the template (TruthfulQA's six Q/A
    pairs): ``fewshot``; other prose is a task description: ``instruction``. After the last field: labels and
    punctuation are the answer ``cue``; imperative sentences ("Answer with yes or no.") are ``instruction``.
    """
    out: list[tuple[int, int, str]] = []
    paragraphs = [(m.start(), m.end()) for m in re.finditer(r"(?:(?!\n\n).)+", context[s:e], re.DOTALL)]
    paragraphs = [(s + a, s + b) for a, b in paragraphs]
    demo_label = None
    if not cue and len(paragraphs) > 1:
        first_line = context[paragraphs[-1][0] : paragraphs[-1][1]].strip().split("\n")[0]
        m = re.match(r"([A-Za-z][\w ]{0,20}):", first_line)
        demo_label = m.group(1) + ":" if m else None
    for k, (ps, pe) in enumerate(paragraphs):
        para = context[ps:pe]
        if demo_label and k < len(paragraphs) - 1 and para.strip().startswith(demo_label):
            out.append((*trim_span(context, ps, pe), "fewshot"))
            continue
        for ls, le in _lines(context, ps, pe):
            line = context[ls:le]
            if is_label(line) or not re.search(r"\w", line):
                out.append((ls, le, "cue" if cue else "label"))
            elif cue:
                for a, b in sentences(context, ls, le):
                    part = "instruction" if is_instruction(context[a:b]) else "cue"
                    out.append((a, b, part))
            else:
                for a, b in sentences(context, ls, le):
                    out.append((a, b, "label" if is_label(context[a:b]) else "instruction"))
    merged = merge_pieces(out)
    if len(merged) == 1:  # one part: it keeps the template's own whitespace ("\nAnswer:")
        return [(s, e, merged[0][2])]
    return merged


def _lines(text: str, s: int, e: int) -> list[Span]:
    """Non-blank lines of ``text[s:e]``; a line's trailing spaces stay with it (``"Question: "``)."""
    out = []
    for m in re.finditer(r"[^\n]+", text[s:e]):
        if m.group().strip():
            a = s + m.start()
            while text[a].isspace():
                a += 1
            out.append((a, s + m.end()))
    return out


def _resolve(context: str, spans: dict[str, list[Span]]) -> dict[str, list[Span]]:
    """Turn the provisional parts (`_TEXT`, `_CUE`, `MIXED`) into reader parts."""
    out: dict[str, list[Span]] = {}
    for part, part_spans in spans.items():
        for s, e in part_spans:
            if part == MIXED:
                pieces = split_request(context, s, e)
            elif part in (_TEXT, _CUE):
                pieces = _read_template(context, s, e, cue=part == _CUE)
            else:
                pieces = [(s, e, part)]
            for a, b, p in pieces:
                if b > a:
                    out.setdefault(p, []).append((a, b))
    return out


# ---------------------------------------------------------------------------------------------------- locate
def _final_region(task: Any, doc: Mapping[str, Any], context: str, overrides: Mapping[str, str]):
    """(start, end, spans, pieces) of the evaluated example's rendering in `context`, or None."""
    pieces = skeleton(task, doc)
    try:
        real = task.doc_to_text(doc)
    except Exception:
        real = None
    if pieces is not None and isinstance(real, str) and real:
        match = _skeleton_regex(pieces, anchored=True).match(real)
        start = context.rfind(real)
        if match and start >= 0:
            spans: dict[str, list[Span]] = {}
            parts = _piece_parts(pieces, overrides)
            group, pos = 0, 0
            last_field = False
            for (kind, text), part in zip(pieces, parts):
                if kind == "template":
                    s, e = pos, pos + len(text)
                    last_field = False
                else:
                    if last_field:
                        continue
                    group += 1
                    s, e = match.span(group)
                    last_field = True
                if e > s:
                    spans.setdefault(part, []).append((start + s, start + e))
                pos = e
            return start, start + len(real), _resolve(context, spans), pieces
    region = _search_region(doc, context, overrides)
    return None if region is None else (*region[:2], _resolve(context, region[2]), region[3])


def _leaves(value: Any, root: str):
    if isinstance(value, str):
        yield root, value
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v, root)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v, root)


def _search_region(doc: Mapping[str, Any], context: str, overrides: Mapping[str, str]):
    """Fallback: the last occurrence of each doc string (or its longest prefix >= 12 chars) in `context`."""
    found: list[tuple[int, int, str]] = []
    for key, value in doc.items():
        for root, text in _leaves(value, key):
            text = text.strip()
            if len(text) < 3:
                continue
            span = _rfind_prefix(context, text)
            if span:
                found.append((*span, overrides.get(root, "content")))
    if not found:
        return None
    kept: list[tuple[int, int, str]] = []
    for s, e, part in sorted(
        found, key=lambda f: f[0] - f[1]
    ):  # longest first; a short value inside is dropped
        if all(e <= ks or s >= ke for ks, ke, _ in kept):
            kept.append((s, e, part))
    found = sorted(kept)
    # drop matches from earlier (few-shot) text: keep the contiguous tail region
    tail = [f for f in found if f[0] >= _tail_start(found, context)]
    start = tail[0][0]
    end = max(f[1] for f in tail)
    spans: dict[str, list[Span]] = {}
    pos = start
    for s, e, part in tail:
        if s > pos and context[pos:s].strip():
            spans.setdefault(overrides.get("template", _TEXT), []).append((pos, s))
        spans.setdefault(part, []).append((s, e))
        pos = max(pos, e)
    return start, end, spans, None


def _tail_start(found: list[tuple[int, int, str]], context: str) -> int:
    """Start of the last run of matches not separated by a blank line (the evaluated example)."""
    start = found[-1][0]
    for s, e, _ in reversed(found[:-1]):
        if "\n\n" in context[e:start]:
            break
        start = min(start, s)
    return start


def _rfind_prefix(context: str, text: str) -> Span | None:
    at = context.rfind(text)
    if at >= 0:
        return at, at + len(text)
    lo, hi, best = _MIN_PREFIX, len(text) - 1, None
    while lo <= hi:  # longest prefix that occurs (occurrence is monotone in prefix length)
        mid = (lo + hi) // 2
        at = context.rfind(text[:mid])
        if at >= 0:
            best, lo = (at, at + mid), mid + 1
        else:
            hi = mid - 1
    return best


_TEMPLATE_PROBE = "\x00lm-interp-probe\x00"


def template_text(chat_template: Any) -> tuple[str, ...]:
    """Text a chat template writes by itself before the first user message, other than its markup.

    SmolLM2's template injects a default system prompt ("You are a helpful AI assistant named SmolLM, trained
    by Hugging Face") when it is given none; Llama 3's writes its knowledge-cutoff lines. Found by rendering
    one probe user message: what precedes it, less the markup, is the template's. Such text is the same on
    every prompt and neither the task's nor the user's request, so it is labelled ``chat``; a system message
    the prompt is given (``--system_instruction``, a task description) replaces SmolLM2's default and is
    ``instruction``.
    """
    if chat_template is None:
        return ()
    try:
        rendered = chat_template([{"role": "user", "content": _TEMPLATE_PROBE}])
    except Exception as err:  # a template that refuses a lone user turn: no injected text is known
        logger.debug("chat template probe failed (%s): no template-injected text", err)
        return ()
    head = rendered.split(_TEMPLATE_PROBE, 1)[0] if _TEMPLATE_PROBE in rendered else ""
    return tuple(piece.strip() for piece in CHAT_MARKUP.split(head) if piece.strip())


def chat_spans(context: str, start: int, end: int, injected: tuple[str, ...] = ()) -> list[Span]:
    """Chat-template text outside the evaluated example ``[start, end)``: its markup, and the text the
    template injected by itself (`template_text`) where it appears before the example."""
    prefix = context[:start]
    out = [m.span() for m in CHAT_MARKUP.finditer(prefix) if m.end() > m.start()]
    out += [
        (end + m.start(), end + m.end()) for m in CHAT_MARKUP.finditer(context[end:]) if m.end() > m.start()
    ]
    for text in injected:
        at = prefix.find(text)
        if at >= 0:
            out.append((at, at + len(text)))
    return sorted(out)


def _subtract(spans: list[Span], holes: list[Span]) -> list[Span]:
    out = []
    for s, e in spans:
        cur = s
        for hs, he in sorted(holes):
            if he <= cur or hs >= e:
                continue
            if hs > cur:
                out.append((cur, hs))
            cur = max(cur, he)
        if cur < e:
            out.append((cur, e))
    return [(s, e) for s, e in out if e > s]


def _description(task: Any, doc: Mapping[str, Any]) -> str:
    desc = getattr(task.config, "description", None) or ""
    if not desc:
        return ""
    try:
        return str(task.resolve_field(doc, desc) or "")
    except Exception:
        return desc


def segment_prompt(
    task: Any,
    doc: Mapping[str, Any],
    context: str,
    parts: Mapping[str, str] | None = None,
    system_instruction: str | None = None,
    template: tuple[str, ...] = (),
) -> dict[str, list[Span]]:
    """Character spans of the parts of `context` (the final prompt lm-eval built for `doc`).

    Args:
        task: the lm-eval `ConfigurableTask` that built the prompt (its doc_to_text, description,
            num_fewshot, fewshot_delimiter).
        doc: the evaluated doc (after process_docs).
        context: the request's context string.
        parts: overrides, ``{doc_field | "template" | "cue": part}`` (metadata.interp.parts); a doc field may
            also be `MIXED` (split into instruction and content by the sentence rule).
        system_instruction: the ``--system_instruction`` the prompt was built with. lm-eval writes it, joined
            with the task description, before the few-shot examples; without a chat template nothing
            separates it from the first example, so it must be known to be found.
        template: text the chat template injected by itself (`template_text`): ``chat``, not instruction.

    Raises:
        SegmentationError: the evaluated example cannot be found in `context`.
    """
    overrides = dict(parts or {})
    bad = {k: v for k, v in overrides.items() if v not in PARTS and v != MIXED}
    if bad:
        raise SegmentationError(
            f"metadata.interp.parts has unknown parts {bad}; use one of {PARTS} "
            f"(or {MIXED!r} for a doc field)"
        )
    region = _final_region(task, doc, context, overrides)
    if region is None:
        raise SegmentationError(
            f"task {getattr(task.config, 'task', '?')!r}: the example's text was not found in its prompt; "
            "declare its fields with metadata.interp.instruction_fields/content_fields"
        )
    start, end, spans, pieces = region
    prefix = context[:start]
    frame = prompt_frame(
        task, doc, context, start, end, system_instruction, template, spans.get("instruction", []), pieces
    )
    spans.setdefault("instruction", []).extend(frame.system)
    chat, fs_start = frame.chat, frame.fewshot_start
    if frame.fewshot:
        spans.setdefault("fewshot", []).extend(frame.fewshot)
    # system instruction / other text before the examples
    other = _subtract([(0, fs_start)], chat + spans.get("instruction", []))
    other = [trim_span(prefix, s, e) for s, e in other if prefix[s:e].strip()]
    if other:
        spans.setdefault("instruction", []).extend(other)
    after = _subtract([(end, len(context))], chat)
    after = [(s, e) for s, e in after if context[s:e].strip()]
    if after:
        spans.setdefault("cue", []).extend(after)
    if chat:
        spans["chat"] = chat
    return {k: sorted(v) for k, v in spans.items() if v}


@dataclass(frozen=True)
class PromptFrame:
    """What surrounds the evaluated example in a prompt: the system prompt, the chat template's text and the
    few-shot demonstrations before it. One computation for both ways of finding the parts (this module's
    `segment_prompt` and the declared fields of `tasks.InterpTask.segment`), so they cannot disagree."""

    system: list[Span]  # system instruction and task description, before any example
    chat: list[Span]  # chat markup, and text the template injected itself that is not an instruction
    fewshot_start: int  # where the demonstrations start (the example's start when there are none)
    fewshot: list[Span]  # the demonstrations, chat markup cut out


def prompt_frame(
    task: Any,
    doc: Mapping[str, Any],
    context: str,
    start: int,
    end: int,
    system_instruction: str | None = None,
    template: tuple[str, ...] = (),
    instruction: Sequence[Span] = (),
    pieces: list[tuple[str, str]] | None = None,
) -> PromptFrame:
    """The frame of the evaluated example at ``context[start:end]``.

    Args:
        template: text the chat template injected by itself (`template_text`).
        instruction: spans already known to be instruction: injected text that is one of them (the system
            prompt this prompt was given) is not chat.
        pieces: the example's `skeleton`, to find the first demonstration by the template's own text.
    """
    markup = chat_spans(context, start, end)
    system = _system_prompt(task, doc, context[:start], system_instruction)
    instr_end = system[-1][1] if system else 0
    # text the chat template wrote by itself (SmolLM2's default system prompt) is chat, unless it is the
    # system prompt this prompt was given
    injected = [span for span in chat_spans(context, start, end, template) if span not in markup]
    chat = sorted(markup + _subtract(injected, [*instruction, *system]))
    fs_start, demos = _demonstrations(task, context, start, pieces, chat, instr_end)
    return PromptFrame(system, chat, fs_start, demos)


def _system_prompt(
    task: Any, doc: Mapping[str, Any], prefix: str, system_instruction: str | None
) -> list[Span]:
    """The system prompt in `prefix`: system instruction + fewshot_delimiter + description, before any
    example."""
    out: list[Span] = []
    instr_end = 0
    for text in ((system_instruction or "").strip(), _description(task, doc).strip()):
        if text and (at := prefix.find(text, instr_end)) >= 0:
            out.append((at, at + len(text)))
            instr_end = at + len(text)
    return out


def _demonstrations(
    task: Any,
    context: str,
    start: int,
    pieces: list[tuple[str, str]] | None,
    chat: list[Span],
    instr_end: int,
) -> tuple[int, list[Span]]:
    """Where the demonstrations start, and their spans (chat markup cut out): from the first example after
    the system prompt up to the evaluated example at `start`; none without ``num_fewshot``."""
    if (getattr(task.config, "num_fewshot", 0) or 0) <= 0:
        return start, []
    prefix = context[:start]
    fs_start = instr_end
    if pieces is not None and pieces[0][0] == "template":
        m = _skeleton_regex(pieces, anchored=False).search(prefix, instr_end)
        if m:
            fs_start = m.start()
    else:  # no template text to find the first example by: it starts in the first user turn, if any
        user = [e for s, e in chat if e >= instr_end and re.search(r"user|\[INST\]", prefix[s:e])]
        fs_start = max(fs_start, user[0]) if user else fs_start
    while fs_start < start and prefix[fs_start].isspace():
        fs_start += 1
    if fs_start >= start:
        return start, []
    return fs_start, _subtract([(fs_start, start)], chat)


def demonstration_spans(
    task: Any, doc: Mapping[str, Any], context: str, system_instruction: str | None = None
) -> list[Span]:
    """The few-shot demonstrations in `context`, for tasks that declare their fields
    (``metadata.interp.instruction_fields``) instead of being segmented here: without them the
    demonstrations would be template text (README's ``fewshot`` part promises otherwise).

    Empty without ``num_fewshot`` or when the evaluated example's rendering is not in `context`.
    """
    if (getattr(task.config, "num_fewshot", 0) or 0) <= 0:
        return []
    try:
        real = task.doc_to_text(doc)
    except Exception as err:  # a template that does not render: no region to find demonstrations before
        logger.debug("doc_to_text does not render: %s", err)
        return []
    start = context.rfind(real) if isinstance(real, str) and real else -1
    if start <= 0:
        return []
    end = start + len(real)
    return prompt_frame(
        task, doc, context, start, end, system_instruction, pieces=skeleton(task, doc)
    ).fewshot
