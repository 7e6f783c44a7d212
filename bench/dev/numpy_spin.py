"""Who holds the cores when NumPy's matmul runs between training steps: 100
rounds of (512x512 float32 `A @ A`, medium `train_step`), then each thread's
CPU time from /proc/self/task (Linux). With NumPy's OpenBLAS, one of its
threads spins through the rounds; run it again with OPENBLAS_THREAD_TIMEOUT=4.

    python bench/dev/numpy_spin.py"""
import os
import time

import numpy as np

from fastbp import bench


def cpu_seconds():
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for t in os.listdir("/proc/self/task"):
        try:
            f = open(f"/proc/self/task/{t}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[t] = (int(f[11]) + int(f[12])) / tick
    return out


step = bench.fastbp_step("medium")
A = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
time.sleep(0.5)
before, t0 = cpu_seconds(), time.perf_counter()
for _ in range(100):
    A @ A
    step()
wall, after = time.perf_counter() - t0, cpu_seconds()
me = str(os.getpid())
print(f"wall {wall:.2f} s; calling thread {after[me] - before.get(me, 0):.2f} s of CPU")
for t, v in after.items():
    if t != me and v - before.get(t, 0) > 0.01:
        print(f"  thread {t}: {v - before.get(t, 0):.2f} s of CPU")
