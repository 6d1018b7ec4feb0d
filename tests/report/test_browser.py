"""`lm-interp compare`'s report.html in a real headless Chromium: self-contained, inert untrusted text,
renders.

Skipped when no Chromium is installed (set ``LM_INTERP_CHROMIUM`` to a binary, or install ``chromium``). Every
check that could pass vacuously has a positive control: the same payloads, unescaped, do run under the same
flags, and a broken data: image is reported as broken.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from lm_interp_plugin.report import compare
from lm_interp_plugin.report.render import SCRIPT

from fixtures_report import make_docs, scored, write_run

TIMEOUT_S = 60
PWNED = "pwned"
PAYLOADS = (
    f"<img src=x onerror=\"document.title+='{PWNED}'\">",
    f"<script>document.title+='{PWNED}'</script>",
    f"<svg/onload=document.title+='{PWNED}'>",
)


def find_chromium() -> str | None:
    """The Chromium binary to use: ``$LM_INTERP_CHROMIUM`` first, then the usual names on PATH."""
    env = os.environ.get("LM_INTERP_CHROMIUM")
    if env:
        return env if (Path(env).is_file() or shutil.which(env)) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,  # a browser process per test
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium binary (looked for $LM_INTERP_CHROMIUM, chromium, chromium-browser, "
        "google-chrome); "
        "install one, e.g. `apt-get install chromium`, to run the browser checks",
    ),
]


def chromium(page: Path, profile: Path, *extra: str, fragment: str = "") -> subprocess.CompletedProcess:
    """Run headless Chromium on a local file (plus an address `fragment`, e.g. ``#q=x``) with networking and
    extensions off; fails on a non-zero exit."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--disable-sync",
        "--disable-component-update",
        "--no-first-run",
        "--no-default-browser-check",
        "--mute-audio",
        f"--user-data-dir={profile}",
        *extra,
        page.resolve().as_uri() + fragment,
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc


def dump_dom(page: Path, profile: Path, fragment: str = "") -> str:
    """The DOM after scripts had 2 s of virtual time to run (so an injected handler would have fired)."""
    return chromium(page, profile, "--virtual-time-budget=2000", "--dump-dom", fragment=fragment).stdout


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the text of <title>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def elements(dom: str) -> _Elements:
    parser = _Elements()
    parser.feed(dom)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A two-run report whose prompts, tokens, answers and labels carry script payloads."""
    root = tmp_path_factory.mktemp("browser")
    docs = make_docs(8, seed=3, prefix="b")
    # Payload 0 with its spaces sits in the instruction (the prompt column; split into tokens by the fixture);
    # the space-free payloads are single prompt tokens and the answer (a target token) of every document.
    for i, doc in enumerate(docs):
        doc["instruction"] = f"{PAYLOADS[0]} {PAYLOADS[1]} {doc['instruction']}"
        doc["question"] = f"{PAYLOADS[2]} {doc['question']}"
        doc["answer"] = f"{PAYLOADS[1]}{i}"
    write_run(root / "base", "org/base", {"interp_xss": scored(docs, seed=1)})
    write_run(root / "tuned", "org/tuned", {"interp_xss": scored(docs, seed=2, shift=0.5)}, seed=1)
    out = root / "report"
    result = compare([root / "base", root / "tuned"], out, labels=["base", PAYLOADS[2]], examples=1)
    return {"root": root, "out": out, "result": result, "page": out / "report.html"}


def test_dom_has_tables_headings_and_only_embedded_images(report, tmp_path):
    dom = dump_dom(report["page"], tmp_path / "profile")
    found = elements(dom)
    tags = [t for t, _ in found.tags]
    assert found.title.startswith("lm-interp comparison: base vs ")
    assert tags.count("h1") == 1 and "h2" in tags and "h3" in tags
    headings = re.findall(r"<h2>(.*?)</h2>", dom)
    assert "Task interp_xss" in headings
    assert tags.count("table") >= 3 and tags.count("th") >= 10
    assert "Leaderboard: per-example means" in dom and "Paired comparison on shared examples" in dom
    images = [a for t, a in found.tags if t == "img"]
    figures = report["result"].files["figures"]
    assert len(images) == len(figures) >= 3
    for attrs in images:
        src = attrs.get("src") or ""
        assert src.startswith("data:image/png;base64,"), src[:80]
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # Self-contained: nothing the browser could fetch, in the source or in the rendered DOM.
    source = report["page"].read_text(encoding="utf-8")
    for text in (source, dom):
        assert not re.search(r"""(src|href|action|poster)\s*=\s*["']?\s*(https?:)?//""", text, re.IGNORECASE)
        assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", text, re.IGNORECASE)
        assert "@import" not in text
    ids = {attrs.get("id") for _, attrs in found.tags}
    for tag, attrs in found.tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            # embedded data, or a link to an element of this page (the example table -> its token view)
            assert value is None or value.startswith("data:") or value[1:] in ids, (tag, name, value[:80])
    assert any((a.get("href") or "").startswith("#ex-") for t, a in found.tags if t == "a")


def test_every_embedded_image_decodes_in_the_browser(report, tmp_path):
    """A copy of the page with a probe script appended records each image's decoded size in the DOM."""
    probe = (
        "<script>window.addEventListener('load',()=>{const r=[...document.images].map("
        "i=>i.complete&&i.naturalWidth>0?i.naturalWidth+'x'+i.naturalHeight:'broken');"
        "document.body.setAttribute('data-probe',r.join(' '));});</script></body>"
    )
    # the page's CSP runs only its own script: the probe runs on a copy without it
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", report["page"].read_text("utf-8"))
    good = tmp_path / "probe.html"
    good.write_text(page.replace("</body>", probe), encoding="utf-8")
    sizes = re.search(r'data-probe="([^"]*)"', dump_dom(good, tmp_path / "p1")).group(1).split()
    assert len(sizes) == len(report["result"].files["figures"])
    assert all(re.fullmatch(r"\d+x\d+", s) for s in sizes), sizes
    assert all(int(s.split("x")[0]) >= 100 and int(s.split("x")[1]) >= 100 for s in sizes), sizes
    # Control: the probe does see a corrupt embedded PNG as broken.
    bad = tmp_path / "bad.html"
    bad.write_text(
        re.sub(r"base64,[A-Za-z0-9+/]{40}", "base64,AAAA", page, count=1).replace("</body>", probe),
        encoding="utf-8",
    )
    assert "broken" in re.search(r'data-probe="([^"]*)"', dump_dom(bad, tmp_path / "p2")).group(1)


def test_untrusted_text_is_inert(report, tmp_path):
    source = report["page"].read_text(encoding="utf-8")
    # The payloads reached the page (as text): prompt table, token spans, target tokens, run label.
    assert source.count("&lt;script&gt;document.title+=") >= 3
    assert "&lt;svg/onload=" in source and "&lt;img src=x onerror=" in source
    dom = dump_dom(report["page"], tmp_path / "profile")
    found = elements(dom)
    # The title holds the hostile run label as text, exactly: no handler appended to it.
    assert found.title == "lm-interp comparison: base vs " + PAYLOADS[2]
    tags = [t for t, _ in found.tags]
    # one script, the report's own (sort/search), and it ran; no payload became an element
    assert tags.count("script") == 1 and dom.count(SCRIPT[:60]) == 1 and "svg" not in tags
    assert dict(found.tags[0][1]).get("data-js") == "ready"
    assert all((a.get("src") or "").startswith("data:") for t, a in found.tags if t == "img")
    assert not any(k.startswith("on") for _, attrs in found.tags for k in attrs)
    # The escaped text is shown to the reader verbatim.
    text = re.sub(r"<[^>]+>", "", dom)
    assert PAYLOADS[1] in dom.replace("&lt;", "<").replace("&gt;", ">")
    assert "onerror" in text
    # Positive control: the same payloads unescaped do run under the same flags, so the check has teeth.
    # Each payload appends once to the title, so all three must have fired.
    control = tmp_path / "control.html"
    control.write_text(
        f"<!DOCTYPE html><html><head><title>safe</title></head><body>{''.join(PAYLOADS)}</body>"
    )
    assert elements(dump_dom(control, tmp_path / "c")).title == "safe" + PWNED * len(PAYLOADS)


def test_screenshot_is_a_real_render(report, tmp_path):
    image = pytest.importorskip("matplotlib.image")

    def shoot(budget_ms: int) -> tuple[Path, np.ndarray]:
        shot = tmp_path / f"shot_{budget_ms}.png"
        chromium(
            report["page"],
            tmp_path / f"profile_{budget_ms}",
            "--hide-scrollbars",
            "--window-size=1000,1400",
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={shot}",
        )
        return shot, np.asarray(image.imread(str(shot)), dtype=float)

    def saturated(pixels: np.ndarray) -> float:
        rgb = pixels[..., :3]
        return float(np.mean(rgb.max(axis=2) - rgb.min(axis=2) > 0.3))

    # A loaded machine can take the screenshot before the embedded PNGs are decoded: allow more (virtual)
    # time before concluding that the figures are not painted.
    for budget_ms in (2000, 10000, 30000):
        shot, pixels = shoot(budget_ms)
        if saturated(pixels) > 0.002:
            break
    assert shot.is_file() and 10_000 < shot.stat().st_size < 20_000_000
    assert pixels.shape[:2] == (1400, 1000)
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05  # not one flat colour
    # Mostly white page with dark text: the page background dominates, and some pixels are near-black.
    assert np.mean(rgb.mean(axis=2) > 0.95) > 0.5 and np.mean(rgb.max(axis=2) < 0.3) > 0.001
    # Colour appears (the bar plots and heatmaps), so the embedded figures were painted.
    assert saturated(pixels) > 0.002


def test_csp_stops_a_script_that_slipped_through(report, tmp_path):
    """Defence in depth: a payload injected unescaped into the page does not run (the CSP allows only the
    report's own script, by hash), while the report's script still does."""
    page = report["page"].read_text(encoding="utf-8")
    hacked = tmp_path / "hacked.html"
    hacked.write_text(page.replace("</body>", PAYLOADS[1] + PAYLOADS[2] + "</body>"), encoding="utf-8")
    found = elements(dump_dom(hacked, tmp_path / "profile"))
    assert found.title == "lm-interp comparison: base vs " + PAYLOADS[2]  # nothing appended
    assert dict(found.tags[0][1]).get("data-js") == "ready"


def test_example_search_from_the_address(report, tmp_path):
    """``report.html#q=TEXT`` filters the example table: only matching rows stay visible, and the count says
    so; without a query every row is shown."""
    dom = dump_dom(report["page"], tmp_path / "p0")
    rows = re.findall(r'<tr(?: style="[^"]*")?><td><a href="#ex-', dom)
    assert len(rows) == 8
    assert re.search(r"8 of 8 shown", dom)
    query = "3/3"  # doc 3 (doc ids base/run)
    dom = dump_dom(report["page"], tmp_path / "p1", fragment="#q=" + query)
    body = dom.split('class="sortable"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr( style=\"[^\"]*\")?>(.*?)</tr>", body)
    shown = [r for r in rows if "display: none" not in r[0]]
    assert len(shown) == 2 and all(query in r[1] for r in shown[1:])  # header row + doc 3
    assert "1 of 8 shown" in dom


# -- layout at 1280 px: tables that never break a number or a word, navigation, #q= over every table

#: Appended (on a copy without the CSP) to measure the laid-out page: number cells on more than one line,
#: cells whose words may break, the table of contents and whether its links land, and horizontal overflow.
LAYOUT_PROBE = """<script>window.addEventListener('load',function(){
function lines(el){var r=document.createRange();r.selectNodeContents(el);var tops={};
Array.prototype.forEach.call(r.getClientRects(),function(x){if(x.width>0)tops[Math.round(x.top)]=1;});
return Object.keys(tops).length;}
var cells=document.querySelectorAll('td.num');var wrapped=[];
Array.prototype.forEach.call(cells,function(td){if(lines(td)>1)wrapped.push(td.textContent);});
var breaking=[];Array.prototype.forEach.call(document.querySelectorAll('td,th'),function(c){
var s=getComputedStyle(c);
if(s.overflowWrap!=='normal'||s.wordBreak!=='normal')breaking.push(c.textContent);});
var links=document.querySelectorAll('nav.toc a[href^="#"]');var dead=[];
Array.prototype.forEach.call(links,function(a){if(!document.getElementById(a.getAttribute('href').slice(1)))
dead.push(a.getAttribute('href'));});
var folds=document.querySelectorAll('details.fold > summary > h2').length;var scrolled=[];
Array.prototype.forEach.call(document.querySelectorAll('.tablewrap,.scroll'),function(w){
var c=w.querySelector('caption');if(w.scrollWidth>w.clientWidth+1)scrolled.push(c?c.textContent:'?');});
var out={numbers:cells.length,wrapped:wrapped,scrolled:scrolled,breaking:breaking.length,toc:links.length,
dead:dead,folds:folds,width:window.innerWidth,overflow:document.documentElement.scrollWidth-window.innerWidth};
document.body.setAttribute('data-probe',JSON.stringify(out));});</script></body>"""


@pytest.fixture(scope="module")
def wide_report(tmp_path_factory):
    """A base/tuned report of two tasks with names as long as the shipped ones, long metric names, CIs and
    p-values: the demo's layout."""
    root = tmp_path_factory.mktemp("wide")
    tasks = ("interp_instruct", "interp_instruct_mc")
    docs = {task: make_docs(12, seed=i, prefix=task[:2]) for i, task in enumerate(tasks)}
    write_run(root / "base", "org/base", {t: scored(d, seed=1) for t, d in docs.items()})
    write_run(root / "tuned", "org/tuned", {t: scored(d, seed=2, shift=0.5) for t, d in docs.items()}, seed=1)
    out = root / "report"
    result = compare([root / "base", root / "tuned"], out, labels=["base", "tuned"], examples=1)
    return {"out": out, "result": result, "page": out / "report.html"}


def _layout(page: Path, profile: Path, width: int, extra_css: str = "") -> dict:
    import json

    html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page.read_text("utf-8"))
    probe = page.with_name(f"probe_{width}{'_control' if extra_css else ''}.html")
    probe.write_text(
        html.replace("</style>", extra_css + "</style>").replace("</body>", LAYOUT_PROBE), "utf-8"
    )
    dom = chromium(
        probe, profile, f"--window-size={width},2000", "--virtual-time-budget=3000", "--dump-dom"
    ).stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, "the layout probe did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_at_1280_px_no_number_wraps_and_the_page_has_navigation(wide_report, tmp_path):
    assert wide_report["result"].findings  # the findings table (the widest) is on the page
    layout = _layout(wide_report["page"], tmp_path / "p", 1280)
    assert layout["width"] == 1280
    assert layout["numbers"] > 50 and layout["wrapped"] == [], layout["wrapped"][:10]
    assert layout["breaking"] == 0  # no cell may break a word (paths are in their own fold-out)
    assert layout["overflow"] <= 0 and layout["scrolled"] == []  # no table wider than the page
    assert layout["folds"] == 2 and layout["toc"] >= 5 and layout["dead"] == []
    # Control: the same page with numbers allowed to break, in a narrow window, does wrap them.
    loose = (
        "td.num{white-space:normal!important;overflow-wrap:anywhere!important}.tablewrap{overflow:visible}"
    )
    control = _layout(wide_report["page"], tmp_path / "c", 420, loose)
    assert control["wrapped"] and control["breaking"] > 0


def test_address_query_filters_every_example_table(wide_report, tmp_path):
    """``#q=TEXT`` fills every task's search box, not only the first one."""
    dom = dump_dom(wide_report["page"], tmp_path / "p0", fragment="#q=in_one_doc_that_does_not_exist")
    counts = re.findall(r'id="examples-[^"]*-count">([^<]*)<', dom)
    assert len(counts) == 2 and all(c.startswith("0 of 12 shown") for c in counts), counts
    dom = dump_dom(wide_report["page"], tmp_path / "p1")
    counts = re.findall(r'id="examples-[^"]*-count">([^<]*)<', dom)
    assert counts == ["12 of 12 shown", "12 of 12 shown"], counts
