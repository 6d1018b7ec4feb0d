"""Markdown and HTML from one list of blocks, so both files always carry the same tables.

Blocks hold raw (untrusted) text: prompts, tokens, task names, labels and file names come from the runs. The
two renderers are the only places that turn text into markup, and both escape every string they emit.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1150px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45} h1{border-bottom:2px solid #444}h2{border-bottom:1px solid
#ccc;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff8e1;border-left:4px solid #f0ad4e;padding:.4em .8em;margin:.4em 0}
.warn{background:#fdecea;border-left:4px solid #d9534f;padding:.4em .8em;margin:.4em 0}
img{max-width:100%;border:1px solid #eee}
.pair{display:flex;gap:1em}.pair>div{flex:1;min-width:0}
.tokens{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.82em;white-space:pre-wrap;
border:1px solid #ddd;padding:.5em;line-height:1.9}
.tokens span{border-radius:2px}.tokens .instr{border-bottom:2px solid #c0392b}
.tokens .target{outline:1px dashed #888}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto}
"""


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Notes:
    items: list[str]
    warning: bool = False


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class Image:
    filename: str
    png: bytes
    caption: str


@dataclass
class TokenView:
    """One run's view of an example: tokens with density in [0, 1], instruction flags, target tokens."""

    label: str
    tokens: list[str]
    density: list[float]
    instruction: list[bool]
    target: list[str]


@dataclass
class TokenPair:
    caption: str
    views: list[TokenView] = field(default_factory=list)


@dataclass
class Pre:
    text: str


def text_blocks(text: str) -> list[Any]:
    """Blocks for text from another module: its Markdown pipe tables become `Table`s, the rest `Pre`."""
    blocks: list[Any] = []
    lines = text.strip("\n").splitlines()
    i = 0
    while i < len(lines):
        if (
            lines[i].lstrip().startswith("|")
            and i + 1 < len(lines)
            and set(lines[i + 1].strip()) <= set("|-: ")
        ):
            cells = [_split_row(lines[i])]
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells.append(_split_row(lines[i]))
                i += 1
            blocks.append(Table(cells[0], cells[1:]))
            continue
        start = i
        while i < len(lines) and not lines[i].lstrip().startswith("|"):
            i += 1
        chunk = "\n".join(lines[start:i]).strip()
        if chunk:
            blocks.append(Pre(chunk))
        if i == start:  # a lone pipe line that is not a table
            blocks.append(Pre(lines[i]))
            i += 1
    return blocks


def _split_row(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: NaN/None as an en dash, tiny values in scientific form."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "\u2013"
        if value != 0 and abs(value) < 10**-digits:
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}f}"
    return str(value)


def fmt_p(value: Any) -> str:
    if not isinstance(value, float) or not math.isfinite(value):
        return "\u2013"
    return f"{value:.3g}"


def _md(text: Any) -> str:
    """Text for a Markdown cell or line: HTML-escaped; backslashes, pipes and brackets escaped (so text from a
    document cannot form a link or image such as ``[x](javascript:...)``); on one line."""
    out = html.escape(str(text).replace("\\", "\\\\"), quote=False)
    for char in "|[]":
        out = out.replace(char, "\\" + char)
    return " ".join(out.split())


def to_markdown(title: str, blocks: list[Any]) -> str:
    """The report as Markdown; images are linked PNG files next to it."""
    lines = [f"# {_md(title)}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {_md(block.text)}", ""]
        elif isinstance(block, Paragraph):
            lines += [_md(block.text), ""]
        elif isinstance(block, Notes):
            tag = "**Warning:** " if block.warning else "Note: "
            lines += [f"> {tag}{_md(item)}" for item in block.items] + [""]
        elif isinstance(block, Table):
            if block.caption:
                lines += [f"*{_md(block.caption)}*", ""]
            lines.append("| " + " | ".join(_md(h) for h in block.headers) + " |")
            lines.append("|" + "|".join("---" for _ in block.headers) + "|")
            lines += ["| " + " | ".join(_md(fmt(c)) for c in row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Image):
            lines += [f"![{_md(block.caption)}]({_md(block.filename)})", ""]
        elif isinstance(block, TokenPair):
            lines.append(f"*{_md(block.caption)}*")
            lines.append("")
            for view in block.views:
                marked = "".join(f"[{t}]" if ins else t for t, ins in zip(view.tokens, view.instruction))
                lines.append(f"- {_md(view.label)}: {_md(marked)}")
            lines += ["", "(instruction tokens in [brackets]; colours in report.html)", ""]
        elif isinstance(block, Pre):
            lines += ["```", block.text.replace("```", "'''"), "```", ""]
    return "\n".join(lines)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _token_html(view: TokenView) -> str:
    spans = []
    for tok, dens, ins in zip(view.tokens, view.density, view.instruction):
        alpha = min(max(float(dens), 0.0), 1.0) if math.isfinite(float(dens)) else 0.0
        cls = ' class="instr"' if ins else ""
        spans.append(
            f'<span{cls} style="background:rgba(33,113,181,{alpha:.2f})" '
            f'title="density {alpha:.2f}">{_e(tok)}</span>'
        )
    target = "".join(f'<span class="target">{_e(t)}</span>' for t in view.target)
    return f'<div><b>{_e(view.label)}</b><div class="tokens">{"".join(spans)}<br>\u2192 {target}</div></div>'


def _cell(value: Any) -> str:
    """A table cell; numbers (and their formatted strings, CIs included) are right-aligned, text is not."""
    text = fmt(value)
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    numeric = numeric or (
        isinstance(value, str) and bool(text) and text.lstrip("-\u2212").replace(".", "", 1)[:1].isdigit()
    )
    return f'<td class="num">{_e(text)}</td>' if numeric else f"<td>{_e(text)}</td>"


def to_html(title: str, blocks: list[Any]) -> str:
    """The report as one self-contained HTML page (figures embedded as base64 PNG)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 2), 4)
            out.append(f"<h{level}>{_e(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{_e(block.text)}</p>")
        elif isinstance(block, Notes):
            cls = "warn" if block.warning else "note"
            out += [f'<div class="{cls}">{_e(item)}</div>' for item in block.items]
        elif isinstance(block, Table):
            out.append("<table>")
            if block.caption:
                out.append(f"<caption>{_e(block.caption)}</caption>")
            out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in block.headers) + "</tr>")
            out += ["<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in block.rows]
            out.append("</table>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.png).decode("ascii")
            out.append(
                f'<figure><img alt="{_e(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_e(block.caption)}</figcaption></figure>"
            )
        elif isinstance(block, TokenPair):
            out.append(f'<p><i>{_e(block.caption)}</i></p><div class="pair">')
            out += [_token_html(view) for view in block.views]
            out.append("</div>")
        elif isinstance(block, Pre):
            out.append(f"<pre>{_e(block.text)}</pre>")
    out.append("</body></html>")
    return "\n".join(out)
