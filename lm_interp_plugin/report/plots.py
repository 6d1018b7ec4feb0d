"""The report's figures as PNG bytes (matplotlib's Agg backend; nothing is shown on screen).

Every text drawn goes through `_plain`, which escapes ``$`` so a prompt cannot be read as TeX.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lm_interp_plugin.records import InterpRecord

from .tokens import density_params, display_token

MAX_PROMPT_TOKENS = 120
MAX_TARGET_TOKENS = 40


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _plain(text: str, limit: int = 40) -> str:
    text = display_token(text)
    text = text if len(text) <= limit else text[: limit - 1] + "\u2026"
    return text.replace("$", r"\$")


def family_bars(title: str, summaries: dict[str, list[Any]], families: list[tuple[Any, list[str]]]) -> bytes:
    """One panel per metric family (`families`: (family, metrics) with the family's `title`, `unit`,
    `limits`), each on its own x axis with the unit as its label: horizontal bars, one per run and metric,
    whiskers at the bootstrap 95% CI; metric names in full on the y axis."""
    plt = _plt()
    labels = list(summaries)
    n_runs = max(1, len(labels))
    sizes = [len(metrics) for _, metrics in families]
    rows_height = [0.17 * n * n_runs + 0.12 * n + 0.75 for n in sizes]
    fig, axes = plt.subplots(
        len(families),
        1,
        figsize=(7.5, sum(rows_height) + 0.5),
        squeeze=False,
        gridspec_kw={"height_ratios": rows_height},
        layout="constrained",
    )
    bar = 0.8 / n_runs
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (family, metrics) in zip(axes[:, 0], families):
        y = np.arange(len(metrics))
        values: list[float] = []
        for i, label in enumerate(labels):
            cells = {s.metric: s for s in summaries[label]}
            means = np.array([cells[m].mean if m in cells else math.nan for m in metrics], dtype=float)
            lo = np.array([cells[m].ci_low if m in cells else math.nan for m in metrics], dtype=float)
            hi = np.array([cells[m].ci_high if m in cells else math.nan for m in metrics], dtype=float)
            err = np.nan_to_num(np.vstack([means - lo, hi - means]), nan=0.0).clip(min=0)
            values += [float(v) for v in np.concatenate([means, lo, hi]) if math.isfinite(v)]
            ax.barh(
                y + (i - (n_runs - 1) / 2) * bar,
                np.nan_to_num(means),
                bar,
                xerr=err,
                capsize=2,
                color=colours[i % len(colours)],
                label=_plain(label) if ax is axes[0, 0] else None,
            )
        ax.set_yticks(y, [_plain(m, 48) for m in metrics], fontsize=8)
        ax.invert_yaxis()  # the first metric on top, as in the table
        limits = family.limits
        if limits is None and family.key == "stock" and values and min(values) >= 0 and max(values) <= 1:
            limits = (0.0, 1.0)  # accuracies
        if limits is None and values and min(values) >= 0:  # no empty negative half
            top = max(values)
            limits = (0.0, top * 1.05 if top > 0 else 1.0)
        if limits is not None:
            ax.set_xlim(*limits)
        ax.axvline(0, color="#888", linewidth=0.8)
        if family.key == "lift":
            ax.axvline(1, color="#888", linewidth=0.8, linestyle="--")  # no preference for the instruction
        ax.set_title(_plain(family.title, 90), fontsize=9, loc="left")
        ax.set_xlabel(_plain(family.unit, 110), fontsize=7.5)
        ax.tick_params(axis="x", labelsize=7.5)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(_plain(title, 90), fontsize=10)
    fig.legend(loc="outside upper right", fontsize=8, ncols=min(n_runs, 4))
    return _png(fig)


def _levels_colormap(levels: int, b: int) -> tuple[Any, Any]:
    """A discrete colour map over the quantised levels 0..`levels`: the levels the score drops (<= `b`) in
    light greys, the levels it counts in blues; with its norm (one colour per whole level)."""
    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm, ListedColormap

    greys, blues = colormaps["Greys"], colormaps["Blues"]
    dropped = [greys(0.02 + 0.25 * i / max(b, 1)) for i in range(b + 1)]
    counted = [blues(0.35 + 0.65 * (i + 1) / max(levels - b, 1)) for i in range(levels - b)]
    cmap = ListedColormap(dropped + counted)
    return cmap, BoundaryNorm(np.arange(-0.5, levels + 1.0), cmap.N)


def token_heatmaps(records: dict[str, InterpRecord]) -> bytes:
    """Quantised attribution S (prompt x target tokens) per run side by side; instruction tokens in red. The
    colour bar marks the cut b of the score: levels <= b (grey) are dropped by instruction_importance, the
    blue ones count, so the picture and the score agree."""
    plt = _plt()
    n = len(records)
    rows = max(min(len(r.prompt_tokens), MAX_PROMPT_TOKENS) for r in records.values())
    fig, axes = plt.subplots(
        1, n, figsize=(5.0 * n + 1, max(3.0, 0.16 * rows + 1.5)), squeeze=False, layout="constrained"
    )
    for ax, (label, rec) in zip(axes[0], records.items()):
        s = np.asarray(rec.quantised, dtype=float)
        if s.ndim != 2 or s.size == 0:
            ax.set_axis_off()
            ax.set_title(f"{_plain(label)}: no matrix")
            continue
        s = s[:MAX_PROMPT_TOKENS, :MAX_TARGET_TOKENS]
        levels = int(rec.params.get("L", 10))
        b, _ = density_params(rec)
        b = min(max(b, 0), levels - 1)
        cmap, norm = _levels_colormap(levels, b)
        im = ax.imshow(s, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_yticks(range(s.shape[0]), [_plain(t, 18) for t in rec.prompt_tokens[: s.shape[0]]], fontsize=6)
        ax.set_xticks(
            range(s.shape[1]),
            [_plain(t, 12) for t in rec.target_tokens[: s.shape[1]]],
            fontsize=6,
            rotation=90,
        )
        for tick, part in zip(ax.get_yticklabels(), rec.token_parts):
            if part == "instruction":
                tick.set_color("crimson")
                tick.set_fontweight("bold")
        ax.set_title(_plain(label))
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, ticks=range(0, levels + 1))
        bar.ax.tick_params(labelsize=6)
        bar.ax.axhline(b + 0.5, color="crimson", linewidth=1.5)
        bar.set_label(f"level of S; cut b = {b}: levels \u2264 {b} (grey) do not count", fontsize=7)
    return _png(fig)


def _index_ticks(axis: Any, n: int, labels: Sequence[int] | None = None) -> None:
    """Whole numbers on an axis of `n` rows (layers, heads): every one when few, else integer steps (never
    0.1, 0.2, ...); `labels`: each row's own index where rows are some of the model's layers (a hybrid's)."""
    from matplotlib.ticker import MaxNLocator

    if labels is None:
        if n <= 16:
            axis.set_ticks(range(n))
        else:
            axis.set_major_locator(MaxNLocator(integer=True))
        return
    where = list(range(0, n, max(1, -(-n // 16))))
    axis.set_ticks(where, [str(labels[i]) for i in where])


def attention_maps(
    maps: dict[str, list[list[float]]],
    baseline: str,
    other: str,
    layers: dict[str, list[int]] | None = None,
) -> bytes:
    """Instruction attention (layers x heads): baseline, other run, and their difference when shapes (and
    the model layers of the rows) agree. `layers`: per run, the model layer of each row where the rows are
    not layers 0..L-1 (a hybrid's attention layers)."""
    plt = _plt()
    layers = layers or {}
    a, b = np.asarray(maps[baseline], dtype=float), np.asarray(maps[other], dtype=float)
    panels = [(baseline, a, "viridis"), (other, b, "viridis")]
    if a.shape == b.shape and layers.get(baseline) == layers.get(other):
        panels.append((f"{other} \u2212 {baseline}", b - a, "RdBu_r"))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.8 * len(panels) + 1, 3.4), squeeze=False, layout="constrained"
    )
    vmax = float(np.nanmax([np.nanmax(a), np.nanmax(b)]))
    for ax, (title, mat, cmap), run in zip(axes[0], panels, (baseline, other, baseline)):
        if cmap == "RdBu_r":
            lim = float(np.nanmax(np.abs(mat))) or 1.0
            im = ax.imshow(mat, aspect="auto", cmap=cmap, vmin=-lim, vmax=lim)
        else:
            im = ax.imshow(mat, aspect="auto", cmap=cmap, vmin=0, vmax=vmax or 1.0)
        ax.set_xlabel("head")
        ax.set_ylabel("layer" if run not in layers else "layer (attention layers only)")
        _index_ticks(ax.xaxis, mat.shape[1])
        _index_ticks(ax.yaxis, mat.shape[0], layers.get(run))
        ax.set_title(_plain(title, 50))
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _png(fig)


def concept_bars(shares: dict[str, dict[str, float]]) -> bytes:
    """Mean FFN concept shares per run, grouped by concept."""
    plt = _plt()
    concepts = sorted({c for d in shares.values() for c in d})
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(concepts) + 2), 3.2))
    width = 0.8 / max(1, len(shares))
    x = np.arange(len(concepts))
    for i, (label, d) in enumerate(shares.items()):
        ax.bar(
            x + (i - (len(shares) - 1) / 2) * width,
            [d.get(c, 0.0) for c in concepts],
            width,
            label=_plain(label),
        )
    ax.set_xticks(x, [_plain(c, 20) for c in concepts], rotation=30, ha="right")
    ax.set_ylabel("share")
    ax.legend(fontsize=8)
    return _png(fig)


def layer_group_concepts(
    layered: dict[str, list[dict[str, float]]], groups: int = 4, layers: dict[str, list[int]] | None = None
) -> bytes:
    """Concept proportions per layer group (stacked bars), one bar per (group, run); each group named by
    its first and last model layer (`layers`: per run, the model layer of each row where the rows are a
    hybrid's FFN layers only)."""
    layers = layers or {}
    plt = _plt()
    concepts = sorted({c for rows in layered.values() for d in rows for c in d})
    labels = list(layered)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * groups * len(labels)), 3.4))
    xticks, xlabels = [], []
    pos = 0.0
    cmap = plt.get_cmap("tab20")
    for g in range(groups):
        for label in labels:
            rows = layered[label]
            chunks = np.array_split(np.arange(len(rows)), groups)[g]
            if chunks.size == 0:
                continue
            vals = np.array([[rows[i].get(c, 0.0) for c in concepts] for i in chunks]).mean(axis=0)
            total = vals.sum() or 1.0
            bottom = 0.0
            for ci, c in enumerate(concepts):
                ax.bar(
                    pos,
                    vals[ci] / total,
                    0.8,
                    bottom=bottom,
                    color=cmap(ci % 20),
                    label=_plain(c) if (g == 0 and label == labels[0]) else None,
                )
                bottom += vals[ci] / total
            xticks.append(pos)
            index = layers.get(label) or list(range(len(rows)))
            xlabels.append(f"L{index[int(chunks[0])]}-{index[int(chunks[-1])]}\n{_plain(label, 14)}")
            pos += 1
        pos += 0.5
    ax.set_xticks(xticks, xlabels, fontsize=7)
    ax.set_ylabel("concept proportion")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(fig)


def _figure_png(fig: Any, dpi: int = 120) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def ffn_concept_proportions(cmp: Any, kind: str = "concept") -> bytes:
    """The paper's Figure 3 form from an `FFNComparison`: per category, its share of the components at each
    layer, base vs tuned."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    base, tuned = cmp.per_layer_shares["base"][kind], cmp.per_layer_shares["tuned"][kind]
    cats = list(base)
    ncols = max(1, min(3, len(cats)))
    nrows = max(1, math.ceil(len(cats) / ncols))
    fig = Figure(figsize=(4 * ncols, 2.8 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax, cat in zip(axes.flat, cats):
        ax.plot(cmp.layers, [100 * x for x in base[cat]], "o--", label="base", color="tab:gray")
        ax.plot(cmp.layers, [100 * x for x in tuned[cat]], "o-", label="tuned", color="tab:blue")
        ax.set_title(_plain(cat))
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
        ax.set_ylabel("% of components")
    for ax in list(axes.flat)[len(cats) :]:
        ax.axis("off")
    if cats:
        axes.flat[0].legend()
    fig.tight_layout()
    return _figure_png(fig)


def ffn_rotation(cmp: Any) -> bytes:
    """Rotation of each layer's top-k FFN subspace from an `FFNComparison`: mean principal angle with the
    min-max range."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    lo = [min(a) for a in cmp.angles]
    hi = [max(a) for a in cmp.angles]
    ax.fill_between(cmp.layers, lo, hi, alpha=0.25, color="tab:blue", label="min-max")
    ax.plot(cmp.layers, cmp.mean_angles, "o-", color="tab:blue", label="mean")
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
    ax.set_ylabel("principal angle (degrees)")
    ax.set_ylim(0, 90)
    ax.set_title("FFN top-k subspace rotation, base -> tuned")
    ax.legend()
    fig.tight_layout()
    return _figure_png(fig)
