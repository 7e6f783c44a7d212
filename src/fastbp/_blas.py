"""The BLAS behind every GEMM: a provider, loaded at run time and chosen per machine.

Providers (fastbp's own GEMM code never changes with them; only the sgemm_/dgemm_
it calls does):

* ``openblas``: the OpenBLAS of the scipy-openblas32 package, the default and
  always installed. It is the library SciPy's own builds use, as a package of
  its own, so fastbp gets a current OpenBLAS whatever SciPy release is installed.
* ``mkl``: Intel oneMKL from the pip ``mkl`` package (``pip install
  "fastbp[mkl]"``), where it is installed. Loaded with the LP64 interface (32-bit
  integers, as OpenBLAS's), the Intel OpenMP threading layer held at one thread
  inside fastbp's pool, and its conditional-numerical-reproducibility mode on
  (``MKL_CBWR=AUTO``) so that a product's result does not depend on how its
  operands happen to be aligned in memory.

Which one runs: ``FASTBP_BLAS`` (``openblas``, ``mkl`` or ``auto``) at import,
then ``fastbp.set_blas(name)`` at any time. ``auto``, the default, measures the
training-step products of a small and a medium net through each installed
provider (about 0.15 s, once per machine: the choice is kept in the user's cache
folder, keyed by the CPU and the libraries' versions, so that every process on
a machine makes the same choice and gives the same bits) and takes MKL only
where it is at least 5% faster. A bad name is a ValueError from set_blas and a
warning at import (fastbp then uses OpenBLAS): an environment variable never
stops ``import fastbp``.

Each library runs single-threaded: fastbp splits each GEMM over its own thread
pool (csrc/runtime.c), so the BLAS's pool never runs and never spins
(threadpoolctl lists it with 1 thread).
"""
import ctypes
import glob
import json
import os
import platform
import sys
import warnings

from . import _core

NAMES = ("openblas", "mkl")
#: MKL must be this much faster on the step's products to be chosen by "auto".
AUTO_MARGIN = 1.05
#: (batch, widths) whose step products "auto" times: a small and a medium net.
AUTO_NETS = ((32, [784, 100, 10]), (128, [784, 512, 512, 10]))

_loaded = {}      # name -> _Provider, loaded once per process
_state = {"name": None, "chosen_by": None}


class _Provider:
    """A loaded library: its sgemm_/dgemm_ and thread-count functions."""

    def __init__(self, name, lib, addrs, version, get_threads):
        self.name, self.lib, self.addrs = name, lib, addrs
        self.version, self._get_threads = version, get_threads

    def threads(self):
        return self._get_threads()


def _symbol(lib, name):
    for prefix in ("scipy_", ""):  # scipy-openblas32 prefixes its symbols with scipy_
        try:
            return getattr(lib, prefix + name)
        except AttributeError:
            continue
    raise ImportError(f"fastbp: {name} not found in {lib._name}")


def _addr(fn):
    return ctypes.cast(fn, ctypes.c_void_p).value


def _openblas_path():
    import scipy_openblas32

    return os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(True))


def _load_openblas():
    lib = ctypes.CDLL(_openblas_path())
    addrs = [_addr(_symbol(lib, n)) for n in
             ("sgemm_", "dgemm_", "openblas_get_num_threads", "openblas_set_num_threads")]
    get_config = _symbol(lib, "openblas_get_config")
    get_config.restype = ctypes.c_char_p
    return _Provider("openblas", lib, addrs, get_config().decode(),
                     _symbol(lib, "openblas_get_num_threads"))


def _mkl_path():
    """libmkl_rt from the pip mkl package (installed under the environment's lib/),
    or None."""
    try:
        from importlib import metadata
        dist = metadata.distribution("mkl")
    except Exception:
        return None
    for f in dist.files or ():
        if os.path.basename(str(f)).startswith("libmkl_rt.so"):
            path = os.path.realpath(dist.locate_file(f))
            if os.path.exists(path):
                return path
    found = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
    return found[0] if found else None


def _load_mkl():
    path = _mkl_path()
    if path is None:
        raise ImportError('MKL is not installed: pip install "fastbp[mkl]" (the pip mkl package)')
    lib = ctypes.CDLL(path)
    # before any other MKL call: 32-bit integers, OpenMP threads (held at one inside
    # fastbp's pool; the benchmarks' floors raise it), reproducible results
    lib.MKL_Set_Interface_Layer(0)   # MKL_INTERFACE_LP64
    lib.MKL_Set_Threading_Layer(0)   # MKL_THREADING_INTEL
    lib.MKL_CBWR_Set(2)              # MKL_CBWR_AUTO
    buf = ctypes.create_string_buffer(256)
    lib.MKL_Get_Version_String(buf, len(buf))
    lib.MKL_Set_Num_Threads(1)
    # the calling thread's own count, as threadpoolctl sets it, over the global one
    addrs = [_addr(getattr(lib, n)) for n in
             ("sgemm_", "dgemm_", "MKL_Get_Max_Threads", "MKL_Set_Num_Threads_Local")]
    return _Provider("mkl", lib, addrs, buf.value.decode().strip(), lib.MKL_Get_Max_Threads)


_LOADERS = {"openblas": _load_openblas, "mkl": _load_mkl}


def available():
    """The providers installed here, in order of preference for a tie."""
    return [n for n in NAMES if n == "openblas" or (n == "mkl" and _mkl_path())]


def _provider(name):
    if name not in _loaded:
        _loaded[name] = _LOADERS[name]()
    return _loaded[name]


def _activate(name, chosen_by):
    p = _provider(name)
    _core._set_gemm(*p.addrs)
    _state.update(name=name, chosen_by=chosen_by)


def set_blas(name):
    """Route every float32 and float64 product through a BLAS provider:
    "openblas", "mkl" or "auto" (the fastest installed here; see fastbp._blas).
    Results are bitwise reproducible for a given provider and machine, at any
    thread count; two providers differ in the last bits. Not to be called while
    another thread is inside a fastbp call."""
    if not isinstance(name, str) or name.lower() not in NAMES + ("auto",):
        raise ValueError(f"set_blas: expected one of 'openblas', 'mkl', 'auto', got {name!r}")
    name = name.lower()
    if name == "auto":
        _activate(_auto_choice(), "auto")
        return
    if name not in available():
        raise ValueError(f"set_blas: {name!r} is not installed here "
                         f"(installed: {', '.join(available())}); for MKL: "
                         f'pip install "fastbp[mkl]"')
    _activate(name, "set_blas")


def get_blas():
    """The provider every product goes to now ("openblas" or "mkl")."""
    return _state["name"]


def _cache_path():
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "fastbp", "blas-choice.json")


def _cpu_key():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return model


def _auto_choice():
    names = available()
    if len(names) == 1:
        return names[0]
    key = json.dumps([_cpu_key(), os.cpu_count()] + [[n, _provider(n).version] for n in names])
    path = _cache_path()
    try:
        with open(path) as f:
            cached = json.load(f)
        if cached.get("key") == key and cached.get("choice") in names:
            return cached["choice"]
    except (OSError, ValueError, AttributeError):
        pass
    times = measure(names)
    best = min(times, key=lambda n: (times[n], NAMES.index(n)))
    choice = best if best == "openblas" or times["openblas"] >= AUTO_MARGIN * times[best] \
        else "openblas"
    try:  # whole or not at all: another process may read it at the same moment
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"key": key, "choice": choice, "seconds": times}, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: measure again next time
    return choice


def measure(names=None, nets=AUTO_NETS, reps=5, rounds=3):
    """Seconds per step of the AUTO_NETS products (float32 and float64, one BLAS
    thread), summed, through each provider: what "auto" compares. Providers take
    turns in rounds, and each keeps its best round (the first round also pays
    for a library's first calls)."""
    import numpy as np

    current = _state["name"]
    floors = [_core.StepFloor(w, N, dt) for N, w in nets for dt in (np.float32, np.float64)]
    out = {}
    try:
        for _ in range(rounds):
            for n in names or available():
                _core._set_gemm(*_provider(n).addrs)
                floors[0].run(1)  # a library's first call pays for its set-up
                t = sum(f.run(reps) for f in floors)
                out[n] = min(t, out.get(n, t))
    finally:
        if current:
            _core._set_gemm(*_provider(current).addrs)
    return out


def load():
    """At import: the provider FASTBP_BLAS names (default "auto")."""
    want = os.environ.get("FASTBP_BLAS", "auto").strip().lower() or "auto"
    _activate("openblas", "default")
    if want == "openblas":
        return
    try:
        set_blas(want)
        if want != "auto":
            _state["chosen_by"] = "FASTBP_BLAS"
    except (ValueError, ImportError, OSError) as e:
        warnings.warn(f"fastbp: FASTBP_BLAS={os.environ.get('FASTBP_BLAS')!r}: {e}; "
                      f"using OpenBLAS", RuntimeWarning, stacklevel=2)
        _activate("openblas", "default")


def info():
    """{"provider", "chosen_by", "library", "version", "threads", "available"}."""
    p = _provider(_state["name"])
    return {"provider": p.name, "chosen_by": _state["chosen_by"], "library": p.lib._name,
            "version": p.version, "threads": p.threads(), "available": available()}
