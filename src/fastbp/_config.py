"""fastbp.show_config(): what this build is and what it runs on."""
import os
import sys


def config():
    """The build configuration as a dict (version, OpenMP, threads, BLAS)."""
    import numpy as np
    import scipy

    from . import __version__, _core

    info = {
        "fastbp": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "openmp": _core.has_openmp(),
        "threads": _core.get_num_threads(),
        "avx2_kernels": _core.cpu_dispatch(),
        "gemm": __import__("fastbp").get_blas(),
        "blas": [],
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return info
    # The BLAS that scipy.linalg.cython_blas calls lives in SciPy's own folders
    # (NumPy may load a second OpenBLAS; it is not ours).
    scipy_dir = os.path.dirname(os.path.abspath(scipy.__file__))
    ours = (scipy_dir + os.sep, scipy_dir + ".libs" + os.sep)
    for pool in threadpool_info():
        path = os.path.abspath(pool.get("filepath", ""))
        if pool.get("user_api") == "blas" and (path.startswith(ours) or
                                               "scipy_openblas32" in path):
            info["blas"].append(
                {k: pool.get(k) for k in ("internal_api", "version", "num_threads",
                                          "threading_layer", "architecture", "filepath")})
    return info


def show_config():
    """Print the fastbp version, whether OpenMP is on, the thread count and the BLAS."""
    info = config()
    print(f"fastbp {info['fastbp']} (python {info['python']}, numpy {info['numpy']}, "
          f"scipy {info['scipy']})")
    print(f"  OpenMP:  {'on' if info['openmp'] else 'off (single-threaded build)'}")
    print(f"  threads: {info['threads']}")
    print(f"  kernels: {'AVX2+FMA copies (runtime dispatch)' if info['avx2_kernels'] else 'baseline x86-64 / portable'}")
    print(f"  GEMM:    {info['gemm']}")
    if not info["blas"]:
        print("  BLAS:    scipy.linalg.cython_blas (install threadpoolctl for details)")
    for b in info["blas"]:
        print(f"  BLAS:    {b['internal_api']} {b['version']} ({b['threading_layer']}, "
              f"{b['num_threads']} threads, {b['architecture']})")
        print(f"           {b['filepath']}")
