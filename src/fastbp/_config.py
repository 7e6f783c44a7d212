"""fastbp.show_config(): what this build is and what it runs on."""
import sys


def config():
    """The build configuration as a dict (versions, threads, kernels, BLAS)."""
    import numpy as np

    from . import __version__, _bf16, _blas, _core

    return {
        "fastbp": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "threads": _core.get_num_threads(),
        "cpus": _core.cpu_count(),
        "pool": _core.pool_info(),
        "kernels": _core.cpu_dispatch(),
        "blas": _blas.info(),
        "bf16": _bf16.info(),
    }


def show_config():
    """Print the fastbp version, the thread count, the kernel copies and the BLAS."""
    info = config()
    kernels = {"baseline": "portable baseline", "avx2": "AVX2+FMA copies (runtime dispatch)",
               "avx512": "AVX-512 copies (runtime dispatch)"}[info["kernels"]]
    print(f"fastbp {info['fastbp']} (python {info['python']}, numpy {info['numpy']})")
    print(f"  threads: {info['threads']} (fastbp's pool; {info['cpus']} CPUs available, "
          f"{info['pool']['workers']} workers started)")
    print(f"  kernels: {kernels}")
    b = info["blas"]
    print(f"  BLAS:    {b['provider']} ({b['chosen_by']}; installed: "
          f"{', '.join(b['available'])}; FASTBP_BLAS or fastbp.set_blas to choose)")
    print(f"           {b['version']} ({b['threads']} threads)")
    print(f"           {b['library']}")
    f = info["bf16"]
    path = {"onednn": f"oneDNN's bf16 GEMM ({f['version']})",
            "emulated": "emulated (operands rounded to bfloat16, float32 BLAS)"}[f["path"]]
    print(f"  bf16:    matmul_precision='bfloat16' runs {path}; {f['chosen_by']}")
    print(f"           {f['note']}")
