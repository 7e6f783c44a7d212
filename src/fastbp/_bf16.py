"""bfloat16 matmul precision: which path runs the products, loaded at run time.

``matmul_precision="bfloat16"`` rounds the operands of every matrix product to
bfloat16 (round to nearest, ties to even) and accumulates in float32
(csrc/bf16.c). Two paths give the same numbers up to the order of the float32
accumulation (a product of two bfloat16 values is exact in float32):

* ``onednn``: oneDNN's ``dnnl_gemm_bf16bf16f32`` from the pip ``onednn`` package
  (``pip install "fastbp[onednn]"``), which uses the CPU's bfloat16 hardware
  (AMX-BF16 on Intel Sapphire Rapids and newer, AVX512_BF16 on Intel Cooper
  Lake and AMD Zen 4/5). Loaded with ctypes from the environment's lib/ folder:
  its libraries (TBB, the Intel compiler runtime, SYCL) are opened first by
  absolute path, privately (RTLD_LOCAL, so their libm-like symbols never
  replace anyone's), so no LD_LIBRARY_PATH is needed. oneDNN's threads are
  TBB's; fastbp holds TBB at one thread (a tbb::global_control for the whole
  process) so each block of a product is one single-threaded call on fastbp's
  own pool, as the float32 BLAS is, and no TBB worker ever spins.
* ``emulated``: the operands rounded to bfloat16 values held in float32, then
  the float32 BLAS (fastbp.get_blas()): any CPU, nothing to install, the speed
  of float32 plus the rounding passes.

Which one runs: ``FASTBP_BF16`` (``auto``, ``onednn`` or ``emulated``) when the
first bfloat16 product runs, then ``fastbp.set_bf16_provider(name)``. ``auto``
takes oneDNN where it is installed and the CPU has bfloat16 hardware, else the
emulated path. Why oneDNN and not MKL's ``cblas_gemm_bf16bf16f32``:
docs/bf16.md ("The provider decision").
"""
import ctypes
import glob
import os
import sys
import warnings

from . import _core

NAMES = ("onednn", "emulated")
#: the libraries libdnnl.so.3 needs, opened first in this order (each after its own needs)
_DNNL_DEPS = ("libintlc.so.5", "libimf.so", "libsvml.so", "libirng.so", "libtbb.so.12",
              "libsycl.so.9")
_TBB_CREATE = "_ZN3tbb6detail2r16createERNS0_2d114global_controlE"
_TBB_DESTROY = "_ZN3tbb6detail2r17destroyERNS0_2d114global_controlE"

_state = {"name": None, "chosen_by": None}
_loaded = {}


class _GlobalControl(ctypes.Structure):
    """oneTBB's tbb::global_control (its binary interface, tbb/global_control.h):
    a limit in force from r1::create until r1::destroy; parameter 0 is
    max_allowed_parallelism."""
    _fields_ = [("value", ctypes.c_size_t), ("reserved", ctypes.c_ssize_t),
                ("param", ctypes.c_int)]


class _OneDNN:
    def __init__(self, path):
        folder = os.path.dirname(path)
        self.deps = [ctypes.CDLL(os.path.join(folder, d)) for d in _DNNL_DEPS
                     if os.path.exists(os.path.join(folder, d))]
        self.lib = ctypes.CDLL(path)
        self.tbb = ctypes.CDLL(os.path.join(folder, "libtbb.so.12"))
        self._limit = None
        self.set_threads(1)

        class Version(ctypes.Structure):
            _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int),
                        ("patch", ctypes.c_int), ("hash", ctypes.c_char_p),
                        ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]

        self.lib.dnnl_version.restype = ctypes.POINTER(Version)
        v = self.lib.dnnl_version().contents
        self.version = f"oneDNN {v.major}.{v.minor}.{v.patch}"
        self.path = path
        self.gemm = ctypes.cast(self.lib.dnnl_gemm_bf16bf16f32, ctypes.c_void_p).value

    def set_threads(self, n):
        """TBB's limit for the whole process: 1 inside fastbp (each block of a product
        is one call on fastbp's pool); the benchmarks' floor raises it for a run."""
        create, destroy = getattr(self.tbb, _TBB_CREATE), getattr(self.tbb, _TBB_DESTROY)
        if self._limit is not None:
            destroy(ctypes.byref(self._limit))
        self._limit = _GlobalControl(max(int(n), 1), 0, 0)
        create(ctypes.byref(self._limit))


def hardware():
    """The CPU's bfloat16 matrix hardware: "AMX-BF16", "AVX512_BF16" or None."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if "amx_bf16" in flags:
        return "AMX-BF16"
    if "avx512_bf16" in flags:
        return "AVX512_BF16"
    return None


def _onednn_path():
    """libdnnl.so.3 of the pip onednn package, or None."""
    try:
        from importlib import metadata
        dist = metadata.distribution("onednn")
        for f in dist.files or ():
            if os.path.basename(str(f)) == "libdnnl.so.3":
                path = os.path.realpath(dist.locate_file(f))
                if os.path.exists(path):
                    return path
    except Exception:
        pass
    found = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libdnnl.so.3")))
    return found[0] if found else None


def available():
    """The paths that can run here, in order of preference."""
    return (["onednn"] if _onednn_path() else []) + ["emulated"]


def _provider():
    if "onednn" not in _loaded:
        path = _onednn_path()
        if path is None:
            raise ImportError('oneDNN is not installed: pip install "fastbp[onednn]"')
        _loaded["onednn"] = _OneDNN(path)
    return _loaded["onednn"]


def _activate(name, chosen_by):
    _core._set_gemm_bf16(_provider().gemm if name == "onednn" else 0)
    _state.update(name=name, chosen_by=chosen_by)


def set_bf16_provider(name):
    """The path of bfloat16 products: "onednn" (the CPU's bfloat16 hardware through
    oneDNN, pip install "fastbp[onednn]"), "emulated" (operands rounded to bfloat16
    in float32, then the float32 BLAS) or "auto" (oneDNN where it is installed and
    the CPU has bfloat16 hardware). The two paths agree up to the order of float32
    accumulation; each is bitwise reproducible at any thread count. Not to be
    called while another thread is inside a fastbp call."""
    if not isinstance(name, str) or name.lower() not in NAMES + ("auto",):
        raise ValueError(f"set_bf16_provider: expected one of 'onednn', 'emulated', 'auto', "
                         f"got {name!r}")
    name = name.lower()
    if name == "auto":
        name = "onednn" if hardware() and _onednn_path() else "emulated"
        chosen_by = "auto"
    else:
        chosen_by = "set_bf16_provider"
    if name == "onednn" and not _onednn_path():
        raise ValueError('set_bf16_provider: oneDNN is not installed here: '
                         'pip install "fastbp[onednn]"')
    _activate(name, chosen_by)


def get_bf16_provider():
    """The path bfloat16 products take now: "onednn" or "emulated"."""
    ensure()
    return _state["name"]


def ensure():
    """Before the first bfloat16 product: the path FASTBP_BF16 names (default
    "auto"). A bad name or a failed load is a warning, and the emulated path."""
    if _state["name"] is not None:
        return
    want = os.environ.get("FASTBP_BF16", "auto").strip().lower() or "auto"
    try:
        set_bf16_provider(want)
        if want != "auto":
            _state["chosen_by"] = "FASTBP_BF16"
    except (ValueError, ImportError, OSError, AttributeError) as e:
        warnings.warn(f"fastbp: FASTBP_BF16={want!r}: {e}; using the emulated bfloat16 "
                      "path", RuntimeWarning, stacklevel=3)
        _activate("emulated", "default")


def set_threads(n):
    """oneDNN's (TBB's) thread limit, for the benchmarks' floor; 1 otherwise."""
    if _state["name"] == "onednn":
        _provider().set_threads(n)


def info():
    """{"path", "chosen_by", "hardware", "installed", "library", "version", "note"}:
    what runs bfloat16 products here and, where it is not the hardware, why."""
    ensure()
    hw, name = hardware(), _state["name"]
    out = {"path": name, "chosen_by": _state["chosen_by"], "hardware": hw,
           "installed": _onednn_path() is not None, "library": None, "version": None}
    if name == "onednn":
        p = _provider()
        out.update(library=p.path, version=p.version)
        out["note"] = (f"{hw} through oneDNN" if hw else
                       "oneDNN without bfloat16 hardware: it converts in software, "
                       "likely slower than the emulated path")
    elif hw and not out["installed"]:
        out["note"] = (f'the CPU has {hw}: pip install "fastbp[onednn]" to use it; until '
                       "then bfloat16 runs at float32 speed")
    elif hw:
        out["note"] = (f"the CPU has {hw} and oneDNN is installed, but the emulated path "
                       "was chosen (FASTBP_BF16 or set_bf16_provider)")
    else:
        out["note"] = ("this CPU has no bfloat16 hardware (AMX-BF16 or AVX512_BF16): "
                       "bfloat16 gives the same numbers at float32 speed, not faster")
    return out
