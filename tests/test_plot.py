"""fastbp.plot: the curves and per-layer gradient norms of a fit's history."""
import math
import sys

import numpy as np
import pytest

import fastbp
from fastbp import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _history():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 5))
    y = (X[:, 0] > 0).astype(np.int64)
    m = fastbp.MLP([5, 8, 6, 2], "sigmoid", seed=0)
    return m.fit(X[:90], y[:90], epochs=4, lr=0.5, validation=(X[90:], y[90:]),
                 log_grad_norms=True)


def test_layer_norms_combine_weights_and_biases():
    hist = _history()
    L, per = plot.layer_norms(hist["grad_norms"])
    assert L == 3 and per.shape == (4, 3)
    e = hist["grad_norms"][2]
    assert per[2, 1] == pytest.approx(math.hypot(e["W2"], e["b2"]))


def test_plot_history_writes_a_png_with_both_panels(tmp_path):
    pytest.importorskip("matplotlib")
    hist = _history()
    path = plot.plot_history(hist, str(tmp_path / "h.png"), title="t")
    assert open(path, "rb").read(8) == PNG_MAGIC
    fig = plot.plot_history(hist)
    axes = fig.get_axes()
    assert [a.get_xlabel() for a in axes[:2]] == ["epoch", "epoch"]
    assert axes[0].get_ylabel() == "loss" and "gradient norm" in axes[1].get_ylabel()
    assert len(axes[1].get_lines()) == 3                    # one line per layer
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert labels == ["training loss", "validation loss", "val accuracy"]
    # without grad norms, one panel
    fig = plot.plot_history({"loss": [1.0, 0.5]})
    assert len(fig.get_axes()) == 1
    with pytest.raises(TypeError, match="history must be the dict fit returns"):
        plot.plot_history([1, 2])


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'fastbp\[plot\]'"):
        plot.plot_history({"loss": [1.0]})
