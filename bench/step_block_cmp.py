"""Single-process training step, for comparing two builds of fastbp (the gradient
block of fastbp.distributed against separate dW/db arrays, docs/dev/distributed.md):

    for i in 1 2 3; do for tree in BASE NEW; do
        OMP_NUM_THREADS=1 PYTHONPATH=$tree/src python bench/step_block_cmp.py; done; done

Prints one line per (size, optimizer): the fastest and the median ms of a
train_step, one thread (the fastest is the figure that a shared machine's other
load disturbs least).
"""
import time

import numpy as np

import fastbp
from fastbp import MLP, optim
from fastbp.bench import SIZES


def main():
    fastbp.set_num_threads(1)
    for size in ("small", "medium", "large"):
        N, widths = SIZES[size]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((N, widths[0])).astype(np.float32)
        y = rng.integers(0, widths[-1], N)
        for name, kw in (("SGD", dict(lr=1e-3)), ("SGD momentum", dict(lr=1e-3, momentum=0.9)),
                         ("Adam", dict(optimizer=optim.Adam(1e-4))),
                         ("SGD clip_norm", dict(lr=1e-3, clip_norm=1.0))):
            m = MLP(widths, "relu", dtype=np.float32, seed=0)
            for _ in range(3):
                m.train_step(x, y, **kw)
            ts = []
            t_end = time.perf_counter() + 0.6
            while time.perf_counter() < t_end or len(ts) < 5:
                t0 = time.perf_counter()
                m.train_step(x, y, **kw)
                ts.append(time.perf_counter() - t0)
            print(f"{fastbp.__file__.split('/src/')[0]} | {size} | {name} | {1e3 * min(ts):.3f} "
                  f"| {1e3 * np.median(ts):.3f}")


if __name__ == "__main__":
    main()
