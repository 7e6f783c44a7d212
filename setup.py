"""Build fastbp._core from src/fastbp/_core.pyx and csrc/*.c.

Flags: -O3, -fopenmp-simd (vectorization hints only: no OpenMP runtime; the
threads are fastbp's own pool), no -march=native and no fast-math. Opt-ins for
source builds only:
  FASTBP_NATIVE=1                    add -march=native (never for wheels)
  FASTBP_SANITIZE=address,undefined  build with ASan/UBSan (see README)
  FASTBP_DEBUG=1                     keep the debug information and symbols
The extension is linked stripped (-Wl,--strip-all where the linker takes it,
-Wl,-S,-x on macOS) unless FASTBP_DEBUG or FASTBP_SANITIZE is set: Python's own
CFLAGS carry -g, which made a 5 MB .so of which 4 MB were debug sections.
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
    """Whether the C compiler builds and links a probe with these flags."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    with tempfile.TemporaryDirectory() as tmp:
        c = os.path.join(tmp, "probe.c")
        with open(c, "w") as f:
            f.write("int main(void){return 0;}\n")
        cmd = cc.split() + [c, "-o", os.path.join(tmp, "probe")] + flags
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


def _extensions():
    # hidden visibility: the extension exports only what fastbp.h marks FBP_API
    cflags = ["-O3", "-Wall", "-Wno-unused-function", "-Wno-unreachable-code",
              "-fvisibility=hidden"]
    lflags = ["-pthread"]
    cflags.append("-pthread")
    # sqrt then never sets errno, so loops that take one vectorize; no result
    # changes (this is not one of fast-math's value-changing flags)
    cflags.append("-fno-math-errno")
    # `omp simd` reductions vectorize with -fopenmp-simd, which needs no runtime:
    # the threads are fastbp's own pool (csrc/threads.c)
    if _compiler_accepts(["-fopenmp-simd"]):
        cflags.append("-fopenmp-simd")
    if _env_flag("FASTBP_NATIVE"):
        cflags.append("-march=native")
    sanitize = os.environ.get("FASTBP_SANITIZE", "").strip()
    if sanitize:
        cflags += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g", "-O1"]
        lflags += [f"-fsanitize={sanitize}"]
    elif not _env_flag("FASTBP_DEBUG"):
        strip = ["-Wl,-S,-x"] if sys.platform == "darwin" else ["-Wl,--strip-all"]
        if _compiler_accepts(strip):
            lflags += strip
    sources = ["src/fastbp/_core.pyx"] + sorted(glob.glob("csrc/*.c"))
    core = Extension(
        "fastbp._core",
        sources=sources,
        # the files _core.pyx includes or cimports: a change to one rebuilds it
        depends=sorted(glob.glob("csrc/*.h") + glob.glob("src/fastbp/*.pxi")
                       + glob.glob("src/fastbp/*.pxd")),
        include_dirs=[np.get_include(), "csrc"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
        extra_compile_args=cflags,
        extra_link_args=lflags,
    )
    return cythonize([core], include_path=["src"], compiler_directives={"language_level": 3})


# The optional CUDA extension (FASTBP_CUDA=1): build_cuda.py, beside this file.
sys.path.insert(0, HERE)
import build_cuda  # noqa: E402

setup(ext_modules=_extensions() + build_cuda.extensions(),
      cmdclass=build_cuda.cmdclass())
