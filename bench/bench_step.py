"""Training step per size (fastbp.bench.SIZES): fastbp, NumPy reference, GEMM
floor, PyTorch CPU. `python -m fastbp bench` prints the same comparison as a table."""
import numpy as np
import pytest

from fastbp import bench
from bench.benchutil import have_torch, run

CONTENDERS = ["fastbp", "floor", "numpy", "floor_ours"] + (["torch"] if have_torch() else [])


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("size", list(bench.SIZES))
def test_step(benchmark, settle, size, contender):
    """floor_ours: the same GEMMs through fastbp's own BLAS (a diagnostic)."""
    make = bench.CONTENDERS.get(contender) or bench.DIAGNOSTICS[contender]
    run(benchmark, make(size), f"step-{size}", contender)


@pytest.mark.parametrize("size", ["book", "small", "medium"])
def test_fastbp_step_matches_reference_step(size):
    """The benchmarked step is the same computation as the reference's."""
    from fastbp import reference as ref
    import fastbp

    N, widths = bench.SIZES[size]
    x, labels = bench.make_batch(size, np.float64)
    model = fastbp.MLP(widths, "relu", dtype=np.float64, seed=0)
    params = {k: v.copy() for k, v in model.params.items()}
    l1 = model.train_step(x, labels, 0.1)
    l2 = ref.mlp_train_step(params, x, labels, 0.1, "relu", "softmax_cross_entropy")
    assert abs(l1 - l2) <= 1e-12 * abs(l2)
    for k in params:
        np.testing.assert_allclose(model.params[k], params[k], rtol=1e-10, atol=1e-12)
