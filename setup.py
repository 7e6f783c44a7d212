"""Build fastbp._core from src/fastbp/_core.pyx and csrc/*.c.

Flags: -O3, OpenMP when the compiler supports it (else one thread), no
-march=native and no fast-math. Opt-ins for source builds only:
  FASTBP_NATIVE=1                    add -march=native (never for wheels)
  FASTBP_OPENMP=0                    build without OpenMP
  FASTBP_SANITIZE=address,undefined  build with ASan/UBSan (see README)
"""
import glob
import os
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _compiler_accepts(flags):
    """Whether the C compiler builds and links an OpenMP probe with flags."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        c = os.path.join(tmp, "probe.c")
        with open(c, "w") as f:
            f.write(src)
        cmd = cc.split() + [c, "-o", os.path.join(tmp, "probe")] + flags
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


def _openmp_flags():
    if os.environ.get("FASTBP_OPENMP", "1").strip() in ("0", "false", "no", "off"):
        return [], []
    if sys.platform == "darwin":  # Apple clang with Homebrew's libomp
        cand = (["-Xpreprocessor", "-fopenmp"], ["-lomp"])
    else:
        cand = (["-fopenmp"], ["-fopenmp"])
    if _compiler_accepts(cand[0] + cand[1]):
        return cand
    print("fastbp: the compiler does not support OpenMP; building single-threaded",
          file=sys.stderr)
    return [], []


def _extensions():
    cflags = ["-O3", "-Wall", "-Wno-unused-function",
              "-Wno-unreachable-code"]
    lflags = []
    omp_c, omp_l = _openmp_flags()
    cflags += omp_c
    lflags += omp_l
    if _env_flag("FASTBP_NATIVE"):
        cflags.append("-march=native")
    sanitize = os.environ.get("FASTBP_SANITIZE", "").strip()
    if sanitize:
        cflags += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g", "-O1"]
        lflags += [f"-fsanitize={sanitize}"]
    sources = ["src/fastbp/_core.pyx"] + sorted(glob.glob("csrc/*.c"))
    core = Extension(
        "fastbp._core",
        sources=sources,
        depends=sorted(glob.glob("csrc/*.h")),
        include_dirs=[np.get_include(), "csrc"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
        extra_compile_args=cflags,
        extra_link_args=lflags,
    )
    return cythonize([core], compiler_directives={"language_level": 3})


setup(ext_modules=_extensions())
