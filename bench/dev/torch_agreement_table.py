"""The torch agreement table of docs/training.md: the largest relative error
(max |ours - torch| / max |torch|, tests/test_torch_agreement.py's measure) of
GELU (erf and tanh), SiLU forward and backward in float32 and float64, and of
RMSprop's weights after 25 float64 steps with two parameter groups.

    PYTHONPATH=src:. python bench/dev/torch_agreement_table.py
"""
import numpy as np
import torch

import fastbp
from tests.test_torch_agreement import TOL, X64, _torch_mlp_steps, _torch_pair, rel


def activations():
    rows = []
    for name, ours, theirs in [
            ("gelu", lambda x, dy: (fastbp.gelu_forward(x), fastbp.gelu_backward(dy, x)),
             torch.nn.functional.gelu),
            ("gelu tanh", lambda x, dy: (fastbp.gelu_forward(x, "tanh"),
                                         fastbp.gelu_backward(dy, x, "tanh")),
             lambda t: torch.nn.functional.gelu(t, approximate="tanh")),
            ("silu", lambda x, dy: (fastbp.silu_forward(x), fastbp.silu_backward(dy, x)),
             torch.nn.functional.silu)]:
        for dtype in (np.float32, np.float64):
            x, dy = X64.astype(dtype), np.cos(X64).astype(dtype)
            ty, tdx = _torch_pair(theirs, x, dy)
            y, dx = ours(x, dy)
            rows.append((name, np.dtype(dtype).name, rel(y, ty), rel(dx, tdx), TOL[dtype]))
    return rows


def rmsprop():
    rows = []
    for momentum in (0.0, 0.9):
        for centered in (False, True):
            rng = np.random.default_rng(11)
            X, y = rng.standard_normal((64, 6)), rng.integers(0, 4, 64)
            m = fastbp.MLP([6, 9, 7, 4], "tanh", dtype=np.float64, seed=5)
            kw = dict(lr=0.01, alpha=0.9, eps=1e-6, momentum=momentum, centered=centered)
            Ws, bs = _torch_mlp_steps(m, X, y, lambda Ws, bs: torch.optim.RMSprop(
                [{"params": Ws, "weight_decay": 0.05}, {"params": bs, "weight_decay": 0.0}],
                **kw), 25)
            opt = fastbp.optim.RMSprop(weight_decay=0.05, **kw)
            for s in range(25):
                rows_ = slice(8 * s % len(X), 8 * s % len(X) + 8)
                m.train_step(X[rows_], y[rows_], optimizer=opt)
            err = max(max(rel(m.params[f"W{l + 1}"], Ws[l].detach().numpy()),
                          rel(m.params[f"b{l + 1}"], bs[l].detach().numpy()))
                      for l in range(m.n_layers))
            rows.append((momentum, centered, err))
    return rows


if __name__ == "__main__":
    print(f"torch {torch.__version__}, fastbp {fastbp.__version__}")
    print("| activation | dtype | forward | backward | target |\n|---|---|---:|---:|---:|")
    for name, dt, f, b, tol in activations():
        print(f"| {name} | {dt} | {f:.1e} | {b:.1e} | {tol:.0e} |")
    print("\n| RMSprop, 25 float64 steps | centered | max rel. error of W, b | target |")
    print("|---|---|---:|---:|")
    for mom, cen, err in rmsprop():
        print(f"| momentum {mom} | {cen} | {err:.1e} | 1e-10 |")
