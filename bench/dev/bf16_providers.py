"""Which bfloat16 GEMM to load (issue 22): one product per shape, one thread,
contenders interleaved in one process, best of 5 rounds of ~0.1 s each.

    PYTHONPATH=src python bench/dev/bf16_providers.py

Contenders: OpenBLAS sgemm and MKL sgemm (float32), MKL cblas_gemm_bf16bf16f32
and oneDNN dnnl_gemm_bf16bf16f32 (bf16 operands, float32 accumulation), each
through ctypes on row-major C = A B, with each library held at one thread as
fastbp holds it; cpu/wall shows the threads each really used (MKL's bf16 GEMM
ran on 2 on a 2-core Zen 4 with MKL_Set_Num_Threads(1)). Also checks that oneDNN's result does not
depend on TBB's thread count.
"""
import ctypes
import time

import numpy as np

import fastbp
from fastbp import _bf16, _blas
from fastbp.reference import to_bfloat16

SHAPES = [(128, 784, 512), (128, 512, 512), (256, 784, 1024), (256, 1024, 1024),
          (512, 1024, 4096), (512, 4096, 4096)]
i64, f32, vp = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p


def bits(a):
    return (to_bfloat16(a).view(np.uint32) >> 16).astype(np.uint16)


def contenders(M, K, N):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    A16, B16 = bits(A), bits(B)
    C = np.empty((M, N), np.float32)
    out = {}
    for name in _blas.available():
        lib = _blas._provider(name).lib
        sg = getattr(lib, "scipy_cblas_sgemm", None) or lib.cblas_sgemm
        sg.argtypes = [ctypes.c_int] * 6 + [f32, vp, ctypes.c_int, vp, ctypes.c_int, f32, vp,
                                             ctypes.c_int]
        out[f"sgemm-{name}"] = (lambda sg=sg: sg(101, 111, 111, M, N, K, 1.0, A.ctypes.data, K,
                                                 B.ctypes.data, N, 0.0, C.ctypes.data, N))
    if "mkl" in _blas.available():
        lib = _blas._provider("mkl").lib
        g = lib.cblas_gemm_bf16bf16f32
        g.argtypes = [ctypes.c_int] * 3 + [ctypes.c_int] * 3 + [f32, vp, ctypes.c_int, vp,
                                                                 ctypes.c_int, f32, vp,
                                                                 ctypes.c_int]
        out["bf16-mkl"] = lambda: g(101, 111, 111, M, N, K, 1.0, A16.ctypes.data, K,
                                    B16.ctypes.data, N, 0.0, C.ctypes.data, N)
    if "onednn" in _bf16.available():
        d = _bf16._provider().lib.dnnl_gemm_bf16bf16f32
        d.argtypes = [ctypes.c_char, ctypes.c_char, i64, i64, i64, f32, vp, i64, vp, i64, f32,
                      vp, i64]
        out["bf16-onednn"] = lambda: d(b"N", b"N", M, N, K, 1.0, A16.ctypes.data, K,
                                       B16.ctypes.data, N, 0.0, C.ctypes.data, N)
    return out, C


CPU = {}  # contender -> CPU time / wall time of its last block: the threads it used


def best(fn, rounds=5, block=0.1, name=None):
    fn()
    t = []
    for _ in range(rounds):
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < block:
            fn()
            n += 1
        t.append((time.perf_counter() - t0) / n)
        CPU[name] = (time.process_time() - c0) / (time.perf_counter() - t0)
    return min(t)


def main():
    fastbp.set_bf16_provider("onednn" if "onednn" in _bf16.available() else "emulated")
    names = None
    for M, K, N in SHAPES:
        fns, C = contenders(M, K, N)
        if names is None:
            names = list(fns)
            print(f"{'M x K x N':<17}" + "".join(f"{n:>14}" for n in names) +
                  "   ms, 1 thread; x: fastest sgemm / bf16")
        times = {n: 0.0 for n in names}
        for _ in range(2):  # interleaved: each contender's best over two passes
            for n in names:
                t = best(fns[n], name=n)
                times[n] = t if times[n] == 0 else min(times[n], t)
        sg = min(v for k, v in times.items() if k.startswith("sgemm"))
        line = f"{M}x{K}x{N:<8}" + "".join(f"{times[n] * 1e3:>14.3f}" for n in names)
        line += "".join(f"  {k}: {sg / v:.2f}x" for k, v in times.items() if k.startswith("bf16"))
        print(line + "   cpu/wall: " + " ".join(f"{n}={CPU[n]:.1f}" for n in names))
    if "onednn" in _bf16.available():
        fns, C = contenders(256, 1024, 1024)
        _bf16.set_threads(2)
        fns["bf16-onednn"]()
        c2 = C.copy()
        _bf16.set_threads(1)
        fns["bf16-onednn"]()
        print("oneDNN at 2 TBB threads vs 1: bitwise equal:", np.array_equal(c2, C))


if __name__ == "__main__":
    main()
