"""fastbp.plot: training curves and per-layer gradient norms, with matplotlib.

    hist = model.fit(X, y, epochs=50, validation=(Xv, yv), log_grad_norms=True)
    fastbp.plot.plot_history(hist, "curves.png")

Left: the training loss and, when the history has them, the validation loss
(and the validation score on a second axis). Right: each layer's gradient norm
per epoch on a log scale, sqrt(||dW||^2 + ||db||^2) of the loss gradient on
the epoch's last batch (fit(log_grad_norms=True) records it, one extra
gradient evaluation per epoch): lines that shrink toward the first layer are
vanishing gradients, lines that grow without bound exploding ones.

matplotlib is an extra: pip install 'fastbp[plot]'.
"""
import math

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("fastbp.plot needs matplotlib: pip install 'fastbp[plot]' "
                          "(or pip install matplotlib)") from None
    import matplotlib.pyplot as plt  # headless: matplotlib falls back to Agg by itself

    return plt


def layer_norms(grad_norms):
    """{"W1": [...], "b1": [...], ...} per epoch (a history's "grad_norms", a list
    of per-parameter dicts) -> (layers, (epochs, layers) array) of per-layer
    norms sqrt(||dW||^2 + ||db||^2)."""
    if not grad_norms:
        return 0, np.empty((0, 0))
    L = sum(1 for k in grad_norms[0] if k.startswith("W"))
    out = np.array([[math.hypot(e[f"W{l}"], e.get(f"b{l}", 0.0)) for l in range(1, L + 1)]
                    for e in grad_norms])
    return L, out


def plot_history(history, path=None, *, title=None, ax=None):
    """Draw a fit's history: losses (and the validation score) per epoch, and
    the per-layer gradient norms when it has them ("grad_norms"). history: the
    dict fit returns (or model.history_). path: write a PNG there (and close the
    figure); None returns the matplotlib Figure. ax: draw the losses into this
    axes only. Returns the figure (or the path written)."""
    if not isinstance(history, dict) or "loss" not in history:
        raise TypeError(f"plot_history: history must be the dict fit returns (with 'loss'), "
                        f"got {type(history).__name__}")
    plt = _pyplot()
    loss = np.asarray(history["loss"], np.float64)
    if loss.size == 0:
        raise ValueError("plot_history: the history has no epochs")
    epochs = np.arange(1, loss.size + 1)
    norms = history.get("grad_norms") or []
    if ax is None:
        ncols = 2 if norms else 1
        fig, axes = plt.subplots(1, ncols, figsize=(6.0 * ncols, 4.8), squeeze=False)
        ax, ax_g = axes[0][0], (axes[0][1] if norms else None)
    else:
        fig, ax_g = ax.figure, None
    ax.plot(epochs, loss, marker="o", ms=3, label="training loss")
    if history.get("val_loss"):
        ax.plot(epochs[:len(history["val_loss"])], history["val_loss"], marker="o", ms=3,
                label="validation loss")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("loss per epoch")
    ax.grid(alpha=0.3)
    score = next((k for k in ("val_accuracy", "val_r2") if history.get(k)), None)
    handles, labels = ax.get_legend_handles_labels()
    if score:
        ax2 = ax.twinx()
        (h,) = ax2.plot(epochs[:len(history[score])], history[score], color="tab:green",
                        ls="--", label=score.replace("_", " "))
        ax2.set_ylabel(score.replace("_", " "))
        handles.append(h)
        labels.append(h.get_label())
    # legends below the axes: never over a curve
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3,
              fontsize="small", frameon=False)
    if ax_g is not None:
        L, per = layer_norms(norms)
        for l in range(L):
            ax_g.plot(epochs[:len(per)], per[:, l], marker="o", ms=3, label=f"layer {l + 1}")
        ax_g.set_yscale("log")
        ax_g.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_g.set_xlabel("epoch")
        ax_g.set_ylabel("gradient norm (log scale)")
        ax_g.set_title("per-layer gradient norm, last batch of each epoch", fontsize="medium")
        ax_g.grid(alpha=0.3, which="both")
        ax_g.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=min(L, 6),
                    fontsize="small", frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
