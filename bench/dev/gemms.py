"""Per-GEMM comparison of fastbp's GEMM provider (scipy-openblas32, split over
fastbp's pool) against NumPy's matmul, on the products of the benchmark steps.

    python bench/dev/gemms.py [--dtype float32|float64]

forward: dense_forward(h, W, None, None, out=) (the GEMM alone, no epilogue)
against np.matmul(h, W, out=); backward: dense_backward(dy, x, W, None, None,
dx=, dW=, db=) (two GEMMs and the bias-gradient pass) against NumPy's two
matmuls and dy.sum(axis=0). Times are medians of 7 blocks of about 0.15 s,
contenders alternating with a 0.2 s pause; ratios are fastbp / NumPy.
"""
import argparse
import time

import numpy as np

import fastbp
from fastbp.bench import SIZES


def timed(fn):
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    fn()
    k = max(3, int(0.15 / max(time.perf_counter() - t0, 1e-7)))
    samples = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        samples.append((time.perf_counter() - t0) / k)
    time.sleep(0.2)
    return float(np.median(samples)) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    dt = np.dtype(ap.parse_args().dtype)
    r = np.random.default_rng(0)
    print(f"{'size':<7} {'product':<26} {'fastbp us':>10} {'numpy us':>9} {'ratio':>6}")
    for size, (N, widths) in SIZES.items():
        for l, (I, O) in enumerate(zip(widths[:-1], widths[1:])):
            x = r.standard_normal((N, I)).astype(dt)
            W = r.standard_normal((I, O)).astype(dt)
            dy = r.standard_normal((N, O)).astype(dt)
            y, dx, dW, db = (np.empty((N, O), dt), np.empty((N, I), dt), np.empty((I, O), dt),
                             np.empty(O, dt))
            f = timed(lambda: fastbp.dense_forward(x, W, None, None, out=y))
            n = timed(lambda: np.matmul(x, W, out=y))
            print(f"{size:<7} {f'fwd {N}x{I} . {I}x{O}':<26} {f:>10.1f} {n:>9.1f} {f / n:>6.2f}")

            def numpy_backward():
                np.matmul(dy, W.T, out=dx)
                np.matmul(x.T, dy, out=dW)
                dy.sum(axis=0, out=db)
            f = timed(lambda: fastbp.dense_backward(dy, x, W, None, None, dx=dx, dW=dW, db=db))
            n = timed(numpy_backward)
            print(f"{size:<7} {f'bwd (dx, dW, db) layer {l + 1}':<26} {f:>10.1f} {n:>9.1f} "
                  f"{f / n:>6.2f}")


if __name__ == "__main__":
    main()
