"""The optional CUDA extension of fastbp's build (FASTBP_CUDA=1), for setup.py.

Inert unless FASTBP_CUDA=1. Then fastbp._cuda is built from src/fastbp/_cuda.pyx
and csrc/cuda/*.cu: nvcc compiles the .cu files (sm_80, sm_90 and compute_90
PTX), the Cython module is linked to them, the CUDA runtime and cuBLAS. nvcc is
$CUDA_HOME/bin/nvcc (or $CUDA_PATH's), else the one on PATH; headers and
libraries come from that toolkit or from NVIDIA's pip wheels (nvidia-cublas,
nvidia-cuda-runtime: site-packages/nvidia/cu13/..., or nvidia/cublas/... and
nvidia/cuda_runtime/... for CUDA 12), found by themselves. See docs/cuda.md.
"""
import functools
import glob
import os
import subprocess
import sys
import sysconfig

from Cython.Build import cythonize
from setuptools import Extension


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


CUDA_GENCODE = ["-gencode", "arch=compute_80,code=sm_80",
                "-gencode", "arch=compute_90,code=sm_90",
                "-gencode", "arch=compute_90,code=compute_90"]


@functools.lru_cache(maxsize=None)
def _cuda_toolkit():
    """(nvcc, CUDA major version, include dirs, library dirs, link args)."""
    import re
    import shutil
    import site

    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = os.path.join(home, "bin", "nvcc") if home else None
    if not (nvcc and os.path.isfile(nvcc)):
        nvcc = shutil.which("nvcc")
    if nvcc is None:
        sys.exit("FASTBP_CUDA=1: nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    major = int(re.search(r"release (\d+)\.", version).group(1))
    # nvcc reports its real folder (_HERE_), also when PATH has a wrapper script
    dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                         capture_output=True, text=True)
    here = re.search(r"_HERE_=(.*)", dry.stdout + dry.stderr)
    roots = [home, os.path.dirname(here.group(1).strip()) if here else None,
             os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda"]
    # NVIDIA's wheels, in this environment or in the interpreter's own (pip's
    # isolated builds hide the latter from sys.path)
    sites = list(sys.path) + list(getattr(site, "getsitepackages", lambda: [])())
    for base in (sys.prefix, sys.base_prefix):
        for key in ("purelib", "platlib"):
            sites.append(sysconfig.get_path(key, vars={"base": base, "platbase": base}))
    for d in sites:
        for sub in (f"cu{major}", "cublas", "cuda_runtime"):
            roots.append(os.path.join(d or ".", "nvidia", sub))
    roots = [os.path.abspath(r) for r in roots if r and os.path.isdir(r)]
    roots = list(dict.fromkeys(roots))

    def first(subdirs, pattern):
        for r in roots:
            for sd in subdirs:
                hits = sorted(glob.glob(os.path.join(r, sd, pattern)), key=len)
                if hits:
                    return hits[0]
        sys.exit(f"FASTBP_CUDA=1: {pattern} not found under {roots}; install the CUDA "
                 f"toolkit or NVIDIA's wheels (pip install nvidia-cublas nvidia-cuda-runtime)")

    inc = ["include", "targets/x86_64-linux/include", "targets/sbsa-linux/include"]
    libs = ["lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"]
    include_dirs = [os.path.dirname(first(inc, h)) for h in ("cuda_runtime.h", "cublas_v2.h")]
    link_args, library_dirs = [], []
    for name in ("cudart", "cublas"):
        path = first(libs, f"lib{name}.so*")  # the wheels ship only libcublas.so.13
        library_dirs.append(os.path.dirname(path))
        link_args.append(f"-l{name}" if path.endswith(".so") else f"-l:{os.path.basename(path)}")
    library_dirs = list(dict.fromkeys(library_dirs))
    # found at run time: the build's folders, or NVIDIA's wheels beside fastbp
    for sub in (f"cu{major}", "cublas", "cuda_runtime"):
        link_args.append(f"-Wl,-rpath,$ORIGIN/../nvidia/{sub}/lib")
    return nvcc, major, list(dict.fromkeys(include_dirs)), library_dirs, link_args


def extensions():
    """[fastbp._cuda] with FASTBP_CUDA=1, else []."""
    if not _env_flag("FASTBP_CUDA"):
        return []
    _, _, _, library_dirs, link_args = _cuda_toolkit()
    ext = Extension(
        "fastbp._cuda",
        sources=["src/fastbp/_cuda.pyx"] + sorted(glob.glob("csrc/cuda/*.cu")),
        depends=sorted(glob.glob("csrc/cuda/*.h")),
        include_dirs=["csrc/cuda", "csrc"],
        language="c++",
        extra_compile_args=["-O2"],
        library_dirs=library_dirs,
        runtime_library_dirs=library_dirs,
        extra_link_args=link_args,
    )
    return cythonize([ext], include_path=["src"], compiler_directives={"language_level": 3})


def cmdclass():
    """{"build_ext": a build_ext that runs nvcc first} with FASTBP_CUDA=1, else {}."""
    if not _env_flag("FASTBP_CUDA"):
        return {}
    from setuptools.command.build_ext import build_ext

    class build_ext_cuda(build_ext):
        """build_ext that first compiles an extension's .cu sources with nvcc."""

        def build_extension(self, ext):
            cu = [s for s in ext.sources if s.endswith(".cu")]
            if cu:
                ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
                ext.extra_objects = list(ext.extra_objects or []) + [
                    self._nvcc(src, ext) for src in cu]
            super().build_extension(ext)

        def _nvcc(self, src, ext):
            nvcc, _, include_dirs, _, _ = _cuda_toolkit()
            obj = os.path.join(self.build_temp, "cuda", os.path.splitext(src)[0] + ".o")
            deps = [src] + list(ext.depends)
            if not self.force and os.path.exists(obj) and \
                    all(os.path.getmtime(d) <= os.path.getmtime(obj) for d in deps):
                return obj
            os.makedirs(os.path.dirname(obj), exist_ok=True)
            cmd = [nvcc, "-c", src, "-o", obj, "-O3", "-std=c++17", "-Xcompiler", "-fPIC",
                   *CUDA_GENCODE, "-Icsrc/cuda", "-Icsrc"] + [f"-I{d}" for d in include_dirs]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            return obj

    return {"build_ext": build_ext_cuda}


