"""fastbp.cuda: fastbp's kernels on CUDA arrays, and an MLP that lives on the GPU.

Optional: the compiled part, fastbp._cuda, exists only in builds made with
``FASTBP_CUDA=1`` (see docs/cuda.md). Importing this module never imports it;
``is_available()`` says whether it is built and a device is present.

The functional kernels have the names, arguments, checks and error messages of
fastbp's CPU kernels, and take CUDA arrays instead of NumPy arrays: CuPy
arrays, PyTorch CUDA tensors, or any object with ``__cuda_array_interface__``.
Nothing is copied to the host. Outputs are allocated with the inputs' library
(CuPy or PyTorch) unless given with ``out=``; work runs on the stream the
inputs export (the library's current stream). Losses and norms come back as
Python floats, which synchronizes that stream.

``CudaMLP`` holds an MLP's parameters, gradients and activations in device
memory and runs its whole training step (forward, fused loss, backward,
clipping, SGD or momentum) in one call, replayed as a CUDA graph once a call
repeats.
"""
import math
import operator
import sys

import numpy as np

__all__ = [
    "is_available", "device_count", "CudaMLP", "DeviceBuffer",
    "STEP_FORWARD", "STEP_LOSS", "STEP_GRAD", "STEP_TRAIN",
    "dense_forward", "dense_backward",
    "relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
    "softmax_cross_entropy", "mse_loss",
    "sgd_update", "clip_by_value", "clip_by_global_norm", "global_norm",
]

STEP_FORWARD, STEP_LOSS, STEP_GRAD, STEP_TRAIN = 0, 1, 2, 3
ACTIVATIONS = {None: 0, "relu": 1, "sigmoid": 2, "tanh": 3}
LOSSES = {"softmax_cross_entropy": 0, "mse": 1}
BLAS_INT_MAX = 2**31 - 1


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


# ---- CUDA arrays ---------------------------------------------------------------------

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


class _View:
    """A CUDA array seen through __cuda_array_interface__."""
    __slots__ = ("obj", "shape", "dtype", "ptr", "dev", "contiguous", "readonly", "stream")

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return math.prod(self.shape)

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize


def _view(fn, name, a):
    """The _View of a CUDA array, or TypeError."""
    if _is_torch(a):
        if not a.is_cuda:
            raise TypeError(f"{fn}: {name} must be a CUDA array, got a CPU torch.Tensor")
        try:
            cai = a.detach().__cuda_array_interface__
        except (TypeError, RuntimeError) as e:
            raise TypeError(f"{fn}: {name}: {e}") from None
    else:
        cai = getattr(a, "__cuda_array_interface__", None)
        if not isinstance(cai, dict):
            raise TypeError(
                f"{fn}: {name} must be a CUDA array (CuPy, PyTorch or __cuda_array_interface__), "
                f"got {type(a).__name__}")
    v = _View()
    v.obj = a
    v.shape = tuple(int(s) for s in cai["shape"])
    v.dtype = np.dtype(cai["typestr"])
    v.ptr, v.readonly = int(cai["data"][0]), bool(cai["data"][1])
    stream = cai.get("stream")
    v.stream = 0 if stream in (None, 1) else int(stream)  # 1: the legacy default stream
    strides, expect, c = cai.get("strides"), [], v.dtype.itemsize
    for s in reversed(v.shape):
        expect.insert(0, c)
        c *= s
    v.contiguous = strides is None or v.size == 0 or all(
        n == 1 or s == e for n, s, e in zip(v.shape, strides, expect))
    v.contiguous = v.contiguous and v.ptr % v.dtype.itemsize == 0
    if _is_cupy(a):  # work goes to the library's current stream
        import cupy
        v.dev = a.device.id
        with cupy.cuda.Device(v.dev):
            v.stream = cupy.cuda.get_current_stream().ptr
    elif _is_torch(a):
        import torch
        v.dev = a.device.index
        v.stream = torch.cuda.current_stream(v.dev).cuda_stream
    elif v.ptr:
        v.dev = _ext().pointer_device(v.ptr)
        if v.dev < 0:
            raise TypeError(f"{fn}: {name} is not in device memory")
    else:
        v.dev = 0
    return v


def _contiguous(fn, name, v):
    """v, or a C-contiguous copy on the device made by its library."""
    if v.contiguous:
        return v
    if _is_cupy(v.obj):
        import cupy
        return _view(fn, name, cupy.ascontiguousarray(v.obj))
    if _is_torch(v.obj):
        return _view(fn, name, v.obj.contiguous())
    raise ValueError(f"{fn}: {name} must be C-contiguous and aligned")


def _float_input(fn, name, a, ndim=None, dtype=None):
    """a as a C-contiguous float32/float64 device array (copied on the device if needed)."""
    return _contiguous(fn, name, _check_float(fn, name, _view(fn, name, a), ndim, dtype))


def _check_float(fn, name, v, ndim=None, dtype=None):
    dt = v.dtype
    if dt.kind != "f" or dt.itemsize not in (4, 8):
        raise TypeError(f"{fn}: {name} must be a float32 or float64 array, got dtype {dt}")
    if not dt.isnative:
        raise TypeError(f"{fn}: {name} must be native-endian, got dtype {dt}")
    if dtype is not None and dt != dtype:
        raise TypeError(
            f"{fn}: {name} has dtype {dt} but the inputs are {np.dtype(dtype)}; "
            "fastbp never casts silently, convert it with .astype()")
    if ndim is not None and v.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D, got {v.ndim}-D array of shape {v.shape}")
    return v


def _empty(fn, like, shape, dtype):
    """A new device array on like's device, from like's library."""
    if _is_torch(like.obj):
        import torch
        tdt = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
               np.dtype(np.int64): torch.int64}[np.dtype(dtype)]
        return torch.empty(shape, dtype=tdt, device=like.obj.device)
    try:
        import cupy
    except ImportError:
        raise TypeError(f"{fn}: allocating an output needs CuPy or PyTorch; pass out=") from None
    with cupy.cuda.Device(like.dev):
        return cupy.empty(shape, dtype)


def _scratch(fn, like, n, dtype=np.float64):
    return _view(fn, "scratch", _empty(fn, like, (int(n),), dtype))


def _writable_contiguous(fn, name, v):
    if not v.contiguous:
        raise ValueError(f"{fn}: {name} must be C-contiguous and aligned to be written in place")
    if v.readonly:
        raise ValueError(f"{fn}: {name} is read-only")


def _out_buffer(fn, name, out, shape, dtype, like):
    """A caller's output buffer (checked), or a new one; returns (object, view)."""
    if out is None:
        out = _empty(fn, like, tuple(shape), dtype)
        return out, _view(fn, name, out)
    try:
        v = _view(fn, name, out)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be a CUDA array, got {type(out).__name__}") from None
    if v.dtype != dtype:
        raise TypeError(f"{fn}: {name} must have dtype {np.dtype(dtype)}, got {v.dtype}")
    if v.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {v.shape}")
    _writable_contiguous(fn, name, v)
    return out, v


def _same_device(fn, views):
    views = [(n, v) for n, v in views if v is not None]
    dev = views[0][1].dev
    for n, v in views[1:]:
        if v.dev != dev:
            raise ValueError(f"{fn}: {n} is on device {v.dev}, {views[0][0]} on device {dev}")


def _no_overlap(fn, out_name, out, inputs, allow_same=()):
    """out must not share memory with the inputs, except starting at the same
    address as one of allow_same (the kernels that may run in place)."""
    for name, a in inputs:
        if a is None or a.nbytes == 0 or out.nbytes == 0:
            continue
        if any(a is s for s in allow_same) and a.ptr == out.ptr:
            continue
        if a.ptr < out.ptr + out.nbytes and out.ptr < a.ptr + a.nbytes:
            raise ValueError(f"{fn}: {out_name} overlaps {name} in memory")


def _check_blas_dims(fn, dims):
    for name, d in dims:
        if d > BLAS_INT_MAX:
            raise ValueError(
                f"{fn}: {name} = {d} exceeds the BLAS 32-bit dimension limit {BLAS_INT_MAX}")


def _real(fn, name, v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(v).__name__}")
    return float(v)


def _act_code(fn, activation):
    try:
        return ACTIVATIONS[activation]
    except (KeyError, TypeError):
        raise ValueError(
            f"{fn}: unknown activation {activation!r}; expected one of "
            "None, 'relu', 'sigmoid', 'tanh'") from None


def _ptr(v):
    return None if v is None else v.ptr


# ---- activations ------------------------------------------------------------------------

def _act_forward(fn, act, x, out):
    x = _float_input(fn, "x", x)
    out, o = _out_buffer(fn, "out", out, x.shape, x.dtype, x)
    _same_device(fn, [("x", x), ("out", o)])
    _no_overlap(fn, "out", o, [("x", x)], allow_same=(x,))
    _ext().act_forward(x.dev, x.stream, x.dtype.itemsize, x.size, act, x.ptr, o.ptr)
    return out


def _act_backward(fn, act, dy, y, out):
    dy = _float_input(fn, "dy", dy)
    y = _float_input(fn, "y", y, dtype=dy.dtype)
    if y.shape != dy.shape:
        raise ValueError(f"{fn}: dy and y must have the same shape, got {dy.shape} and {y.shape}")
    out, o = _out_buffer(fn, "out", out, dy.shape, dy.dtype, dy)
    _same_device(fn, [("dy", dy), ("y", y), ("out", o)])
    _no_overlap(fn, "out", o, [("dy", dy), ("y", y)], allow_same=(dy, y))
    _ext().act_backward(dy.dev, dy.stream, dy.dtype.itemsize, dy.size, act, dy.ptr, y.ptr, o.ptr)
    return out


def relu_forward(x, out=None):
    """y = max(x, 0), NaN propagating. ``out`` may be ``x`` (in place)."""
    return _act_forward("relu_forward", 1, x, out)


def relu_backward(dy, y, out=None):
    """dx = dy * (y > 0), y the forward output (gradient 0 at 0)."""
    return _act_backward("relu_backward", 1, dy, y, out)


def sigmoid_forward(x, out=None):
    """y = 1 / (1 + exp(-x)). ``out`` may be ``x`` (in place)."""
    return _act_forward("sigmoid_forward", 2, x, out)


def sigmoid_backward(dy, y, out=None):
    """dx = dy * y * (1 - y), y the forward output."""
    return _act_backward("sigmoid_backward", 2, dy, y, out)


def tanh_forward(x, out=None):
    """y = tanh(x). ``out`` may be ``x`` (in place)."""
    return _act_forward("tanh_forward", 3, x, out)


def tanh_backward(dy, y, out=None):
    """dx = dy * (1 - y**2), y the forward output."""
    return _act_backward("tanh_backward", 3, dy, y, out)


# ---- dense layer -----------------------------------------------------------------------

def dense_forward(x, W, b, activation=None, out=None):
    """y = act(x @ W + b) with x (N, I), W (I, O), b (O,) or None -> y (N, O).

    One cuBLAS GEMM, then bias and activation in one fused kernel.
    """
    fn = "dense_forward"
    act = _act_code(fn, activation)
    x = _float_input(fn, "x", x, ndim=2)
    W = _float_input(fn, "W", W, ndim=2, dtype=x.dtype)
    if b is not None:
        b = _float_input(fn, "b", b, ndim=1, dtype=x.dtype)
    (N, I), O = x.shape, W.shape[1]
    if W.shape[0] != I:
        raise ValueError(f"{fn}: shapes {x.shape} (x) and {W.shape} (W) not aligned: "
                         f"{I} (dim 1) != {W.shape[0]} (dim 0)")
    if b is not None and b.shape[0] != O:
        raise ValueError(f"{fn}: b must have shape ({O},) to match W {W.shape}, got {b.shape}")
    _check_blas_dims(fn, [("N", N), ("I", I), ("O", O)])
    out, y = _out_buffer(fn, "out", out, (N, O), x.dtype, x)
    _same_device(fn, [("x", x), ("W", W), ("b", b), ("out", y)])
    _no_overlap(fn, "out", y, [("x", x), ("W", W), ("b", b)])
    _ext().dense_forward(x.dev, x.stream, x.dtype.itemsize, N, I, O, x.ptr, W.ptr, _ptr(b), act,
                         y.ptr)
    return out


def dense_backward(dy, x, W, y=None, activation=None, *, dx=None, dW=None, db=None,
                   dz=None, accumulate=False, need_dx=True):
    """Backward of dense_forward; returns (dx, dW, db), as fastbp.dense_backward.

    dy, y (N, O) with y the forward output (needed unless activation is None),
    x (N, I), W (I, O). dz = dy * act'(y) is formed in the kernel that sums
    db = dz.sum(0) (column blocks, rows in a fixed order: no atomics); then
    dx = dz @ W.T and dW = x.T @ dz through cuBLAS.
    """
    fn = "dense_backward"
    act = _act_code(fn, activation)
    dy = _float_input(fn, "dy", dy, ndim=2)
    x = _float_input(fn, "x", x, ndim=2, dtype=dy.dtype)
    W = _float_input(fn, "W", W, ndim=2, dtype=dy.dtype)
    (N, I), O = x.shape, W.shape[1]
    if W.shape[0] != I:
        raise ValueError(f"{fn}: shapes {x.shape} (x) and {W.shape} (W) not aligned: "
                         f"{I} (dim 1) != {W.shape[0]} (dim 0)")
    if dy.shape != (N, O):
        raise ValueError(f"{fn}: dy must have shape {(N, O)} (x rows, W columns), got {dy.shape}")
    if act:
        if y is None:
            raise ValueError(f"{fn}: y (the forward output) is required with activation {activation!r}")
        y = _float_input(fn, "y", y, ndim=2, dtype=dy.dtype)
        if y.shape != dy.shape:
            raise ValueError(f"{fn}: y must have the shape of dy {dy.shape}, got {y.shape}")
    else:
        y = None
    _check_blas_dims(fn, [("N", N), ("I", I), ("O", O)])
    accumulate = bool(accumulate)
    if accumulate and (dW is None or db is None):
        raise ValueError(f"{fn}: accumulate=True needs the dW and db buffers to add into")
    dt = dy.dtype
    dW, vdW = _out_buffer(fn, "dW", dW, (I, O), dt, dy)
    db, vdb = _out_buffer(fn, "db", db, (O,), dt, dy)
    vdx = None
    if need_dx:
        dx, vdx = _out_buffer(fn, "dx", dx, (N, I), dt, dy)
    elif dx is not None:
        raise ValueError(f"{fn}: dx given with need_dx=False")
    vdz = None
    if act:
        dz, vdz = _out_buffer(fn, "dz", dz, (N, O), dt, dy)
    _same_device(fn, [("dy", dy), ("x", x), ("W", W), ("y", y), ("dW", vdW), ("db", vdb),
                      ("dx", vdx), ("dz", vdz)])
    ins = [("dy", dy), ("x", x), ("W", W), ("y", y)]
    _no_overlap(fn, "dW", vdW, ins + [("db", vdb), ("dx", vdx), ("dz", vdz)])
    _no_overlap(fn, "db", vdb, ins + [("dx", vdx), ("dz", vdz)])
    if vdx is not None:
        _no_overlap(fn, "dx", vdx, ins + [("dz", vdz)])
    if vdz is not None:
        _no_overlap(fn, "dz", vdz, ins, allow_same=(dy,))
    _ext().dense_backward(dy.dev, dy.stream, dt.itemsize, N, I, O, dy.ptr, x.ptr, W.ptr, _ptr(y),
                          act, _ptr(vdz), _ptr(vdx), vdW.ptr, vdb.ptr, int(accumulate))
    return (dx if need_dx else None), dW, db


# ---- losses ----------------------------------------------------------------------------

def _as_int64(fn, name, v):
    """Integer labels as a C-contiguous int64 device array (converted on the device)."""
    if v.dtype == np.int64 and v.contiguous:
        return v
    if _is_cupy(v.obj):
        import cupy
        return _view(fn, name, cupy.ascontiguousarray(v.obj.astype(cupy.int64)))
    if _is_torch(v.obj):
        import torch
        return _view(fn, name, v.obj.to(torch.int64).contiguous())
    raise TypeError(f"{fn}: {name} must be C-contiguous int64 labels, got {v.dtype}")


def _labels(fn, target, N, C):
    """Integer labels (N,) of any integer dtype, range-checked on the device, as int64."""
    t = _view(fn, "target", target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{fn}: 1-D targets must be integer class labels, got dtype {t.dtype}")
    if t.shape[0] != N:
        raise ValueError(f"{fn}: got {t.shape[0]} labels for {N} rows of logits")
    t = _as_int64(fn, "target", t)
    if N:
        lo, hi, _, _ = _ext().check_labels(t.dev, t.stream, N, t.ptr, C,
                                           _scratch(fn, t, 4, np.int64).ptr)
        if lo < 0 or hi >= C:
            raise ValueError(f"{fn}: labels must be in [0, {C}), got values in [{lo}, {hi}]")
    return t


def softmax_cross_entropy(logits, target, out=None):
    """Fused softmax + cross-entropy: returns (loss, dlogits), as the CPU kernel.

    logits (N, C); target is integer labels (N,) in [0, C) (checked on the
    device before any other launch) or class probabilities (N, C). One block per
    row computes the loss and writes the gradient; per-row losses are summed in
    a fixed order. ``out`` may be ``logits`` itself.
    """
    fn = "softmax_cross_entropy"
    z = _float_input(fn, "logits", logits, ndim=2)
    N, C = z.shape
    if C == 0 and N > 0:
        raise ValueError(f"{fn}: logits must have at least one class, got shape {z.shape}")
    tv = _view(fn, "target", target)
    if tv.ndim == 1:
        t, labels = _labels(fn, target, N, C), True
    elif tv.ndim == 2:
        t, labels = _float_input(fn, "target", target, dtype=z.dtype), False
        if t.shape != z.shape:
            raise ValueError(f"{fn}: probability targets must have the logits' shape {z.shape}, "
                             f"got {t.shape}")
    else:
        raise ValueError(f"{fn}: target must be labels (N,) or probabilities (N, C), "
                         f"got {tv.ndim}-D array of shape {tv.shape}")
    out, o = _out_buffer(fn, "out", out, z.shape, z.dtype, z)
    _same_device(fn, [("logits", z), ("target", t), ("out", o)])
    _no_overlap(fn, "out", o, [("logits", z), ("target", t)], allow_same=(z,))
    if N == 0:
        return float("nan"), out
    scratch = _scratch(fn, z, _ext().scratch_doubles(N, 1))
    loss = _ext().softmax_xent(z.dev, z.stream, z.dtype.itemsize, N, C, z.ptr,
                               t.ptr if labels else None, None if labels else t.ptr, o.ptr,
                               scratch.ptr)
    return loss, out


def mse_loss(pred, target, out=None):
    """Mean squared error: returns (loss, dpred), as the CPU kernel.

    pred, target (N, ...) of one dtype; loss = 0.5 * sum((pred - target)**2) / N,
    dpred = (pred - target) / N. ``out`` may be ``pred`` itself.
    """
    fn = "mse_loss"
    y = _float_input(fn, "pred", pred)
    if y.ndim == 0:
        raise ValueError(f"{fn}: pred must have a batch dimension, got a 0-D array")
    t = _float_input(fn, "target", target, dtype=y.dtype)
    if t.shape != y.shape:
        raise ValueError(f"{fn}: target must have the shape of pred {y.shape}, got {t.shape}")
    out, o = _out_buffer(fn, "out", out, y.shape, y.dtype, y)
    _same_device(fn, [("pred", y), ("target", t), ("out", o)])
    _no_overlap(fn, "out", o, [("pred", y), ("target", t)], allow_same=(y, t))
    N = y.shape[0]
    if N == 0:
        return float("nan"), out
    scratch = _scratch(fn, y, _ext().scratch_doubles(0, 1))
    loss = _ext().mse(y.dev, y.stream, y.dtype.itemsize, N, y.size // N, y.ptr, t.ptr, o.ptr,
                      scratch.ptr)
    return loss, out


# ---- optimizer and clipping -------------------------------------------------------------

def sgd_update(param, grad, lr, weight_decay=0.0):
    """In place: param -= lr * (grad + weight_decay * param). Returns param."""
    fn = "sgd_update"
    try:
        p = _view(fn, "param", param)
    except TypeError:
        raise TypeError(f"{fn}: param must be a CUDA array (updated in place), "
                        f"got {type(param).__name__}") from None
    _check_float(fn, "param", p)
    if not p.contiguous:
        raise ValueError(f"{fn}: param must be C-contiguous, aligned and native-endian "
                         "to be updated in place")
    _writable_contiguous(fn, "param", p)
    g = _float_input(fn, "grad", grad, dtype=p.dtype)
    if g.shape != p.shape:
        raise ValueError(f"{fn}: grad must have the shape of param {p.shape}, got {g.shape}")
    _same_device(fn, [("param", p), ("grad", g)])
    _no_overlap(fn, "param", p, [("grad", g)])
    lr, wd = _real(fn, "lr", lr), _real(fn, "weight_decay", weight_decay)
    _ext().sgd(p.dev, p.stream, p.dtype.itemsize, p.size, p.ptr, g.ptr, lr, wd)
    return param


def _grad_list(fn, grads):
    if _on_device(grads) or _is_torch(grads):
        grads = [grads]
    elif isinstance(grads, dict):
        grads = list(grads.values())
    else:
        try:
            grads = list(grads)
        except TypeError:
            raise TypeError(f"{fn}: grads must be a list of arrays, got {type(grads).__name__}") from None
    out = []
    for i, g in enumerate(grads):
        name = f"grads[{i}]"
        try:
            v = _view(fn, name, g)
        except TypeError:
            raise TypeError(f"{fn}: {name} must be a CUDA array (clipped in place), "
                            f"got {type(g).__name__}") from None
        if v.dtype != np.float32 and v.dtype != np.float64:
            raise TypeError(f"{fn}: {name} must be float32 or float64, got dtype {v.dtype}")
        _writable_contiguous(fn, name, v)
        out.append(v)
    if out:
        _same_device(fn, [(f"grads[{i}]", v) for i, v in enumerate(out)])
    return out


def clip_by_value(grads, limit):
    """Clip every array of grads in place to [-limit, limit] (NaN stays NaN)."""
    fn = "clip_by_value"
    lim = _real(fn, "limit", limit)
    if not lim >= 0:
        raise ValueError(f"{fn}: limit must be >= 0, got {limit}")
    for g in _grad_list(fn, grads):
        _ext().clip_value(g.dev, g.stream, g.dtype.itemsize, g.size, g.ptr, lim)


def _sumsq_many(fn, gs, div=0.0, maxabs=False):
    g0 = gs[0]
    scratch = _scratch(fn, g0, _ext().scratch_doubles(0, len(gs)))
    return _ext().sumsq_many(g0.dev, g0.stream, [g.dtype.itemsize for g in gs],
                             [g.size for g in gs], [g.ptr for g in gs], div, maxabs, scratch.ptr)


def _global_norm(fn, gs):
    if not gs:
        return 0.0
    total = sum(_sumsq_many(fn, gs))
    if total == math.inf:  # rescale by the largest |g|, as the CPU does
        m = 0.0
        for s in _sumsq_many(fn, gs, maxabs=True):
            m = s if (s > m or s != s) else m
        if 0 < m < math.inf:
            return float(m * math.sqrt(sum(_sumsq_many(fn, gs, div=m))))
    return float(math.sqrt(total)) if total == total else float("nan")


def global_norm(grads):
    """The 2-norm of all arrays together, accumulated in float64 in a fixed order."""
    return _global_norm("global_norm", _grad_list("global_norm", grads))


def clip_by_global_norm(grads, max_norm):
    """Scale all arrays of grads in place so their global 2-norm is <= max_norm.

    Returns the norm before clipping; a non-finite norm leaves them untouched.
    """
    fn = "clip_by_global_norm"
    mx = _real(fn, "max_norm", max_norm)
    if not mx >= 0:
        raise ValueError(f"{fn}: max_norm must be >= 0, got {max_norm}")
    gs = _grad_list(fn, grads)
    total = _global_norm(fn, gs)
    if math.isfinite(total) and total > mx:
        for g in gs:
            _ext().scale(g.dev, g.stream, g.dtype.itemsize, g.size, g.ptr, mx / total)
    return total


# ---- the MLP on the device -------------------------------------------------------------------

class DeviceBuffer:
    """A C-contiguous array in memory owned by a CudaMLP, exported through
    ``__cuda_array_interface__``: ``cupy.asarray(buf)`` or
    ``torch.as_tensor(buf, device="cuda")`` view it without a copy. ``get()`` copies it to a new NumPy array, ``set(a)`` copies a
    host or device array of its shape and dtype into it. It keeps the memory's
    owner (the CudaMLP's workspace) alive."""
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
            src = _contiguous(fn, "a", _view(fn, "a", a))
            ptr, dt, shape = src.ptr, src.dtype, src.shape
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
    layers' ("relu", "sigmoid", "tanh"; the output layer is affine). loss:
    "softmax_cross_entropy" or "mse". cap: the largest batch. device: CUDA
    device id (default: the first array's device, else 0). graph: replay the
    step as a CUDA graph once the same call (rows, options, labels or targets)
    repeats; None means yes for nets up to 64M parameters.

    Device buffers (DeviceBuffer lists, zero-copy through
    __cuda_array_interface__): W, b, dW, db, vW, vb (momentum, None until a step
    uses momentum), h, dh (cap rows; h[-1] holds the logits of the last step).
    """

    def __init__(self, W, b, activation="relu", loss="softmax_cross_entropy", cap=1, *,
                 device=None, graph=None):
        fn = "CudaMLP"
        L = len(W)
        if L < 1 or len(b) != L:
            raise ValueError(f"{fn}: need one W and one b per layer, got {len(W)} and {len(b)}")
        if activation not in ("relu", "sigmoid", "tanh"):
            raise ValueError(f"{fn}: unknown activation {activation!r}")
        if loss not in LOSSES:
            raise ValueError(f"{fn}: unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
        cap = operator.index(cap)
        if cap < 1:
            raise ValueError(f"{fn}: cap must be >= 1, got {cap}")
        W = [a if _on_device(a) else np.asarray(a) for a in W]
        b = [a if _on_device(a) else np.asarray(a) for a in b]

        def meta(a):
            if _on_device(a):
                v = _view(fn, "parameter", a)
                return v.shape, v.dtype
            return a.shape, a.dtype
        shape0, dt = meta(W[0])
        if dt not in (np.float32, np.float64):
            raise TypeError(f"{fn}: parameters must be float32 or float64 arrays, got {dt}")
        if len(shape0) != 2:
            raise ValueError(f"{fn}: W[0] must be 2-D, got shape {shape0}")
        sizes = [int(shape0[0])] + [int(meta(w)[0][-1]) for w in W]
        for l in range(L):
            for name, a, shape in ((f"W[{l}]", W[l], (sizes[l], sizes[l + 1])),
                                   (f"b[{l}]", b[l], (sizes[l + 1],))):
                ash, adt = meta(a)
                if adt != dt:
                    raise TypeError(f"{fn}: {name} must be a {dt} array")
                if tuple(ash) != shape:
                    raise ValueError(f"{fn}: {name} must have shape {shape}, got {tuple(ash)}")
        _check_blas_dims(fn, [("cap", cap)] + [(f"width {i}", s) for i, s in enumerate(sizes)])
        if device is None:
            device = 0 if isinstance(W[0], np.ndarray) else _view(fn, "W[0]", W[0]).dev
        if graph is None:
            graph = sum(i * o for i, o in zip(sizes[:-1], sizes[1:])) <= 64 << 20
        self.sizes, self.dtype, self.cap, self.device = tuple(sizes), dt, cap, int(device)
        self.activation, self.loss_name, self.graph = activation, loss, bool(graph)
        self._ws = _ext().Workspace(self.device, dt.itemsize, self.sizes, ACTIVATIONS[activation],
                                    LOSSES[loss], cap, self.graph)
        self._views()
        self.set_params(W, b)

    def _views(self):
        ws, L, s, dt, dev = self._ws, self.n_layers, self.sizes, self.dtype, self.device

        def group(which, shape):
            out = []
            for l in range(L):
                p = ws.buffer(which, l)
                out.append(DeviceBuffer(ws, p, shape(l), dt, dev) if p else None)
            return out
        self.W = group(0, lambda l: (s[l], s[l + 1]))
        self.b = group(1, lambda l: (s[l + 1],))
        self.dW = group(2, lambda l: (s[l], s[l + 1]))
        self.db = group(3, lambda l: (s[l + 1],))
        self.vW = group(4, lambda l: (s[l], s[l + 1])) if ws.buffer(4, 0) else None
        self.vb = group(5, lambda l: (s[l + 1],)) if ws.buffer(5, 0) else None
        self.h = group(6, lambda l: (self.cap, s[l + 1]))
        self.dh = group(7, lambda l: (self.cap, s[l + 1]))

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

    def check_labels(self, labels):
        """Raise ValueError unless labels (host or device ints) lie in [0, C)."""
        self._labels("check_labels", labels, None, True)

    def _labels(self, fn, target, N, check):
        """(pointer, keep-alive) of int64 labels (N,), range-checked if check."""
        C = self.sizes[-1]
        if not _on_device(target):
            t = np.asarray(target)
            if t.dtype.kind not in "iu":
                raise TypeError(f"{fn}: labels must be integers, got dtype {t.dtype}")
            if N is not None and t.shape[0] != N:
                raise ValueError(f"{fn}: got {t.shape[0]} labels for {N} rows of x")
            t = np.require(t, np.int64, ["C", "A"])
            if check and t.size:
                bad = np.flatnonzero((t < 0) | (t >= C))
                if bad.size:
                    i = int(bad[0])
                    raise ValueError(f"{fn}: labels must be in [0, {C}), got {t[i]} at index {i}")
            return t.ctypes.data, t
        v = _view(fn, "labels", target)
        if v.dtype.kind not in "iu":
            raise TypeError(f"{fn}: labels must be integers, got dtype {v.dtype}")
        if N is not None and v.shape[0] != N:
            raise ValueError(f"{fn}: got {v.shape[0]} labels for {N} rows of x")
        v = _as_int64(fn, "labels", v)
        n = v.shape[0]
        if check and n:
            if n > self.cap:  # the workspace checks at most cap labels at once
                lo, hi, bad, val = _ext().check_labels(v.dev, v.stream, n, v.ptr, C,
                                                       _scratch(fn, v, 4, np.int64).ptr)
            else:
                lo, hi, bad, val = self._ws.check_labels(v.stream, n, v.ptr)
            if bad >= 0:
                raise ValueError(f"{fn}: labels must be in [0, {C}), got {val} at index {bad}")
        return v.ptr, v

    def step(self, x, target, mode=STEP_TRAIN, lr=0.0, weight_decay=0.0, clip_norm=0.0,
             momentum=0.0, count_correct=False, *, check_labels=True, sync=True, stream=None):
        """One native call: forward, loss, backward and (mode STEP_TRAIN) the update,
        as fastbp._core.mlp_step.

        x (N, I) with N <= cap; target: integer labels (N,) for softmax-xent or
        float targets (N, outputs); NumPy or CUDA arrays (copied into the
        workspace's staging buffers). Labels are range-checked first (one small
        kernel and a sync; check_labels=False skips it for labels already
        checked). Returns (loss, grad_norm, ncorrect) as the CPU step (grad_norm
        -1.0 unless clipping ran); with sync=False returns None at once and
        read_out() gives them later. stream: a cudaStream_t as an int (default:
        the stream x exports, or the legacy default stream).
        """
        fn = "mlp_step"
        C, I = self.sizes[-1], self.sizes[0]
        if not _on_device(x):
            xh = np.asarray(x)
            if xh.dtype != self.dtype:
                if xh.dtype.kind != "f" or xh.dtype.itemsize not in (4, 8):
                    raise TypeError(f"{fn}: x must be a float32 or float64 array, got dtype {xh.dtype}")
                raise TypeError(
                    f"{fn}: x has dtype {xh.dtype} but the inputs are {self.dtype}; "
                    "fastbp never casts silently, convert it with .astype()")
            xh = np.ascontiguousarray(xh)
            xptr, xshape, keep_x, xstream = xh.ctypes.data, xh.shape, xh, 0
        else:
            xv = _float_input(fn, "x", x, dtype=self.dtype)
            if xv.dev != self.device:
                raise ValueError(f"{fn}: x is on device {xv.dev}, the model on device {self.device}")
            xptr, xshape, keep_x, xstream = xv.ptr, xv.shape, xv, xv.stream
        if len(xshape) != 2 or xshape[1] != I:
            raise ValueError(f"{fn}: x must have shape (N, {I}), got {tuple(xshape)}")
        N = xshape[0]
        if N > self.cap:
            raise ValueError(f"{fn}: batch of {N} rows exceeds the workspace capacity {self.cap}")
        if N == 0:
            raise ValueError(f"{fn}: empty batch")
        stream = xstream if stream is None else int(stream)
        lptr = tptr = keep_t = None
        if mode != STEP_FORWARD:
            tshape = getattr(target, "shape", None)
            if tshape is None:
                target = np.asarray(target)
                tshape = target.shape
            if self.loss_name == "softmax_cross_entropy" and len(tshape) == 1:
                lptr, keep_t = self._labels(fn, target, N, check_labels)
            else:
                if len(tshape) == 1 and C == 1:
                    target = target.reshape(-1, 1)
                if not _on_device(target):
                    target = np.asarray(target)
                    if target.dtype != self.dtype:
                        raise TypeError(f"{fn}: target has dtype {target.dtype} but the inputs "
                                        f"are {self.dtype}; fastbp never casts silently, "
                                        "convert it with .astype()")
                    keep_t = np.ascontiguousarray(target)
                    tptr, tshape = keep_t.ctypes.data, keep_t.shape
                else:
                    keep_t = _float_input(fn, "target", target, dtype=self.dtype)
                    tptr, tshape = keep_t.ptr, keep_t.shape
                if tuple(tshape) != (N, C):
                    raise ValueError(f"{fn}: targets must have shape ({N}, {C}), got {tuple(tshape)}")
        for name, v in (("lr", lr), ("weight_decay", weight_decay), ("clip_norm", clip_norm),
                        ("momentum", momentum)):
            _real(fn, name, v)
        had_momentum = self.vW is not None
        out = self._ws.step(stream, N, xptr, lptr, tptr, int(mode), float(lr),
                            float(weight_decay), float(clip_norm), float(momentum),
                            bool(count_correct), bool(sync))
        if not had_momentum and momentum != 0.0:
            self._views()
        del keep_x, keep_t
        return out

    def read_out(self, stream=0):
        """Wait for the last step on stream; its (loss, grad_norm, ncorrect)."""
        return self._ws.read_out(stream)
