"""The training step per size (fastbp.bench.SIZES): fastbp, the NumPy reference,
the GEMM floor and PyTorch CPU; `python -m fastbp bench` prints the same
comparison as a table, timed the same way; "fastbp-fit" is the step inside
fit (one native loop over many batches). And a whole fit: digits, 30 epochs,
batch 32, 64-128-10, against the GEMMs of its 1290 steps (from C) and
scikit-learn."""
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import bench
from bench.benchutil import have_torch, run

from fastbp import _blas

CONTENDERS = ["fastbp", "fastbp-fit", "numpy"] + (["torch"] if have_torch() else []) + \
    [f"floor-{p}" for p in _blas.available()]


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("size", list(bench.SIZES))
def test_step(benchmark, size, contender):
    """The floors: the step's products from C through each installed BLAS; the
    summary's ratios are to the best of them."""
    if contender.startswith("floor-"):
        fn = bench.floor_contenders(size)[contender]
    else:
        fn = bench.CONTENDERS[contender](size)
    run(benchmark, fn, f"step-{size}", contender)


@pytest.mark.parametrize("size", ["book", "small", "medium"])
def test_fastbp_step_matches_reference_step(size):
    """The benchmarked step is the same computation as the reference's."""
    from fastbp import reference as ref

    N, widths = bench.SIZES[size]
    x, labels = bench.make_batch(size, np.float64)
    model = fastbp.MLP(widths, "relu", dtype=np.float64, seed=0)
    params = {k: v.copy() for k, v in model.params.items()}
    l1 = model.train_step(x, labels, 0.1)
    l2 = ref.mlp_train_step(params, x, labels, 0.1, "relu", "softmax_cross_entropy")
    assert abs(l1 - l2) <= 1e-12 * abs(l2)
    for k in params:
        np.testing.assert_allclose(model.params[k], params[k], rtol=1e-10, atol=1e-12)


EPOCHS, BATCH, HIDDEN, LR = 30, 32, 128, 0.1


def digits():
    pytest.importorskip("sklearn")
    from fastbp.__main__ import load_dataset

    Xtr, _, ytr, _, _ = load_dataset("digits")
    return Xtr, ytr


def fit_floor(X):
    """The GEMMs of the fit's steps alone, from C through fastbp's BLAS
    (fastbp._core.StepFloor: per batch h = x W1, z = h W2, dW2 = h^T dz,
    dh = dz W2^T, dW1 = x^T dh, no Python between them); every batch counted
    full, so the floor is a little above the fit's own products."""
    steps = -(-X.shape[0] // BATCH) * EPOCHS
    floor = bench._core_floor([64, HIDDEN, 10], BATCH)
    return lambda: floor.run(steps, fastbp.get_num_threads())


@pytest.mark.parametrize("contender", ["fastbp", "floor", "sklearn"])
def test_fit_digits(benchmark, contender):
    X, y = digits()
    assert -(-X.shape[0] // BATCH) * EPOCHS == 1290

    def ours():
        m = fastbp.MLP([64, HIDDEN, 10], seed=0)
        m.fit(X, y, epochs=EPOCHS, batch_size=BATCH, lr=LR, progress=False)
        return m.score(X, y)

    def sk():
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        m = MLPClassifier((HIDDEN,), solver="sgd", batch_size=BATCH, learning_rate_init=LR,
                          momentum=0.0, alpha=0.0, max_iter=EPOCHS, tol=0.0,
                          n_iter_no_change=EPOCHS + 1, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m.fit(X, y)
        return m.score(X, y)
    fns = {"fastbp": ours, "floor": fit_floor(X), "sklearn": sk}
    out = run(benchmark, fns[contender], "fit-digits-30x32-64-128-10", contender)
    if contender != "floor":
        assert out > 0.95


# ---- dropout: at most one extra pass over the hidden outputs ----------------------------

def _dropout_fns(size):
    """fastbp's step with dropout 0.5 on every hidden layer, and the floor: the same
    step without dropout followed by a parallel copy of the hidden outputs' bytes."""
    from bench.benchutil import copy_floor

    N, widths = bench.SIZES[size]
    x, labels = bench.make_batch(size)
    drop = fastbp.MLP(widths, "relu", seed=0, dropout=0.5)
    plain = fastbp.MLP(widths, "relu", seed=0)
    opt = fastbp.optim.SGD(bench.OPTIMIZERS["sgd"][1]["lr"])
    hidden_bytes = N * sum(widths[1:-1]) * 4
    copy = copy_floor(2 * hidden_bytes)

    def plain_and_copy():
        plain.train_step(x, labels, optimizer=opt)
        copy()
    return {"fastbp-dropout": lambda: drop.train_step(x, labels, optimizer=opt),
            "no-dropout+copy": plain_and_copy,
            "no-dropout": lambda: plain.train_step(x, labels, optimizer=opt)}


@pytest.mark.parametrize("contender", ["fastbp-dropout", "no-dropout+copy", "no-dropout"])
@pytest.mark.parametrize("size", ["medium", "large"])
def test_step_dropout(benchmark, size, contender):
    run(benchmark, _dropout_fns(size)[contender], f"step-dropout-{size}", contender)
