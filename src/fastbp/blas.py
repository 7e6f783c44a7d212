"""Which BLAS fastbp's GEMMs call.

By default every product goes to ``scipy.linalg.cython_blas``: the OpenBLAS that
SciPy ships, as scikit-learn does. ``set_blas("scipy-openblas32")`` (or the
environment variable ``FASTBP_BLAS=scipy-openblas32`` at import) switches to the
OpenBLAS of the ``scipy-openblas32`` package, which is the same library in a
newer release: on the development machine SciPy 1.17.1 ships OpenBLAS 0.3.30,
whose small products run 1.2x slower than those of OpenBLAS 0.3.34
(see docs/performance.md). Both use 32-bit integer dimensions, so nothing else
changes. Results are deterministic either way, but not bitwise equal between
the two libraries.
"""
import ctypes
import os

from . import _core

_active = "scipy"
_lib = None  # keeps the loaded library alive


def available():
    """The BLAS names set_blas accepts here."""
    names = ["scipy"]
    try:
        import scipy_openblas32  # noqa: F401
        names.append("scipy-openblas32")
    except ImportError:
        pass
    return names


def set_blas(name="scipy"):
    """Use the BLAS called name ("scipy" or "scipy-openblas32") for all GEMMs."""
    global _active, _lib
    if name == "scipy":
        _core._set_gemm(0, 0)
        _active, _lib = name, None
        return
    if name != "scipy-openblas32":
        raise ValueError(f"set_blas: unknown BLAS {name!r}; expected 'scipy' or "
                         "'scipy-openblas32'")
    try:
        import scipy_openblas32
    except ImportError:
        raise ValueError("set_blas: 'scipy-openblas32' needs the package of that name: "
                         "pip install scipy-openblas32") from None
    path = os.path.join(scipy_openblas32.get_lib_dir(),
                        f"lib{scipy_openblas32.get_library()}.so")
    if not os.path.exists(path):  # macOS and Windows name it otherwise
        cands = [f for f in os.listdir(scipy_openblas32.get_lib_dir())
                 if f.startswith("lib" + scipy_openblas32.get_library())]
        if not cands:
            raise ValueError(f"set_blas: no library found in {scipy_openblas32.get_lib_dir()}")
        path = os.path.join(scipy_openblas32.get_lib_dir(), cands[0])
    lib = ctypes.CDLL(path)
    prefix = scipy_openblas32.get_symbol_prefix() if hasattr(
        scipy_openblas32, "get_symbol_prefix") else "scipy_"
    sgemm = getattr(lib, f"{prefix}sgemm_")
    dgemm = getattr(lib, f"{prefix}dgemm_")
    _core._set_gemm(ctypes.cast(sgemm, ctypes.c_void_p).value,
                    ctypes.cast(dgemm, ctypes.c_void_p).value)
    _active, _lib = name, (lib, path)


def get_blas():
    """The name of the BLAS in use, and its library file if not SciPy's."""
    return _active if _lib is None else f"{_active} ({_lib[1]})"
