"""Fused softmax-cross-entropy forward+backward on (4096, 1000) float32, sigmoid +
binary cross-entropy and MSE: fastbp vs the NumPy reference vs a parallel copy
moving the same bytes (read the logits and targets, write the gradient), and
PyTorch's cross_entropy / binary_cross_entropy_with_logits + backward."""
import numpy as np
import pytest

import fastbp
from fastbp import reference as ref
from bench.benchutil import copy_floor, have_torch, rng, run

N, C = 4096, 1000
CONTENDERS = ["fastbp", "numpy", "floor"] + (["torch"] if have_torch() else [])


def torch_loss(z, target, loss):
    """PyTorch's forward and backward of loss(logits, target) on a copy of z:
    a callable returning (loss, gradient)."""
    import torch
    zt = torch.from_numpy(z.copy()).requires_grad_()
    tt = torch.from_numpy(target)

    def fn():
        zt.grad = None
        value = loss(zt, tt)
        value.backward()
        return float(value.detach()), zt.grad.numpy()
    return fn


def check_loss(out, reference, z, target):
    """A contender's (loss, gradient) against the float64 reference."""
    loss, grad = out
    want_loss, want_grad = reference(z.astype(np.float64), target)
    assert abs(loss - want_loss) <= 1e-5 * abs(want_loss)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("contender", CONTENDERS)
def test_softmax_xent(benchmark, contender):
    r = rng()
    z = (r.standard_normal((N, C)) * 3).astype(np.float32)
    labels = r.integers(0, C, N)
    dz = np.empty_like(z)
    if contender == "torch":
        import torch
        fn = torch_loss(z, labels, torch.nn.functional.cross_entropy)
    else:
        fn = {"fastbp": lambda: fastbp.softmax_cross_entropy(z, labels, out=dz),
              "numpy": lambda: ref.softmax_cross_entropy(z, labels),
              "floor": copy_floor(2 * z.nbytes)}[contender]
    out = run(benchmark, fn, "softmax_xent-4096x1000", contender)
    if contender != "floor":
        check_loss(out, ref.softmax_cross_entropy, z, labels)


@pytest.mark.parametrize("contender", ["fastbp", "numpy", "floor"])
def test_mse(benchmark, contender):
    r = rng()
    y = r.standard_normal((N, C)).astype(np.float32)
    t = r.standard_normal((N, C)).astype(np.float32)
    dy = np.empty_like(y)
    fn = {"fastbp": lambda: fastbp.mse_loss(y, t, out=dy),
          "numpy": lambda: ref.mse_loss(y, t),
          "floor": copy_floor(3 * y.nbytes)}[contender]  # read y, t; write dy
    out = run(benchmark, fn, "mse-4096x1000", contender)
    if contender != "floor":
        np.testing.assert_allclose(out[1], ref.mse_loss(y, t)[1], rtol=1e-5)


@pytest.mark.parametrize("contender", CONTENDERS)
def test_bce(benchmark, contender):
    r = rng()
    z = (r.standard_normal((N, C)) * 3).astype(np.float32)
    t = (r.random((N, C)) < 0.3).astype(np.float32)
    dz = np.empty_like(z)
    if contender == "torch":
        import torch

        def bce(zt, tt):  # ours sums over outputs and averages over rows
            return torch.nn.functional.binary_cross_entropy_with_logits(
                zt, tt, reduction="sum") / N
        fn = torch_loss(z, t, bce)
    else:
        fn = {"fastbp": lambda: fastbp.binary_cross_entropy(z, t, out=dz),
              "numpy": lambda: ref.binary_cross_entropy(z, t),
              "floor": copy_floor(3 * z.nbytes)}[contender]  # read z, t; write dz
    out = run(benchmark, fn, "bce-4096x1000", contender)
    if contender != "floor":
        check_loss(out, ref.binary_cross_entropy, z, t)
