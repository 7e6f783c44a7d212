"""fastbp.cuda: fastbp on CUDA arrays, and an MLP that lives on the GPU.

Optional: the compiled part, fastbp._cuda, exists only in builds made with
``FASTBP_CUDA=1`` (see docs/cuda.md). Importing fastbp never imports it;
``is_available()`` says whether it is built and a device is present.

The functional kernels are fastbp's own functions: ``fastbp.dense_forward`` and
the rest take CUDA arrays (CuPy arrays, PyTorch CUDA tensors, or any object with
``__cuda_array_interface__``) as well as NumPy arrays, with the same checks and
messages, and run where the arrays live (fastbp._core describes an array with
the helpers below and calls the CUDA kernels' table). Under the same names here
they take CUDA arrays only: ``fastbp.cuda.dense_forward`` on a NumPy array raises
TypeError rather than quietly running on the CPU (call ``fastbp.dense_forward``
for that). Nothing is copied to the host; outputs are allocated with
the inputs' library (CuPy or PyTorch) unless given with ``out=``; work runs on
the stream the inputs export (the library's current stream). Losses and norms
come back as Python floats, which synchronizes that stream.

``CudaMLP`` holds an MLP's parameters, gradients and activations in device
memory and runs its whole training step in one call (csrc/cuda/step.cu),
replayed as a CUDA graph once a call repeats. ``MLP(..., device="cuda")`` uses it.
"""
import math
import operator
import sys

import numpy as np

import functools

from . import _core
from ._core import BUFFERS, LOSSES, STEP_FORWARD, STEP_GRAD, STEP_LOSS, STEP_TRAIN  # noqa: F401

_KERNELS = ("clip_by_global_norm", "clip_by_value", "dense_backward", "dense_forward",
            "global_norm", "mse_loss", "relu_backward", "relu_forward", "sgd_update",
            "sigmoid_backward", "sigmoid_forward", "softmax_cross_entropy", "tanh_backward",
            "tanh_forward")


def _device_only(f):
    """fastbp's kernel f, for CUDA arrays only: its first argument (an array, or
    for the norms and clipping a list of arrays) must live on a GPU."""
    @functools.wraps(f)
    def kernel(*args, **kw):
        a = args[0] if args else next(iter(kw.values()), None)
        first = a[0] if isinstance(a, (list, tuple)) and a else a
        if not _on_device(first):
            raise TypeError(
                f"fastbp.cuda.{f.__name__}: expected CUDA arrays (CuPy arrays, PyTorch CUDA "
                f"tensors, objects with __cuda_array_interface__), got "
                f"{type(first).__module__}.{type(first).__name__}; for NumPy arrays call "
                f"fastbp.{f.__name__}, which runs on the CPU")
        return f(*args, **kw)
    return kernel


globals().update({name: _device_only(getattr(_core, name)) for name in _KERNELS})

__all__ = [
    "is_available", "device_count", "CudaMLP", "DeviceBuffer",
    "STEP_FORWARD", "STEP_LOSS", "STEP_GRAD", "STEP_TRAIN",
    "dense_forward", "dense_backward",
    "relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
    "softmax_cross_entropy", "mse_loss",
    "sgd_update", "clip_by_value", "clip_by_global_norm", "global_norm",
]


def _ext():
    """fastbp._cuda, imported on first use."""
    try:
        from . import _cuda
    except ImportError as e:
        raise RuntimeError(
            "fastbp.cuda: the CUDA extension is not available (build fastbp with "
            f"FASTBP_CUDA=1, see docs/cuda.md): {e}") from None
    return _cuda


def is_available():
    """Whether fastbp was built with CUDA and a CUDA device is present. Never raises."""
    try:
        from . import _cuda
        return _cuda.device_count() > 0
    except Exception:
        return False


def device_count():
    """Number of CUDA devices (0 without the extension, a driver or a device)."""
    try:
        from . import _cuda
        return _cuda.device_count()
    except Exception:
        return 0


def backend_capsule():
    """The CUDA kernels' table, for fastbp._core."""
    return _ext().backend_capsule()


# ---- CUDA arrays, for fastbp._core's descriptions ----------------------------------------

def _is_torch(a):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(a, torch.Tensor)


def _is_cupy(a):
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(a, cupy.ndarray)


def _on_device(a):
    """Whether a is a CUDA array (as opposed to NumPy or other host data)."""
    if _is_torch(a):
        return a.is_cuda
    return not isinstance(a, np.ndarray) and hasattr(a, "__cuda_array_interface__")


def _interface(fn, name, a):
    if _is_torch(a):
        if not a.is_cuda:
            raise TypeError(f"{fn}: {name} must be a NumPy or CUDA array, got a CPU "
                            "torch.Tensor (use .numpy())")
        try:
            return a.detach().__cuda_array_interface__
        except (TypeError, RuntimeError) as e:
            raise TypeError(f"{fn}: {name}: {e}") from None
    cai = getattr(a, "__cuda_array_interface__", None)
    if not isinstance(cai, dict):
        raise TypeError(f"{fn}: {name} must be a NumPy or CUDA array (CuPy, PyTorch or "
                        f"__cuda_array_interface__), got {type(a).__name__}")
    return cai


def describe(fn, name, a):
    """(pointer, shape, dtype, C-contiguous and aligned, read-only, device, stream)
    of a CUDA array, from its __cuda_array_interface__. Work on it goes to its
    library's current stream (CuPy, PyTorch) or to the stream it exports."""
    cai = _interface(fn, name, a)
    shape = tuple(int(s) for s in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    ptr, readonly = int(cai["data"][0]), bool(cai["data"][1])
    stream = cai.get("stream")
    stream = 0 if stream in (None, 1) else int(stream)  # 1: the legacy default stream
    strides, expect, c = cai.get("strides"), [], dtype.itemsize
    for s in reversed(shape):
        expect.insert(0, c)
        c *= s
    contig = strides is None or math.prod(shape) == 0 or all(
        n == 1 or s == e for n, s, e in zip(shape, strides, expect))
    contig = contig and ptr % dtype.itemsize == 0
    if _is_cupy(a):
        import cupy
        dev = a.device.id
        with cupy.cuda.Device(dev):
            stream = cupy.cuda.get_current_stream().ptr
    elif _is_torch(a):
        import torch
        dev = a.device.index
        stream = torch.cuda.current_stream(dev).cuda_stream
    elif ptr:
        dev = _ext().pointer_device(ptr)
        if dev < 0:
            raise TypeError(f"{fn}: {name} is not in device memory")
    else:
        dev = 0
    return ptr, shape, dtype, contig, readonly, dev, stream


def dtype_of(a):
    if _is_torch(a):
        return np.dtype(str(a.dtype).replace("torch.", ""))
    return np.dtype(a.__cuda_array_interface__["typestr"])


def contiguous(fn, name, a):
    """A C-contiguous copy of a made on its device by its library."""
    if _is_cupy(a):
        import cupy
        return cupy.ascontiguousarray(a)
    if _is_torch(a):
        return a.contiguous()
    raise ValueError(f"{fn}: {name} must be C-contiguous and aligned")


def empty(fn, like, shape, dtype):
    """A new device array on like's device, from like's library."""
    if _is_torch(like):
        import torch
        tdt = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
               np.dtype(np.int64): torch.int64}[np.dtype(dtype)]
        return torch.empty(shape, dtype=tdt, device=like.device)
    try:
        import cupy
    except ImportError:
        raise TypeError(f"{fn}: allocating an output needs CuPy or PyTorch; pass out=") from None
    dev = like.device.id if _is_cupy(like) else describe(fn, "array", like)[5]
    with cupy.cuda.Device(dev):
        return cupy.empty(shape, dtype)


def as_int64(fn, name, a):
    """Integer labels as a C-contiguous int64 device array (converted on the device)."""
    if _is_cupy(a):
        import cupy
        return cupy.ascontiguousarray(a.astype(cupy.int64))
    if _is_torch(a):
        import torch
        return a.to(torch.int64).contiguous()
    raise TypeError(f"{fn}: {name} must be C-contiguous int64 labels, got {dtype_of(a)}")


# ---- the MLP on the device -------------------------------------------------------------------

class DeviceBuffer:
    """A C-contiguous array in memory owned by a CudaMLP, exported through
    ``__cuda_array_interface__``: ``cupy.asarray(buf)`` or
    ``torch.as_tensor(buf, device="cuda")`` view it without a copy. ``get()``
    copies it to a new NumPy array, ``set(a)`` copies a host or device array of
    its shape and dtype into it. It keeps the memory's owner (the CudaMLP's
    workspace) alive."""
    __slots__ = ("_owner", "ptr", "shape", "dtype", "device")

    def __init__(self, owner, ptr, shape, dtype, device):
        self._owner, self.ptr, self.shape = owner, int(ptr), tuple(shape)
        self.dtype, self.device = np.dtype(dtype), device

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False),
                "strides": None, "version": 3, "stream": None}

    @property
    def nbytes(self):
        return math.prod(self.shape) * self.dtype.itemsize

    def __repr__(self):
        return f"DeviceBuffer(shape={self.shape}, dtype={self.dtype}, device={self.device})"

    def get(self):
        out = np.empty(self.shape, self.dtype)
        _ext().memcpy(self.device, None, out.ctypes.data, self.ptr, self.nbytes)
        return out

    def set(self, a):
        fn = "DeviceBuffer.set"
        if not _on_device(a):
            src = np.ascontiguousarray(a)
            ptr, dt, shape = src.ctypes.data, src.dtype, src.shape
        else:
            ptr, shape, dt, contig, _, _, _ = describe(fn, "a", a)
            if not contig:
                a = contiguous(fn, "a", a)
                ptr = describe(fn, "a", a)[0]
        if dt != self.dtype:
            raise TypeError(f"{fn}: dtype {dt}, expected {self.dtype}")
        if tuple(shape) != self.shape:
            raise ValueError(f"{fn}: shape {tuple(shape)}, expected {self.shape}")
        _ext().memcpy(self.device, None, self.ptr, ptr, self.nbytes)


class CudaMLP:
    """An MLP's parameters, gradients and activations in device memory, and its
    training step as one call (csrc/cuda/step.cu, mirroring csrc/step.c).

    W, b: per layer, W[l] (sizes[l], sizes[l+1]) and b[l] (sizes[l+1],), NumPy
    or CUDA arrays of one float dtype; they are copied in. activation: the hidden
    layers' ("relu", "sigmoid", "tanh", "identity"; the output layer is
    affine), or one per layer. loss: "softmax_cross_entropy" or "mse". cap:
    the largest batch. device: CUDA device id (default: the first array's
    device, else 0). graph: replay the step as a CUDA graph once the same call
    (rows, options, labels or targets) repeats; None means yes for nets up to 64M
    parameters.

    Device buffers (DeviceBuffer lists, zero-copy through
    __cuda_array_interface__): W, b, dW, db, vW, vb (momentum, None until a step
    uses momentum), h, dh (cap rows; h[-1] holds the logits of the last step).
    """

    def __init__(self, W, b, activation="relu", loss="softmax_cross_entropy", cap=1, *,
                 device=None, graph=None):
        fn = "CudaMLP"
        W = [a if _on_device(a) else np.asarray(a) for a in W]
        b = [a if _on_device(a) else np.asarray(a) for a in b]
        sizes, acts, dt = _core._check_mlp(fn, W, b, activation, loss, cap, "cuda_step")
        cap = operator.index(cap)
        if device is None:
            device = 0 if isinstance(W[0], np.ndarray) else describe(fn, "W[0]", W[0])[5]
        if graph is None:
            graph = sum(i * o for i, o in zip(sizes[:-1], sizes[1:])) <= 64 << 20
        self.sizes, self.dtype, self.cap, self.device = tuple(sizes), dt, cap, int(device)
        self.activation, self.loss_name, self.graph = activation, loss, bool(graph)
        self._ws = _ext().Workspace(self.device, dt, self.sizes, acts, LOSSES[loss], cap,
                                    self.graph)
        self._views()
        self.set_params(W, b)

    def _views(self):
        ws, L, s, dt, dev = self._ws, self.n_layers, self.sizes, self.dtype, self.device
        shapes = {"W": lambda l: (s[l], s[l + 1]), "b": lambda l: (s[l + 1],),
                  "dW": lambda l: (s[l], s[l + 1]), "db": lambda l: (s[l + 1],),
                  "vW": lambda l: (s[l], s[l + 1]), "vb": lambda l: (s[l + 1],),
                  "h": lambda l: (self.cap, s[l + 1]), "dh": lambda l: (self.cap, s[l + 1])}
        for code, name in enumerate(BUFFERS):
            if name not in shapes:  # Adam's moments, dropout's outputs: not on the GPU
                continue
            ptrs = [ws.buffer(code, l) for l in range(L)]
            group = [DeviceBuffer(ws, p, shapes[name](l), dt, dev) for l, p in enumerate(ptrs)]
            setattr(self, name, group if all(ptrs) else None)

    @property
    def n_layers(self):
        return len(self.sizes) - 1

    def set_params(self, W, b):
        """Copy W[l], b[l] (NumPy or CUDA arrays) into the device parameters."""
        for l in range(self.n_layers):
            self.W[l].set(W[l])
            self.b[l].set(b[l])

    def get_params(self):
        """(W list, b list) as new NumPy arrays."""
        return [w.get() for w in self.W], [v.get() for v in self.b]

    def reset_momentum(self):
        self._ws.reset_momentum(0)

    def grow(self, cap):
        """A CudaMLP for batches of up to cap rows with this one's parameters
        and momentum (copied on the device)."""
        new = CudaMLP(self.W, self.b, self.activation, self.loss_name, cap, device=self.device,
                      graph=self.graph)
        if self.vW is not None:
            new._ws.alloc_momentum(0)
            new._views()
            for l in range(self.n_layers):
                new.vW[l].set(self.vW[l])
                new.vb[l].set(self.vb[l])
        return new

    def output(self, N):
        """h[L-1][:N] (logits or predictions of the last step) as a DeviceBuffer."""
        h = self.h[-1]
        return DeviceBuffer(self._ws, h.ptr, (N, self.sizes[-1]), self.dtype, self.device)

    def stats(self):
        """{"eager": steps run launch by launch, "captured": graphs made,
        "replayed": steps run as a graph}."""
        return self._ws.stats()

    def step(self, x, target, mode=STEP_TRAIN, lr=0.0, weight_decay=0.0, clip_norm=0.0,
             momentum=0.0, count_correct=False, *, check_labels=True, sync=True, stream=None):
        """One native call: forward, loss, backward and (mode STEP_TRAIN) the update,
        through fastbp._core.mlp_step (the CPU step's checks and messages).

        x (N, I) with N <= cap; target: integer labels (N,) for softmax-xent or
        float targets (N, outputs); NumPy or CUDA arrays (copied into the
        workspace's staging buffers). Labels are range-checked first, where they
        live (check_labels=False skips it for labels already checked). Returns
        (loss, grad_norm, ncorrect) as the CPU step (grad_norm -1.0 unless
        clipping ran); with sync=False returns None at once and read_out() gives
        them later. stream: a cudaStream_t as an int (default: the stream x
        exports, or the legacy default stream).
        """
        had_momentum = self.vW is not None
        opts = _core.StepOptions(mode, "SGD", lr, weight_decay, momentum, clip_norm=clip_norm,
                                 count_correct=count_correct)
        out = _core.mlp_step(self._ws, x, target, opts, check_labels=check_labels, sync=sync,
                             stream=stream)
        if not had_momentum and momentum != 0.0:
            self._views()
        return None if out is None else (out[0] + out[1], out[2], out[3])

    def run(self, x, target, opts, sample_weight=None):
        """One step with prepared fastbp._core.StepOptions (the MLP engine's
        call): (loss, reg, grad_norm, ncorrect). Options the GPU step lacks raise
        NotImplementedError naming them."""
        had_momentum = self.vW is not None
        out = _core.mlp_step(self._ws, x, target, opts, sample_weight)
        if not had_momentum and opts.momentum != 0.0:
            self._views()
        return out

    def read_out(self, stream=0):
        """Wait for the last step on stream; its (loss, grad_norm, ncorrect)."""
        loss, reg, norm, hits = self._ws.read_out(stream)
        return loss + reg, norm, hits
