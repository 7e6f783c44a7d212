"""fit with a one-rank communicator against plain fit: the cost of the
data-parallel epoch's Python loop (one step per batch, gathered with np.take,
BACKWARD, Allreduce, UPDATE) over the native epoch (docs/dev/distributed.md).

    OMP_NUM_THREADS=1 python bench/mpi_fit_overhead.py

Prints, per size, the fastest of three interleaved rounds, ms per step.
"""
import time

import numpy as np
from mpi4py import MPI

import fastbp
from fastbp.bench import SIZES


def main():
    fastbp.set_num_threads(1)
    for size in ("small", "medium"):
        N, widths = SIZES[size]
        rng = np.random.default_rng(0)
        X = rng.standard_normal((N * 40, widths[0])).astype(np.float32)
        y = rng.integers(0, widths[-1], N * 40)
        best = {}
        for _ in range(3):
            for name, kw in (("plain", {}), ("comm", dict(comm=MPI.COMM_SELF))):
                m = fastbp.MLP(widths, dtype=np.float32, seed=0)
                t0 = time.perf_counter()
                m.fit(X, y, epochs=2, batch_size=N, lr=0.01, **kw)
                t = (time.perf_counter() - t0) / 80
                best[name] = min(best.get(name, t), t)
        print(f"{size}: plain fit {1e3 * best['plain']:.3f} ms/step, fit(comm=COMM_SELF) "
              f"{1e3 * best['comm']:.3f} ms/step, ratio {best['comm'] / best['plain']:.2f}")


if __name__ == "__main__":
    main()
