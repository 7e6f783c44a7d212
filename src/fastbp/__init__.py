"""fastbp: fast, deterministic backpropagation for dense neural networks.

The hot paths are C kernels (csrc/) called through Cython (fastbp._core) with
the GIL released, on fastbp's own thread pool; every matrix product goes to a
BLAS chosen per machine: the OpenBLAS of the scipy-openblas32 package, or MKL
where it is installed and measures faster (fastbp.set_blas). ``fastbp.reference`` holds a
pure-NumPy twin of every kernel.
"""
__version__ = "0.1.0"

from . import _blas, _core

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
    relu_backward,
    relu_forward,
    set_num_threads,
    sgd_update,
    sigmoid_backward,
    sigmoid_forward,
    softmax_cross_entropy,
    tanh_backward,
    tanh_forward,
)
from ._blas import get_blas, set_blas  # noqa: E402
from ._bf16 import get_bf16_provider, set_bf16_provider  # noqa: E402
from ._threadpool import local_threads  # noqa: E402  (also registers the pool with threadpoolctl)
from ._config import show_config  # noqa: E402
from .model import MLP  # noqa: E402
from .gradcheck import gradient_check  # noqa: E402
from . import distributed, layers, optim, reference  # noqa: E402

__all__ = [
    "MLP",
    "distributed",
    "gradient_check",
    "layers",
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
    "relu_backward",
    "relu_forward",
    "set_bf16_provider",
    "set_blas",
    "set_num_threads",
    "sgd_update",
    "show_config",
    "sigmoid_backward",
    "sigmoid_forward",
    "softmax_cross_entropy",
    "tanh_backward",
    "tanh_forward",
]
