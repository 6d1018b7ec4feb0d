"""Sentence-level reading of prompt text: which sentences are instructions, which are field labels.

Why: a prompt field such as IFEval's ``prompt`` mixes the request ("Rewrite the sentence below in French.")
with the material it acts on (the sentence); template text mixes field labels ("Question:") with task
descriptions. A reader separates them by what each sentence *does*; this module writes that reading down as
one rule, the same for every task:

1. Quoted text ("...", “...”, ```...```) is material: ``content``; except a short quote (at most
   `PARAMETER_WORDS` words, not introduced by a colon) inside an instruction sentence, which is a parameter of
   the instruction ('end your response with the phrase "Any other questions?"').
2. Text introduced by a colon (``...: TEXT``) is material up to the end of its sentence (inline) or, when the
   colon ends a line, up to the next paragraph that opens with an instruction. The clause before the colon
   says what the material is ("Here is a product review:", "Summarize the text below:"): ``instruction``,
   unless it is a field label ("Input:"), which is ``label``.
3. A sentence is ``instruction`` when it is an imperative or a request: it opens (after an optional "Please",
   "Also", "First", a list bullet, ...) with a verb of the instruction-verb lexicon (``data/verbs.json``) or a
   directive verb (`DIRECTIVE_VERBS`: "use", "include", "avoid", "do not", ...); or it asks the reader to act
   ("Can you ...", "I would like you to ...", "Help me ..."); or it states a requirement ("Your answer
   must ...", "You are not allowed to ...", "The names should be funny.", "... in your response"). An
   introductory phrase ("At the end of your response, please add ...") and adverbs may precede the verb.
4. Every other sentence (statements, questions, the data) is ``content``.

Field labels (``Question:``, ``Q:``, ``Passage:``; at most four words ending with a colon) are `is_label`.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from ..spans import Span, trim_span

VERBS_FILE = Path(__file__).resolve().parents[1] / "data" / "verbs.json"

#: Verbs that open a directive without being typical task verbs (response constraints, formatting).
DIRECTIVE_VERBS = frozenset(
    """use include avoid make keep add wrap highlight end finish start begin put respond reply mention
    separate repeat limit do be let imagine pretend act help choose select pick fill complete
    continue read consider think note show state discuss analyze analyse elaborate critique mark
    return output print ensure remember try focus organize organise structure capitalize refrain
    underline bold count check estimate predict determine decide prove verify fix complete argue
    justify assume""".split()
)
#: Words that may precede the verb of an imperative.
_OPENERS = frozenset(
    "please kindly now also then first next finally lastly additionally and but so just again instead "
    "briefly carefully simply quickly".split()
)
_NEGATIVE = re.compile(r"^(?:do not|don't|dont|never|always|make sure|be sure|let's|let us)\b", re.I)
_REQUEST = re.compile(
    r"\b(?:(?:can|could|would|will) you\b"
    r"|(?:i|we)(?: would|'d)? (?:like|want|need|love|ask)(?: you| thee)? to\b"
    r"|(?:i|we)(?: would|'d) like (?:you|thee)\b"
    r"|help me\b|i(?:'m| am) asking you\b)",
    re.I,
)
#: A requirement: "You must ...", "The names should be funny.", "Each paragraph needs to ..." (an obligation
#: stated in the sentence's first clause), or any mention of the response ("... in your response").
_CONSTRAINT = re.compile(
    r"^(?:(?:you|thee) (?:are (?:not )?(?:allowed|required|expected|asked)|cannot|can't|may not|shall)\b"
    r"|[^.!?,;:]{0,60}?\b(?:must|should|needs? to|has to|have to|is to|are to|will need to)\b"
    r"|there (?:should|must) be\b)",
    re.I,
)
_YOUR_RESPONSE = re.compile(r"\byour (?:entire |whole |final )?(?:response|answer|reply|output)\b", re.I)
PARAMETER_WORDS = 5
_LABEL = re.compile(r"^\s*[A-Za-z][\w'()/\- ]{0,30}:\s*$")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)]|\(?[a-z][.)])\s+")
_QUOTE = re.compile(r"```.*?```|\"[^\"\n]{1,2000}\"|“[^”]{1,2000}”|«[^»]{1,2000}»", re.DOTALL)
_SENTENCE_END = re.compile(r"[.!?][\"')\]”]*(\s+)(?=[\"'(\[*#“]?[A-Z0-9])|(\n+)")


@lru_cache(maxsize=1)
def instruction_verbs() -> frozenset[str]:
    """The instruction-verb lexicon (``data/verbs.json``, ``instruction_verbs``) plus `DIRECTIVE_VERBS`."""
    data = json.loads(VERBS_FILE.read_text(encoding="utf-8"))
    return frozenset(str(v).lower() for v in data["instruction_verbs"]) | DIRECTIVE_VERBS


def is_label(text: str) -> bool:
    """A field label or answer cue: at most four words and a closing colon ("Question:", "Q:", "Answer:"),
    not an imperative ("Answer the question below:" is a request)."""
    words = text.split()
    if not _LABEL.match(text) or len(words) > 4:
        return False
    return len(words) == 1 or words[0].lower() not in instruction_verbs()


def is_instruction(sentence: str) -> bool:
    """Rule 3 of the module docstring: an imperative, a request, or a constraint on the response."""
    text = _BULLET.sub("", sentence).strip().strip("\"'“”*#").strip()
    if not text or is_label(text):
        return False
    if (
        _NEGATIVE.match(text)
        or _REQUEST.search(text)
        or _CONSTRAINT.match(text)
        or _YOUR_RESPONSE.search(text)
    ):
        return True
    intro = re.match(r"^[^,.!?:;]{1,50},\s+", text)  # "At the end, please add ...": an introductory phrase
    if intro and is_instruction(text[intro.end() :]):
        return True
    words = re.findall(r"[A-Za-z']+|[,:;]", text)
    i = 0
    while i < len(words) - 1 and (words[i].lower() in _OPENERS or words[i] == "," or words[i].endswith("ly")):
        i += 1
    if i >= len(words):
        return False
    verb = words[i].lower()
    following = words[i + 1] if i + 1 < len(words) else ""
    if verb not in instruction_verbs() or following == ":":
        return False
    # a capitalised verb mid-sentence after an opener, or at the start: imperative; "Answers are ..." is not
    # (plural/3rd-person forms are not in the lexicon), "List of ..." is a noun phrase
    return following.lower() not in {"of", "is", "are", "was", "were"}


def sentences(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """Sentence spans of ``text[start:end]`` (split after .!? before a capital, and at newlines), trimmed."""
    end = len(text) if end is None else end
    out, pos = [], start
    for m in _SENTENCE_END.finditer(text, start, end):
        gap = 1 if m.group(1) is not None else 2
        out.append((pos, m.start(gap)))
        pos = m.end(gap)
    out.append((pos, end))
    return [trim_span(text, s, e) for s, e in out if text[s:e].strip()]


def split_request(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int, str]]:
    """(start, end, part) pieces of ``text[start:end]``, part ``instruction`` or ``content`` (rules 1-4).

    Adjacent pieces of the same part are merged, so the whitespace between two instruction sentences belongs
    to the instruction.
    """
    end = len(text) if end is None else end
    material: list[Span] = [(m.start(), m.end()) for m in _QUOTE.finditer(text, start, end)]
    pieces: list[tuple[int, int, str]] = []
    in_block = False  # inside a colon-introduced block that runs to the next instruction paragraph
    for s, e in sentences(text, start, end):
        paragraph_start = s == start or "\n\n" in text[max(start, s - 3) : s] or text[s - 1 : s] == "\n"
        if in_block and paragraph_start and is_instruction(_outside(text, s, e, material)):
            in_block = False
        if in_block:
            pieces.append((s, e, "content"))
            continue
        colon = _introducing_colon(text, s, e, material)
        if colon is not None:
            head_part = "label" if is_label(text[s : colon + 1]) else "instruction"
            pieces.append((s, colon + 1, head_part))
            rest = trim_span(text, colon + 1, e)
            if rest[1] > rest[0]:
                pieces.append((*rest, "content"))
            else:  # the colon ends the line: a block follows
                in_block = True
            continue
        part = "instruction" if is_instruction(_outside(text, s, e, material)) else "content"
        pieces.append((s, e, part))
    # quotes are material wherever they sit, but for an instruction's short parameters
    out: list[tuple[int, int, str]] = []
    for s, e, part in pieces:
        cur = s
        for qs, qe in material:
            if qe <= cur or qs >= e or part == "content":
                continue
            if len(text[qs:qe].split()) <= PARAMETER_WORDS and not text[s:qs].rstrip().endswith(":"):
                continue
            if qs > cur:
                out.append((*trim_span(text, cur, qs), part))
            out.append((max(qs, cur), min(qe, e), "content"))
            cur = min(qe, e)
        if cur < e:
            out.append((*trim_span(text, cur, e), part))
    return merge_pieces([p for p in out if p[1] > p[0]])


def _outside(text: str, s: int, e: int, material: list[Span]) -> str:
    """The sentence with its quoted material blanked out (a quote does not make a sentence a request)."""
    chars = list(text[s:e])
    for qs, qe in material:
        for i in range(max(qs, s), min(qe, e)):
            chars[i - s] = " "
    return "".join(chars)


def _introducing_colon(text: str, s: int, e: int, material: list[Span]) -> int | None:
    """Position of a colon that introduces material (followed by whitespace, outside quotes), or None."""
    for m in re.finditer(r":(?=\s|$)", text[s:e]):
        at = s + m.start()
        if not any(qs <= at < qe for qs, qe in material):
            return at

    return None


def merge_pieces(pieces: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Sorted pieces with neighbours of the same part joined (the text between them joins too)."""
    merged: list[tuple[int, int, str]] = []
    for s, e, part in sorted(pieces):
        if merged and merged[-1][2] == part:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e), part)
        else:
            merged.append((s, e, part))
    return merged
