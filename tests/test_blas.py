"""fastbp.set_blas: the GEMMs can call SciPy's OpenBLAS (default) or the newer
one of the scipy-openblas32 package, with the same results up to rounding."""
import numpy as np
import pytest

import fastbp
from fastbp import reference as ref


@pytest.fixture
def restore_blas():
    yield
    fastbp.set_blas("scipy")


def _check_kernels(dtype, rtol):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 29)).astype(dtype)
    W = rng.standard_normal((29, 13)).astype(dtype)
    b = rng.standard_normal(13).astype(dtype)
    y = fastbp.dense_forward(x, W, b, "tanh")
    np.testing.assert_allclose(y, ref.dense_forward(x, W, b, "tanh"), rtol=rtol, atol=rtol)
    dy = rng.standard_normal(y.shape).astype(dtype)
    for got, want in zip(fastbp.dense_backward(dy, x, W, y, "tanh"),
                         ref.dense_backward(dy, x, W, y, "tanh")):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    m = fastbp.MLP([29, 17, 5], dtype=dtype, seed=1)
    p = {k: v.copy() for k, v in m.params.items()}
    t = rng.integers(0, 5, 37)
    assert m.train_step(x, t, 0.1) == pytest.approx(
        ref.mlp_train_step(p, x, t, 0.1, "relu", "softmax_cross_entropy"), rel=rtol)
    for k in p:
        np.testing.assert_allclose(m.params[k], p[k], rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_default_is_scipy(dtype, rtol):
    assert fastbp.get_blas() == "scipy"
    _check_kernels(dtype, rtol)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_scipy_openblas32(restore_blas, dtype, rtol):
    pytest.importorskip("scipy_openblas32")
    fastbp.set_blas("scipy-openblas32")
    assert fastbp.get_blas().startswith("scipy-openblas32 (")
    _check_kernels(dtype, rtol)
    fastbp.set_blas("scipy")
    assert fastbp.get_blas() == "scipy"


def test_unknown_blas(restore_blas):
    with pytest.raises(ValueError, match="unknown BLAS 'mkl'"):
        fastbp.set_blas("mkl")
    assert fastbp.get_blas() == "scipy"
