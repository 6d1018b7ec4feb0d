"""Markdown and HTML from one list of blocks, so both files always carry the same tables.

Blocks hold raw (untrusted) text: prompts, tokens, task names, labels and file names come from the runs. The
two renderers are the only places that turn text into markup, and both escape every string they emit: HTML
with entities, Markdown with backslashes (so report.md reads as plain text and a ``[x](javascript:...)``
from a document stays text). The HTML page carries one small script (`SCRIPT`: sort and search the example
tables, open a linked token view) and a Content-Security-Policy that lets only that script run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import re
from dataclasses import dataclass, field
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45} h1{border-bottom:2px solid #444}h2{border-bottom:1px solid
#ccc;margin-top:1.6em}
.tablewrap{overflow-x:auto;margin:.6em 0}
table{border-collapse:collapse;font-size:.88em}
caption{text-align:left;font-style:italic;padding:.2em 0}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top;overflow-wrap:normal;
word-break:normal;hyphens:none}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.long{min-width:18em}
.note{background:#fff8e1;border-left:4px solid #f0ad4e;padding:.4em .8em;margin:.4em 0}
.warn{background:#fdecea;border-left:4px solid #d9534f;padding:.4em .8em;margin:.4em 0}
img{max-width:100%;border:1px solid #eee}figcaption{font-size:.88em;color:#444}
.pair{display:flex;gap:1em}.pair>div{flex:1;min-width:0}
.tokens{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.82em;white-space:pre-wrap;
border:1px solid #ddd;padding:.5em;line-height:1.9}
.tokens span{border-radius:2px}.tokens .instr{border-bottom:2px solid #c0392b}
.tokens .target{outline:1px dashed #888}
.legend{display:flex;align-items:center;gap:.5em;font-size:.85em;margin:.4em 0}
.legend .bar{flex:0 0 220px;height:14px;border:1px solid #bbb;
background:linear-gradient(to right,rgba(33,113,181,0),rgba(33,113,181,1))}
.defs{font-size:.9em;color:#333}.defs dt{font-weight:bold;margin-top:.3em}.defs dd{margin-left:1.2em}
details.ex{margin:.3em 0;border:1px solid #eee;padding:.2em .5em}details.ex>summary{cursor:pointer}
details.ex:target{border-color:#f0ad4e}
details.fold>summary{cursor:pointer;list-style-position:outside}
details.fold>summary>h2{display:inline-block;margin:1.2em 0 .3em;border:0}
details.fold{border-bottom:1px solid #ccc}
details.cell>summary{cursor:pointer;white-space:nowrap}
details.cell .full{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;word-break:break-all}
nav.toc{background:#f7f7f7;border:1px solid #e3e3e3;padding:.4em 1em;font-size:.92em;margin:1em 0}
nav.toc ol{margin:.2em 0;padding-left:1.4em}nav.toc ol ol{font-size:.95em}
table.sortable th{cursor:pointer;user-select:none;position:sticky;top:0}
table.sortable td:nth-child(2){min-width:15em}
table.sortable th[data-dir=asc]::after{content:" \\25B2"}
table.sortable th[data-dir=desc]::after{content:" \\25BC"}
.search{margin:.5em 0;font-size:.9em}.search input{width:22em;padding:.2em}
.scroll{max-height:32em;overflow:auto;border:1px solid #eee}
"""

#: The page's only script: sortable tables (click a header), a search box per example table (``report.html#q=
#: text`` fills every one of them), and what a link or the address points at opened (token views, folded
#: sections around it).
SCRIPT = """(function(){
function val(c){var t=c.getAttribute('data-v');if(t===null)t=c.textContent.trim();
var n=parseFloat(t);return isNaN(n)||!/^[-+\u2212]?[0-9.]/.test(t)?null:n;}
function sortBy(table,th,i){var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
var dir=th.getAttribute('data-dir')==='asc'?-1:1;
Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.removeAttribute('data-dir');});
th.setAttribute('data-dir',dir===1?'asc':'desc');
rows.sort(function(a,b){var x=val(a.cells[i]),y=val(b.cells[i]);
if(x===null&&y===null){return dir*a.cells[i].textContent.localeCompare(b.cells[i].textContent);}
if(x===null)return 1;if(y===null)return -1;return dir*(x-y);});
rows.forEach(function(r){body.appendChild(r);});}
function filter(input){var table=document.getElementById(input.getAttribute('data-table'));
var q=input.value.toLowerCase();var shown=0;
Array.prototype.forEach.call(table.tBodies[0].rows,function(r){
var hit=r.textContent.toLowerCase().indexOf(q)>=0;r.style.display=hit?'':'none';if(hit)shown++;});
var count=document.getElementById(input.getAttribute('data-count'));
if(count)count.textContent=shown+' of '+table.tBodies[0].rows.length+' shown';}
function openTarget(){var h=decodeURIComponent(location.hash.slice(1));
if(h.indexOf('q=')===0){Array.prototype.forEach.call(document.querySelectorAll('input[data-table]'),
function(box){box.value=h.slice(2);filter(box);});return;}
var el=h&&document.getElementById(h);if(!el)return;
for(var p=el;p;p=p.parentElement){if(p.tagName==='DETAILS')p.open=true;}el.scrollIntoView();}
Array.prototype.forEach.call(document.querySelectorAll('table.sortable'),function(table){
Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
th.title='click to sort';th.addEventListener('click',function(){sortBy(table,th,i);});});});
Array.prototype.forEach.call(document.querySelectorAll('input[data-table]'),function(box){
box.addEventListener('input',function(){filter(box);});filter(box);});
window.addEventListener('hashchange',openTarget);openTarget();
document.documentElement.setAttribute('data-js','ready');
})();"""
SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
#: Nothing is fetched; inline styles and exactly `SCRIPT` may run, so an escaping slip could not run code.
CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)


#: text cells longer than this many characters get a minimum width, so they wrap between words in a wide
#: column instead of squeezing the numbers beside them
LONG_TEXT = 60


@dataclass
class Heading:
    text: str
    level: int = 2
    #: its id in the page (default: from the text); the table of contents links to level-2 headings
    anchor: str = ""


@dataclass
class Fold:
    """A titled part of the page the reader can fold away (HTML details/summary, open by default); in
    Markdown a heading. Listed in the table of contents with its level-3 headings."""

    title: str
    blocks: list[Any] = field(default_factory=list)
    anchor: str = ""
    open: bool = True


@dataclass
class Expand:
    """A table cell that shows `short` and the whole `full` one click away (HTML); Markdown shows `full`."""

    short: str
    full: str


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
    """The views of one example side by side; `anchor` is its id in the page, `collapsed` folds it away."""

    caption: str
    views: list[TokenView] = field(default_factory=list)
    anchor: str = ""
    collapsed: bool = False


@dataclass
class TokenLegend:
    """What the token colours mean (the same thresholded density as the score)."""

    b: int
    p: float


@dataclass
class Definitions:
    """Terms and their meaning/unit, shown beside a table."""

    items: list[tuple[str, str]]


@dataclass
class ExampleTable:
    """A per-example table: sortable, searchable in HTML; `links[i]` is the anchor of row i's token view."""

    headers: list[str]
    rows: list[list[Any]]
    links: list[str]
    caption: str = ""
    table_id: str = "examples"


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: NaN/None as an en dash, tiny values in scientific form."""
    if value is None:
        return "\u2013"
    if isinstance(value, Expand):
        return value.full
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


_MD_ESCAPES = (
    (re.compile(r"\\"), r"\\\\"),  # a backslash stays a backslash
    (re.compile(r"\|"), r"\\|"),  # table cells
    (
        re.compile(r"\](?=[(\[:])"),
        r"\\]",
    ),  # no link/image/reference; "[95% CI] (n)" kept
    (re.compile(r"^\["), r"\\["),  # a reference definition "[x]: url" at the start of a line
    (re.compile(r"<(?=[A-Za-z/!?])"), r"\\<"),  # what could open an HTML tag or an autolink
    (re.compile(r"&(?=#?\w+;)"), r"\\&"),  # what could be read as an entity
    (re.compile(r"^(>|[#+*-](?=\s))"), r"\\\1"),  # block syntax at the start of a line (not "-0.5")
)


def _md(text: Any) -> str:
    """Text for a Markdown cell or line, on one line, readable as plain text.

    Markup characters are backslash-escaped rather than turned into HTML entities: ``a -> b`` stays as it is,
    ``<script>`` becomes ``\\<script>`` (shown as text by a Markdown renderer), ``[x](javascript:..)`` becomes
    ``[x\\](javascript:..)``, which no renderer turns into a link.
    """
    out = " ".join(str(text).split())
    for pattern, repl in _MD_ESCAPES:
        out = pattern.sub(repl, out)
    return out


def _md_table(caption: str | None, headers: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table (with its caption in italics above it) as lines, ending with a blank line."""
    lines = [f"*{_md(caption)}*", ""] if caption else []
    lines.append("| " + " | ".join(_md(h) for h in headers) + " |")
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(_md(fmt(c)) for c in row) + " |" for row in rows]
    return lines + [""]


def table_markdown(table: Table) -> str:
    """One table as Markdown (its caption in italics above it), e.g. for a command's standard output."""
    return "\n".join(_md_table(table.caption, table.headers, table.rows))


def to_markdown(title: str, blocks: list[Any]) -> str:
    """The report as Markdown; images are linked PNG files next to it."""
    return "\n".join([f"# {_md(title)}", ""] + _md_blocks(blocks))


def _md_blocks(blocks: list[Any]) -> list[str]:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {_md(block.text)}", ""]
        elif isinstance(block, Fold):
            lines += [f"## {_md(block.title)}", ""] + _md_blocks(block.blocks)
        elif isinstance(block, Paragraph):
            lines += [_md(block.text), ""]
        elif isinstance(block, Notes):
            tag = "**Warning:** " if block.warning else "Note: "
            lines += [f"> {tag}{_md(item)}" for item in block.items] + [""]
        elif isinstance(block, (Table, ExampleTable)):  # the example table's links live in the HTML
            lines += _md_table(block.caption, block.headers, block.rows)
        elif isinstance(block, Image):
            lines += [f"![{_md(block.caption)}]({_md(block.filename)})", ""]
        elif isinstance(block, TokenPair):
            if block.collapsed:
                continue  # every example's token view is in report.html; here only the chosen ones
            lines += [f"*{_md(block.caption)}*", ""]
            for view in block.views:
                lines.append(f"- {_md(view.label)}: {_md(_marked_text(view))}")
                lines.append(f"  - strongest tokens: {_md(_strongest(view))}")
            lines += ["", "(instruction in \u00ab\u00bb; density colours in report.html)", ""]
        elif isinstance(block, TokenLegend):
            lines += [_md(_legend_text(block)), ""]
        elif isinstance(block, Definitions):
            lines += [f"- **{_md(term)}**: {_md(meaning)}" for term, meaning in block.items] + [""]
    return lines


def _marked_text(view: TokenView) -> str:
    """The prompt as text with each instruction run in guillemets, then the target after an arrow."""
    out, inside = [], False
    for tok, ins in zip(view.tokens, view.instruction):
        if ins and not inside:
            out.append("\u00ab")
        elif inside and not ins:
            out.append("\u00bb")
        inside = bool(ins)
        out.append(tok)
    if inside:
        out.append("\u00bb")
    return "".join(out) + " \u2192 " + "".join(view.target)


def _strongest(view: TokenView, n: int = 5) -> str:
    """The `n` prompt tokens of highest density, for a reader without colours."""
    ranked = sorted(
        ((float(d), i) for i, d in enumerate(view.density) if math.isfinite(float(d)) and d > 0),
        key=lambda t: (-t[0], t[1]),
    )[:n]
    if not ranked:
        return "none (no token above the threshold)"
    return ", ".join(f"{view.tokens[i].strip() or repr(view.tokens[i])!s} {d:.2f}" for d, i in ranked)


def _legend_text(legend: TokenLegend) -> str:
    return (
        "Token colour = importance density a_m / max a_m of the prompt token, computed exactly as the "
        f"instruction_importance score computes it: levels <= b = {legend.b} dropped, then "
        f"\u2016S[m,:]\u2016_1 / \u2016S[m,:]\u2016_{legend.p:g}, divided by the example's largest; "
        "white = 0 (nothing above the threshold), dark blue = 1 (the example's most important token). "
        "Instruction tokens are underlined in red, target tokens boxed."
    )


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _legend_html(legend: TokenLegend) -> str:
    return (
        '<div class="legend"><span>0</span><span class="bar"></span><span>1</span>'
        f"<span>{_e(_legend_text(legend))}</span></div>"
    )


def _example_table_html(block: ExampleTable) -> str:
    tid = _e(block.table_id)
    out = [
        f'<div class="search"><label>Search examples: <input type="search" data-table="{tid}" '
        f'data-count="{tid}-count" placeholder="doc id, prompt text, value"></label> '
        f'<span id="{tid}-count"></span> (click a column header to sort)</div>',
        f'<div class="scroll"><table class="sortable" id="{tid}">',
    ]
    if block.caption:
        out.append(f"<caption>{_e(block.caption)}</caption>")
    headers = "".join(f"<th>{_breakable(h)}</th>" for h in block.headers)
    out.append(f"<thead><tr>{headers}</tr></thead><tbody>")
    for row, link in zip(block.rows, block.links):
        cells = [_cell(c) for c in row]
        if link and cells:
            cells[0] = f'<td><a href="#{_e(link)}">{_e(fmt(row[0]))}</a></td>'
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _token_html(view: TokenView) -> str:
    spans = []
    for tok, dens, ins in zip(view.tokens, view.density, view.instruction):
        alpha = min(max(float(dens), 0.0), 1.0) if math.isfinite(float(dens)) else 0.0
        cls = ' class="instr"' if ins else ""
        style = ""
        if alpha >= 0.005:  # white tokens (nothing above the threshold) need no style: smaller pages
            colour = ";color:#fff" if alpha >= 0.6 else ""
            style = f' style="background:rgba(33,113,181,{alpha:.2f}){colour}"'
        spans.append(
            f'<span{cls}{style} title="density {alpha:.2f}{" (instruction)" if ins else ""}">{_e(tok)}</span>'
        )
    target = "".join(f'<span class="target">{_e(t)}</span>' for t in view.target)
    return f'<div><b>{_e(view.label)}</b><div class="tokens">{"".join(spans)}<br>\u2192 {target}</div></div>'


def _breakable(text: Any) -> str:
    """Escaped text with a line-break opportunity after each underscore, so a long metric or task name in a
    header or a short cell may wrap between its words (``instruction_|importance``) and never inside one."""
    return _e(text).replace("_", "_<wbr>")


def _cell(value: Any) -> str:
    """A table cell; numbers (and their formatted strings, CIs included) are right-aligned and never wrap,
    long text gets room to wrap between words, a short one (a metric or task name) may wrap after an
    underscore, an `Expand` shows its short form and the whole on a click."""
    if isinstance(value, Expand):
        return (
            f'<td><details class="cell"><summary>{_e(value.short)}</summary>'
            f'<span class="full">{_e(value.full)}</span></details></td>'
        )
    text = fmt(value)
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    numeric = numeric or (
        isinstance(value, str) and bool(text) and text.lstrip("-\u2212").replace(".", "", 1)[:1].isdigit()
    )
    if numeric:
        return f'<td class="num">{_e(text)}</td>'
    if len(text) > LONG_TEXT:
        return f'<td class="long">{_e(text)}</td>'
    return f"<td>{_breakable(text)}</td>"


def _anchors(blocks: list[Any]) -> dict[int, str]:
    """A unique id for every heading and fold (its own anchor, else a slug of its text), by object id."""
    ids: dict[int, str] = {}
    seen: set[str] = set()

    def walk(items: list[Any]) -> None:
        for block in items:
            if isinstance(block, (Heading, Fold)):
                text = block.text if isinstance(block, Heading) else block.title
                slug = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower()[:60] or "x"
                base = block.anchor or "s-" + slug
                anchor, n = base, 1
                while anchor in seen:
                    n += 1
                    anchor = f"{base}-{n}"
                seen.add(anchor)
                ids[id(block)] = anchor
            if isinstance(block, Fold):
                walk(block.blocks)

    walk(blocks)
    return ids


def _toc_html(blocks: list[Any], ids: dict[int, str]) -> str:
    """The table of contents: every level-2 heading and fold, with the level-3 headings inside a fold."""
    items = []
    for block in blocks:
        if isinstance(block, Heading) and block.level == 2:
            items.append(f'<li><a href="#{_e(ids[id(block)])}">{_e(block.text)}</a></li>')
        elif isinstance(block, Fold):
            subs = [
                f'<li><a href="#{_e(ids[id(b)])}">{_e(b.text)}</a></li>'
                for b in block.blocks
                if isinstance(b, Heading) and b.level == 3
            ]
            inner = f"<ol>{''.join(subs)}</ol>" if subs else ""
            items.append(f'<li><a href="#{_e(ids[id(block)])}">{_e(block.title)}</a>{inner}</li>')
    if not items:
        return ""
    return f'<nav class="toc" aria-label="Contents"><b>Contents</b><ol>{"".join(items)}</ol></nav>'


def to_html(title: str, blocks: list[Any]) -> str:
    """The report as one self-contained HTML page (figures embedded as base64 PNG), with its contents."""
    ids = _anchors(blocks)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _toc_html(blocks, ids),
    ]
    out += _html_blocks(blocks, ids)
    out.append(f"<script>{SCRIPT}</script>")
    out.append("</body></html>")
    return "\n".join(out)


def _html_blocks(blocks: list[Any], ids: dict[int, str]) -> list[str]:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 2), 4)
            out.append(f'<h{level} id="{_e(ids[id(block)])}">{_e(block.text)}</h{level}>')
        elif isinstance(block, Fold):
            opened = " open" if block.open else ""
            out.append(
                f'<details class="fold" id="{_e(ids[id(block)])}"{opened}><summary><h2>{_e(block.title)}</h2>'
                "</summary>"
            )
            out += _html_blocks(block.blocks, ids)
            out.append("</details>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{_e(block.text)}</p>")
        elif isinstance(block, Notes):
            cls = "warn" if block.warning else "note"
            out += [f'<div class="{cls}">{_e(item)}</div>' for item in block.items]
        elif isinstance(block, Table):
            out.append('<div class="tablewrap"><table>')
            if block.caption:
                out.append(f"<caption>{_e(block.caption)}</caption>")
            out.append("<tr>" + "".join(f"<th>{_breakable(h)}</th>" for h in block.headers) + "</tr>")
            out += ["<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in block.rows]
            out.append("</table></div>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.png).decode("ascii")
            out.append(
                f'<figure><img alt="{_e(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_e(block.caption)}</figcaption></figure>"
            )
        elif isinstance(block, TokenPair):
            anchor = f' id="{_e(block.anchor)}"' if block.anchor else ""
            if block.collapsed:
                out.append(
                    f'<details class="ex"{anchor}><summary>{_e(block.caption)}</summary><div class="pair">'
                )
                out += [_token_html(view) for view in block.views]
                out.append("</div></details>")
            else:
                out.append(f'<p{anchor}><i>{_e(block.caption)}</i></p><div class="pair">')
                out += [_token_html(view) for view in block.views]
                out.append("</div>")
        elif isinstance(block, TokenLegend):
            out.append(_legend_html(block))
        elif isinstance(block, Definitions):
            out.append('<dl class="defs">')
            out += [f"<dt>{_e(term)}</dt><dd>{_e(meaning)}</dd>" for term, meaning in block.items]
            out.append("</dl>")
        elif isinstance(block, ExampleTable):
            out.append(_example_table_html(block))
    return out
