"""fit's step over its C floor in one process: 7 fit calls (about 512 steps
each, the `fastbp bench` fit contender), each followed by the floor timed in C
and a 0.3 s pause (OpenBLAS's threads idle again), and the median ratio.

    python bench/dev/fit_over_floor.py digits float32

Alternate it between builds, process by process, to compare them on a host
whose speed drifts."""
import sys
import time

import numpy as np

from fastbp import bench

size, dtype = sys.argv[1], np.dtype(sys.argv[2] if len(sys.argv) > 2 else "float32").type
fit, floor = bench.fastbp_fit(size, dtype), bench.StepFloor(size, dtype)
ratios = []
time.sleep(0.3)
for _ in range(7):
    t0 = time.perf_counter()
    fit()
    step = (time.perf_counter() - t0) / fit.steps
    ratios.append(step / floor.c_time(max(20, fit.steps // 4)))
    time.sleep(0.3)
print(f"{size} {np.dtype(dtype).name} fit/floor {np.median(ratios):.3f}")
