"""The BLAS behind every GEMM: the OpenBLAS of the scipy-openblas32 package.

It is the library SciPy's own builds use, as a package of its own, so fastbp
gets a current OpenBLAS whatever SciPy release is installed (SciPy 1.17 ships
0.3.30, whose small products ran 1.2x slower; docs/performance.md). The Fortran
symbols take 32-bit integer dimensions. The library is private to fastbp in
practice (NumPy and SciPy load their own copies). It runs single-threaded:
fastbp splits each GEMM over its own thread pool (csrc/runtime.c), so the
BLAS's pool never runs and never spins (threadpoolctl lists it with 1 thread).
"""
import ctypes
import os

import scipy_openblas32

from . import _core

_lib = None


def _symbol(lib, name):
    for prefix in ("scipy_", ""):  # the package prefixes its symbols with scipy_
        try:
            return getattr(lib, prefix + name)
        except AttributeError:
            continue
    raise ImportError(f"fastbp: {name} not found in {lib._name}")


def load():
    """Load the library and hand its sgemm_/dgemm_ and thread setter to the kernels."""
    global _lib
    path = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(True))
    lib = ctypes.CDLL(path)
    addr = [ctypes.cast(_symbol(lib, n), ctypes.c_void_p).value
            for n in ("sgemm_", "dgemm_", "openblas_get_num_threads", "openblas_set_num_threads")]
    _core._set_gemm(*addr)
    _lib = lib


def info():
    """{"library": path, "version": OpenBLAS's configuration string, "threads": n}."""
    get_config = _symbol(_lib, "openblas_get_config")
    get_config.restype = ctypes.c_char_p
    return {"library": _lib._name, "version": get_config().decode(),
            "threads": _symbol(_lib, "openblas_get_num_threads")()}
