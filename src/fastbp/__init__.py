"""fastbp: fast, deterministic backpropagation for dense neural networks.

The hot paths are C kernels (csrc/) called through Cython (fastbp._core) with
the GIL released; every matrix product goes to the BLAS that SciPy ships.
``fastbp.reference`` holds a pure-NumPy twin of every kernel.
"""
__version__ = "0.1.0"

from ._core import (
    clip_by_global_norm,
    clip_by_value,
    dense_backward,
    dense_forward,
    get_num_threads,
    global_norm,
    has_openmp,
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
from ._config import show_config
from .model import MLP
from .gradcheck import gradient_check
from . import layers, reference
from .blas import get_blas, set_blas

if __import__("os").environ.get("FASTBP_BLAS"):
    set_blas(__import__("os").environ["FASTBP_BLAS"])

__all__ = [
    "MLP",
    "get_blas",
    "gradient_check",
    "layers",
    "reference",
    "clip_by_global_norm",
    "clip_by_value",
    "dense_backward",
    "dense_forward",
    "get_num_threads",
    "global_norm",
    "has_openmp",
    "mse_loss",
    "relu_backward",
    "relu_forward",
    "set_num_threads",
    "set_blas",
    "sgd_update",
    "show_config",
    "sigmoid_backward",
    "sigmoid_forward",
    "softmax_cross_entropy",
    "tanh_backward",
    "tanh_forward",
]
