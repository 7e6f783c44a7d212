"""fastbp: fast, deterministic backpropagation for dense neural networks.

The hot paths are C kernels (csrc/) called through Cython (fastbp._core) with
the GIL released, on fastbp's own thread pool; every matrix product goes to a
BLAS chosen per machine: the OpenBLAS of the scipy-openblas32 package, or MKL
where it is installed and measures faster (fastbp.set_blas). ``fastbp.reference`` holds a
pure-NumPy twin of every kernel.
"""
__version__ = "0.1.0"


def _no_extension():
    """The ImportError for a source tree without its C extension (PYTHONPATH=src
    before `python setup.py build_ext --inplace`, say), instead of Python's
    "partially initialized module ... circular import"."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    return ImportError(
        f"fastbp's C extension (fastbp._core) is not built in {here}: this looks like a "
        "source tree. Build it in place (python setup.py build_ext --inplace), or, to use "
        "an installed fastbp (pip install .), leave this directory off PYTHONPATH.")


try:
    from . import _core
except ImportError as _e:
    import glob as _glob
    import os as _os

    if not _glob.glob(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "_core*")):
        raise _no_extension() from _e
    raise
from . import _blas  # noqa: E402

_blas.load()

from ._core import (  # noqa: E402
    binary_cross_entropy,
    clip_by_global_norm,
    clip_by_value,
    dense_backward,
    dense_forward,
    get_num_threads,
    global_norm,
    mse_loss,
    poisson_loss,
    set_num_threads,
    sgd_update,
    softmax_cross_entropy,
)
from ._blas import get_blas, set_blas  # noqa: E402
from ._bf16 import get_bf16_provider, set_bf16_provider  # noqa: E402
from ._threadpool import local_threads  # noqa: E402  (also registers the pool with threadpoolctl)
from ._config import show_config  # noqa: E402
from .model import MLP  # noqa: E402
from .gradcheck import gradient_check  # noqa: E402
from . import distributed, layers, ops, optim, reference  # noqa: E402

__all__ = [
    "MLP",
    "distributed",
    "gradient_check",
    "layers",
    "ops",
    "optim",
    "reference",
    "binary_cross_entropy",
    "clip_by_global_norm",
    "clip_by_value",
    "dense_backward",
    "dense_forward",
    "get_blas",
    "get_bf16_provider",
    "get_num_threads",
    "global_norm",
    "local_threads",
    "mse_loss",
    "poisson_loss",
    "set_bf16_provider",
    "set_blas",
    "set_num_threads",
    "sgd_update",
    "show_config",
    "softmax_cross_entropy",
]

# The activations' kernels: the functions each registry entry names (fastbp.ops),
# so that a new activation is exported without a list here to keep in step.
for _name in dict.fromkeys(k for a in ops.ACTIVATIONS.values() for k in a.kernels or ()):
    globals()[_name] = getattr(_core, _name)
    __all__.append(_name)
del _name
