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
