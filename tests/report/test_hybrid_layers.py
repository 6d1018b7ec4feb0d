"""Reports of a hybrid model (attention and FFN on some layers only): the per-layer views are labelled with
the model's own layer indices, which the records name, not with row numbers."""

from __future__ import annotations

import json

from lm_interp_plugin.report import compare

from fixtures_report import make_docs, scored, write_run


def test_hybrid_rows_keep_their_model_layer_indices(tmp_path):
    docs = make_docs(8, seed=3, prefix="h")
    rows = [1, 3, 5]  # three attention / FFN layers of a six-layer hybrid
    write_run(tmp_path / "base", "org/hybrid-base", {"t": scored(docs, seed=1)}, row_layers=rows)
    write_run(tmp_path / "tuned", "org/hybrid-tuned", {"t": scored(docs, seed=2, shift=0.4)}, row_layers=rows)
    write_run(tmp_path / "dense", "org/dense", {"t": scored(docs, seed=3)})  # rows are layers 0..2
    runs = [tmp_path / "base", tmp_path / "tuned", tmp_path / "dense"]
    result = compare(runs, tmp_path / "out", examples=1)
    task = json.loads((tmp_path / "out" / "results.json").read_text())["tasks"]["t"]
    assert task["attention_layers"] == task["ffn_layers"] == {"base": rows, "tuned": rows}
    assert len(task["attention_means"]["base"]) == len(task["layer_concept_shares"]["base"]) == 3
    figures = " ".join(result.files["figures"])
    assert "t_attention_tuned" in figures and "t_layer_concepts" in figures


def test_index_ticks_name_the_model_layers():
    """The tick labels themselves: the model's layer indices for a hybrid's rows, row numbers otherwise."""
    from lm_interp_plugin.report.plots import _index_ticks, _plt

    plt = _plt()
    fig, (hybrid, dense, deep) = plt.subplots(1, 3)
    _index_ticks(hybrid.yaxis, 3, [1, 3, 5])
    _index_ticks(dense.yaxis, 3, None)
    _index_ticks(deep.yaxis, 40, list(range(0, 80, 2)))  # 40 attention layers of 80: every third labelled
    fig.canvas.draw()
    assert [t.get_text() for t in hybrid.get_yticklabels()] == ["1", "3", "5"]
    assert [t.get_text() for t in dense.get_yticklabels()] == ["0", "1", "2"]
    deep_labels = [t.get_text() for t in deep.get_yticklabels()]
    assert deep_labels[:3] == ["0", "6", "12"] and len(deep_labels) <= 16
    plt.close(fig)
