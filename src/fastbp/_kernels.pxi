# Included by _core.pyx: the kernels' entry points (activations, dense layer,
# losses, optimizer and clipping).

# ---- activations ---------------------------------------------------------------------------

cdef object _act_forward(str fn, int act, object x, object out):
    cdef Desc dx, do
    cdef const fbp_backend *be
    cdef int rc
    x = _float_input(fn, "x", x, &dx)
    _require(fn, dx.device, "activation", ACT_NAMES[act])
    out = _out_buffer(fn, "out", out, &do, _shape(&dx), &dx, x)
    _same_device(fn, ["x", "out"], [_dp(&dx), _dp(&do)])
    _no_overlap(fn, "out", &do, ["x"], [_dp(&dx)], ("x",))
    be = _backend(dx.device)
    with nogil:
        rc = be.act_forward(dx.device, dx.stream, dx.itemsize, dx.size, act, dx.ptr, do.ptr)
    _check(rc, be)
    return out


cdef object _act_backward(str fn, int act, object dy, object y, object out):
    cdef Desc ddy, dy_, do
    cdef const fbp_backend *be
    cdef int rc
    dy = _float_input(fn, "dy", dy, &ddy)
    _require(fn, ddy.device, "activation", ACT_NAMES[act])
    y = _float_view(fn, "y", y, &dy_, -1, &ddy, dy)
    if _shape(&dy_) != _shape(&ddy):
        raise ValueError(f"{fn}: dy and y must have the same shape, got {_shape(&ddy)} "
                         f"and {_shape(&dy_)}")
    y = _contig(fn, "y", y, &dy_)
    out = _out_buffer(fn, "out", out, &do, _shape(&ddy), &ddy, dy)
    _same_device(fn, ["dy", "y", "out"], [_dp(&ddy), _dp(&dy_), _dp(&do)])
    _no_overlap(fn, "out", &do, ["dy", "y"], [_dp(&ddy), _dp(&dy_)], ("dy", "y"))
    be = _backend(ddy.device)
    with nogil:
        rc = be.act_backward(ddy.device, ddy.stream, ddy.itemsize, ddy.size, act, ddy.ptr,
                             dy_.ptr, do.ptr)
    _check(rc, be)
    return out


def activation_forward(activation, x, out=None):
    """y = act(x) for any registered activation name (fastbp.ops), as its own
    <name>_forward gives it: the generic entry the layers call."""
    fn = "activation_forward"
    return _act_forward(fn, _act_code(fn, activation), x, out)


def activation_backward(activation, dy, y, out=None):
    """dx = dy * act'(.), y the activation's backward input (fastbp.ops
    backward_input: its forward output, or its input x)."""
    fn = "activation_backward"
    return _act_backward(fn, _act_code(fn, activation), dy, y, out)


def relu_forward(x, out=None):
    """y = max(x, 0), NaN propagating. ``out`` may be ``x`` (in place)."""
    return _act_forward("relu_forward", FBP_ACT_RELU, x, out)


def relu_backward(dy, y, out=None):
    """dx = dy * (y > 0), y the forward output (gradient 0 at 0)."""
    return _act_backward("relu_backward", FBP_ACT_RELU, dy, y, out)


def sigmoid_forward(x, out=None):
    """y = 1 / (1 + exp(-x)). ``out`` may be ``x`` (in place)."""
    return _act_forward("sigmoid_forward", FBP_ACT_SIGMOID, x, out)


def sigmoid_backward(dy, y, out=None):
    """dx = dy * y * (1 - y), y the forward output."""
    return _act_backward("sigmoid_backward", FBP_ACT_SIGMOID, dy, y, out)


def tanh_forward(x, out=None):
    """y = tanh(x). ``out`` may be ``x`` (in place)."""
    return _act_forward("tanh_forward", FBP_ACT_TANH, x, out)


def tanh_backward(dy, y, out=None):
    """dx = dy * (1 - y**2), y the forward output."""
    return _act_backward("tanh_backward", FBP_ACT_TANH, dy, y, out)


def gelu_forward(x, approximate="none", out=None):
    """y = x Phi(x) = x (1 + erf(x / sqrt(2))) / 2, or with approximate="tanh"
    x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2, as torch.nn.functional.gelu.
    ``out`` may be ``x`` (in place)."""
    fn = "gelu_forward"
    return _act_forward(fn, _gelu_code(fn, approximate), x, out)


def gelu_backward(dy, x, approximate="none", out=None):
    """dx = dy * gelu'(x), x the forward INPUT (GELU's derivative needs it)."""
    fn = "gelu_backward"
    return _act_backward(fn, _gelu_code(fn, approximate), dy, x, out)


def silu_forward(x, out=None):
    """y = x sigmoid(x) (SiLU, Swish), as torch.nn.functional.silu. ``out`` may
    be ``x`` (in place)."""
    return _act_forward("silu_forward", ACTIVATIONS["silu"], x, out)


def silu_backward(dy, x, out=None):
    """dx = dy * s (1 + x (1 - s)), s = sigmoid(x), x the forward INPUT."""
    return _act_backward("silu_backward", ACTIVATIONS["silu"], dy, x, out)


def _gelu_code(fn, approximate):
    if approximate == "none":
        return ACTIVATIONS["gelu"]
    if approximate == "tanh":
        return ACTIVATIONS["gelu_tanh"]
    raise ValueError(f"{fn}: approximate must be 'none' or 'tanh', got {approximate!r}")


# ---- dense layer -----------------------------------------------------------------------------

def dense_forward(x, W, b, activation=None, out=None, *, matmul_precision="float32"):
    """y = act(x @ W + b) with x (N, I), W (I, O), b (O,) or None -> y (N, O).

    One GEMM, then bias and activation in one fused pass. matmul_precision
    "bfloat16" (float32 arrays, CPU): x and W rounded to bfloat16 for the
    product, accumulated in float32 (fastbp._bf16).
    """
    fn = "dense_forward"
    cdef Desc dx, dW, db, dy
    cdef const fbp_backend *be
    cdef int rc, act = _act_code(fn, activation)
    x = _float_view(fn, "x", x, &dx, 2)
    W = _float_view(fn, "W", W, &dW, 2, &dx, x)
    cdef Py_ssize_t N = dx.shape[0], I = dx.shape[1], O = dW.shape[1]
    if dW.shape[0] != I:
        raise ValueError(f"{fn}: shapes {_shape(&dx)} (x) and {_shape(&dW)} (W) not aligned: "
                         f"{I} (dim 1) != {dW.shape[0]} (dim 0)")
    if b is not None:
        b = _float_view(fn, "b", b, &db, 1, &dx, x)
        if db.shape[0] != O:
            raise ValueError(f"{fn}: b must have shape ({O},) to match W {_shape(&dW)}, "
                             f"got {_shape(&db)}")
    _check_blas_dims(fn, [("N", N), ("I", I), ("O", O)])
    cdef int mm = _matmul_precision(fn, matmul_precision, _dtype(x),
                                    "cpu" if dx.device < 0 else "cuda")
    x = _contig(fn, "x", x, &dx)
    W = _contig(fn, "W", W, &dW)
    if b is not None:
        b = _contig(fn, "b", b, &db)
    out = _out_buffer(fn, "out", out, &dy, (N, O), &dx, x)
    descs = [_dp(&dx), _dp(&dW), None if b is None else _dp(&db), _dp(&dy)]
    _same_device(fn, ["x", "W", "b", "out"], descs)
    _no_overlap(fn, "out", &dy, ["x", "W", "b"], descs[:3])
    cdef void *pb = NULL if b is None else db.ptr
    _require(fn, dx.device, "activation", ACT_NAMES[act])
    if mm:
        _dense_forward_bf16(&dx, &dW, pb, act, &dy)
        return out
    be = _backend(dx.device)
    with nogil:
        rc = be.dense_forward(dx.device, dx.stream, dx.itemsize, N, I, O, dx.ptr, dW.ptr, pb, act,
                              dy.ptr)
    _check(rc, be)
    return out


def dense_backward(dy, x, W, y=None, activation=None, *, dx=None, dW=None, db=None,
                   dz=None, accumulate=False, need_dx=True, matmul_precision="float32"):
    """Backward of dense_forward; returns (dx, dW, db).

    dy, y (N, O) with y the forward output (needed unless activation is None),
    x (N, I), W (I, O). dz = dy * act'(y) is formed in the pass that sums
    db = dz.sum(0); then dx = dz @ W.T and dW = x.T @ dz through the BLAS.

    dx, dW, db: optional output buffers. accumulate=True adds into dW and db
    (both must be given) instead of overwriting them. dz: optional (N, O)
    workspace for the masked gradient; it may be ``dy`` itself to overwrite dy.
    need_dx=False skips dx (the first layer) and returns None for it.
    matmul_precision "bfloat16" (float32 arrays, CPU): the products' operands
    (dz, W, x) rounded to bfloat16, accumulated in float32.
    """
    fn = "dense_backward"
    cdef Desc ddy, dx_, dW_, dy_, ddz, ddx, ddW, ddb
    cdef const fbp_backend *be
    cdef int rc, act = _act_code(fn, activation)
    dy = _float_view(fn, "dy", dy, &ddy, 2)
    x = _float_view(fn, "x", x, &dx_, 2, &ddy, dy)
    W = _float_view(fn, "W", W, &dW_, 2, &ddy, dy)
    cdef Py_ssize_t N = dx_.shape[0], I = dx_.shape[1], O = dW_.shape[1]
    if dW_.shape[0] != I:
        raise ValueError(f"{fn}: shapes {_shape(&dx_)} (x) and {_shape(&dW_)} (W) not aligned: "
                         f"{I} (dim 1) != {dW_.shape[0]} (dim 0)")
    if _shape(&ddy) != (N, O):
        raise ValueError(f"{fn}: dy must have shape {(N, O)} (x rows, W columns), "
                         f"got {_shape(&ddy)}")
    if act:
        if y is None:
            raise ValueError(f"{fn}: y (the forward output) is required with activation "
                             f"{activation!r}")
        y = _float_view(fn, "y", y, &dy_, 2, &ddy, dy)
        if _shape(&dy_) != (N, O):
            raise ValueError(f"{fn}: y must have the shape of dy {(N, O)}, got {_shape(&dy_)}")
    else:
        y = None
    _check_blas_dims(fn, [("N", N), ("I", I), ("O", O)])
    cdef int mm = _matmul_precision(fn, matmul_precision, _dtype(dy),
                                    "cpu" if ddy.device < 0 else "cuda")
    dy = _contig(fn, "dy", dy, &ddy)
    x = _contig(fn, "x", x, &dx_)
    W = _contig(fn, "W", W, &dW_)
    if y is not None:
        y = _contig(fn, "y", y, &dy_)
    accumulate = bool(accumulate)
    if accumulate and (dW is None or db is None):
        raise ValueError(f"{fn}: accumulate=True needs the dW and db buffers to add into")
    dW = _out_buffer(fn, "dW", dW, &ddW, (I, O), &ddy, dy)
    db = _out_buffer(fn, "db", db, &ddb, (O,), &ddy, dy)
    if need_dx:
        dx = _out_buffer(fn, "dx", dx, &ddx, (N, I), &ddy, dy)
    elif dx is not None:
        raise ValueError(f"{fn}: dx given with need_dx=False")
    if act:
        dz = _out_buffer(fn, "dz", dz, &ddz, (N, O), &ddy, dy)
    else:
        dz = None
    pdy, px, pW = _dp(&ddy), _dp(&dx_), _dp(&dW_)
    py = None if y is None else _dp(&dy_)
    pdz = None if dz is None else _dp(&ddz)
    pdx = None if dx is None else _dp(&ddx)
    _same_device(fn, ["dy", "x", "W", "y", "dW", "db", "dx", "dz"],
                 [pdy, px, pW, py, _dp(&ddW), _dp(&ddb), pdx, pdz])
    ins, nins = [pdy, px, pW, py], ["dy", "x", "W", "y"]
    _no_overlap(fn, "dW", &ddW, nins + ["db", "dx", "dz"], ins + [_dp(&ddb), pdx, pdz])
    _no_overlap(fn, "db", &ddb, nins + ["dx", "dz"], ins + [pdx, pdz])
    if dx is not None:
        _no_overlap(fn, "dx", &ddx, nins + ["dz"], ins + [pdz])
    if dz is not None:
        _no_overlap(fn, "dz", &ddz, nins, ins, ("dy",))
    cdef void *vy = NULL if y is None else dy_.ptr
    cdef void *vdz = NULL if dz is None else ddz.ptr
    cdef void *vdx = NULL if dx is None else ddx.ptr
    cdef int acc = accumulate
    _require(fn, ddy.device, "activation", ACT_NAMES[act])
    if mm:
        _dense_backward_bf16(&ddy, &dx_, &dW_, vy, act, vdz, vdx, &ddW, &ddb, acc)
        return dx, dW, db
    be = _backend(ddy.device)
    with nogil:
        rc = be.dense_backward(ddy.device, ddy.stream, ddy.itemsize, N, I, O, ddy.ptr, dx_.ptr,
                               dW_.ptr, vy, act, vdz, vdx, ddW.ptr, ddb.ptr, acc)
    _check(rc, be)
    return dx, dW, db


# ---- losses ------------------------------------------------------------------------------------

def softmax_cross_entropy(logits, target, out=None):
    """Fused softmax + cross-entropy: returns (loss, dlogits).

    logits (N, C); target is integer labels (N,) in [0, C) or class
    probabilities (N, C) of the logits' dtype. loss is the batch mean of
    -log softmax(logits)[target] (exact log-sum-exp; NaN for N == 0); dlogits =
    (softmax(logits) - t) / N, computed in the same pass. ``out`` (N, C) may be
    ``logits`` itself to overwrite them with the gradient.
    """
    fn = "softmax_cross_entropy"
    cdef Desc dz, dt, do
    cdef const fbp_backend *be
    cdef int rc
    cdef double loss = float("nan")
    z = _float_input(fn, "logits", logits, &dz, 2)
    cdef Py_ssize_t N = dz.shape[0], C = dz.shape[1]
    if C == 0 and N > 0:
        raise ValueError(f"{fn}: logits must have at least one class, got shape {_shape(&dz)}")
    t = target if isinstance(target, np.ndarray) or _is_device(target) else np.asarray(target)
    tdesc = _cuda().describe(fn, "target", t) if _is_device(t) else None
    tndim = t.ndim if tdesc is None else len(tdesc[1])
    cdef bint labels = tndim == 1
    if labels:
        t = _labels(fn, t, &dt, N, C, "logits")
    elif tndim == 2:
        t = _float_view(fn, "target", t, &dt, 2, &dz, z)
        if _shape(&dt) != (N, C):
            raise ValueError(f"{fn}: probability targets must have the logits' shape "
                             f"{(N, C)}, got {_shape(&dt)}")
        t = _contig(fn, "target", t, &dt)
    else:
        raise ValueError(f"{fn}: target must be labels (N,) or probabilities (N, C), "
                         f"got {tndim}-D array of shape {tuple(t.shape) if tdesc is None else tdesc[1]}")
    out = _out_buffer(fn, "out", out, &do, (N, C), &dz, z)
    _same_device(fn, ["logits", "target", "out"], [_dp(&dz), _dp(&dt), _dp(&do)])
    _no_overlap(fn, "out", &do, ["logits", "target"], [_dp(&dz), _dp(&dt)], ("logits",))
    if N == 0:
        return loss, out
    cdef const int64_t *pl = <int64_t *>dt.ptr if labels else NULL
    cdef void *pt = NULL if labels else dt.ptr
    be = _backend(dz.device)
    with nogil:
        rc = be.softmax_xent(dz.device, dz.stream, dz.itemsize, N, C, dz.ptr, pl, pt, do.ptr, &loss)
    _check(rc, be)
    return loss, out


def mse_loss(pred, target, out=None):
    """Mean squared error: returns (loss, dpred).

    pred, target (N, ...) of one dtype; loss = 0.5 * sum((pred - target)**2) / N
    (NaN for N == 0), dpred = (pred - target) / N. ``out`` may be ``pred`` itself.
    """
    fn = "mse_loss"
    cdef Desc dy, dt, do
    cdef const fbp_backend *be
    cdef int rc
    cdef double loss = float("nan")
    y = _float_input(fn, "pred", pred, &dy)
    if dy.ndim == 0:
        raise ValueError(f"{fn}: pred must have a batch dimension, got a 0-D array")
    t = _float_view(fn, "target", target, &dt, -1, &dy, y)
    if _shape(&dt) != _shape(&dy):
        raise ValueError(f"{fn}: target must have the shape of pred {_shape(&dy)}, "
                         f"got {_shape(&dt)}")
    t = _contig(fn, "target", t, &dt)
    out = _out_buffer(fn, "out", out, &do, _shape(&dy), &dy, y)
    _same_device(fn, ["pred", "target", "out"], [_dp(&dy), _dp(&dt), _dp(&do)])
    _no_overlap(fn, "out", &do, ["pred", "target"], [_dp(&dy), _dp(&dt)], ("pred", "target"))
    cdef Py_ssize_t N = dy.shape[0]
    if N == 0:
        return loss, out
    cdef Py_ssize_t D = dy.size // N
    be = _backend(dy.device)
    with nogil:
        rc = be.mse(dy.device, dy.stream, dy.itemsize, N, D, dy.ptr, dt.ptr, do.ptr, &loss)
    _check(rc, be)
    return loss, out


def binary_cross_entropy(logits, target, out=None):
    """Fused sigmoid + binary cross-entropy: returns (loss, dlogits).

    logits, target (N, C) of one dtype, target in [0, 1] (multi-label; C = 1 is
    binary). loss = sum over the C outputs of -(t log s + (1 - t) log(1 - s)),
    s = sigmoid(logits), averaged over the N rows (NaN for N == 0), computed as
    max(z, 0) - t z + log1p(exp(-|z|)): exact and finite for large |z|.
    dlogits = (s - t) / N. ``out`` may be ``logits`` itself.
    """
    fn = "binary_cross_entropy"
    cdef Desc dz, dt, do
    cdef const fbp_backend *be
    cdef int rc
    cdef double loss = float("nan")
    z = _float_input(fn, "logits", logits, &dz, 2)
    _require(fn, dz.device, "loss", "binary_cross_entropy")
    t = _float_view(fn, "target", target, &dt, -1, &dz, z)
    if _shape(&dt) != _shape(&dz):
        raise ValueError(f"{fn}: target must have the shape of logits {_shape(&dz)}, "
                         f"got {_shape(&dt)}")
    t = _contig(fn, "target", t, &dt)
    out = _out_buffer(fn, "out", out, &do, _shape(&dz), &dz, z)
    _same_device(fn, ["logits", "target", "out"], [_dp(&dz), _dp(&dt), _dp(&do)])
    _no_overlap(fn, "out", &do, ["logits", "target"], [_dp(&dz), _dp(&dt)], ("logits",))
    cdef Py_ssize_t N = dz.shape[0], C = dz.shape[1]
    if N == 0:
        return loss, out
    be = _backend(dz.device)
    with nogil:
        rc = be.bce(dz.device, dz.stream, dz.itemsize, N, C, dz.ptr, dt.ptr, do.ptr, &loss)
    _check(rc, be)
    return loss, out


def poisson_loss(logmean, target, out=None):
    """Exp + half Poisson deviance (log link): returns (loss, dlogmean).

    logmean, target (N, C) of one dtype, target >= 0 (counts or rates);
    logmean is the log of the predicted mean, so the prediction is exp(logmean).
    loss = sum over the C outputs of exp(z) - t z + xlogy(t, t) - t, averaged
    over the N rows (NaN for N == 0): scikit-learn's MLPRegressor(loss="poisson")
    loss, 0 for a perfect prediction. dlogmean = (exp(z) - t) / N. ``out`` may
    be ``logmean`` itself. NumPy arrays only (no CUDA kernel yet).
    """
    fn = "poisson_loss"
    cdef Desc dz, dt, do
    cdef int rc
    cdef double loss = float("nan")
    z = _float_input(fn, "logmean", logmean, &dz, 2)
    _require(fn, dz.device, "loss", "poisson")
    t = _float_view(fn, "target", target, &dt, -1, &dz, z)
    if _shape(&dt) != _shape(&dz):
        raise ValueError(f"{fn}: target must have the shape of logmean {_shape(&dz)}, "
                         f"got {_shape(&dt)}")
    t = _contig(fn, "target", t, &dt)
    out = _out_buffer(fn, "out", out, &do, _shape(&dz), &dz, z)
    _same_device(fn, ["logmean", "target", "out"], [_dp(&dz), _dp(&dt), _dp(&do)])
    _no_overlap(fn, "out", &do, ["logmean", "target"], [_dp(&dz), _dp(&dt)], ("logmean",))
    cdef Py_ssize_t N = dz.shape[0], C = dz.shape[1]
    if N == 0:
        return loss, out
    with nogil:
        rc = fbp_poisson(-1, NULL, dz.itemsize, N, C, dz.ptr, dt.ptr, do.ptr, &loss)
    return loss, out


# ---- optimizer and clipping ----------------------------------------------------------------------

def sgd_update(param, grad, lr, weight_decay=0.0):
    """In place: param -= lr * (grad + weight_decay * param). Returns param."""
    fn = "sgd_update"
    cdef Desc dp, dg
    cdef const fbp_backend *be
    cdef int rc
    if not isinstance(param, np.ndarray) and not _is_device(param):
        raise TypeError(f"{fn}: param must be a numpy.ndarray (updated in place), "
                        f"got {type(param).__name__}")
    _float_view(fn, "param", param, &dp)
    if not (dp.contig and dp.native):
        raise ValueError(f"{fn}: param must be C-contiguous, aligned and native-endian "
                         "to be updated in place")
    _writable(fn, "param", &dp)
    g = _float_view(fn, "grad", grad, &dg, -1, &dp, param)
    if _shape(&dg) != _shape(&dp):
        raise ValueError(f"{fn}: grad must have the shape of param {_shape(&dp)}, got {_shape(&dg)}")
    g = _contig(fn, "grad", g, &dg)
    _same_device(fn, ["param", "grad"], [_dp(&dp), _dp(&dg)])
    _no_overlap(fn, "param", &dp, ["grad"], [_dp(&dg)])
    cdef double clr = _real(fn, "lr", lr), cwd = _real(fn, "weight_decay", weight_decay)
    be = _backend(dp.device)
    with nogil:
        rc = be.sgd(dp.device, dp.stream, dp.itemsize, dp.size, dp.ptr, dg.ptr, clr, cwd)
    _check(rc, be)
    return param


cdef list _as_list(str fn, object grads):
    """grads as a list: one array, a dict's values, or any iterable of arrays."""
    if isinstance(grads, np.ndarray) or _is_device(grads):
        return [grads]
    if isinstance(grads, dict):
        return list(grads.values())
    try:
        return list(grads)
    except TypeError:
        raise TypeError(f"{fn}: grads must be a list of arrays, got {type(grads).__name__}") from None


cdef class _Arrays:
    """Descriptions of a list of arrays (the gradients of a clip or a norm), and
    the arrays they describe, kept alive together."""
    cdef Desc *d
    cdef int k
    cdef list objs

    def __cinit__(self, int k):
        self.k = k
        self.d = <Desc *>calloc(k if k > 0 else 1, sizeof(Desc))
        if self.d == NULL:
            raise MemoryError()
        self.objs = []

    def __dealloc__(self):
        free(self.d)


cdef _Arrays _grad_arrays(str fn, object grads, bint inplace):
    """The arrays of grads, described: float32/float64, one device; inplace:
    writable as they are, else copied if they must be."""
    cdef list gs = _as_list(fn, grads)
    cdef _Arrays arrs = _Arrays(len(gs))
    cdef int i
    for i in range(arrs.k):
        g, name = gs[i], f"grads[{i}]"
        if not isinstance(g, np.ndarray) and not _is_device(g):
            what = "(clipped in place)" if inplace else ""
            raise TypeError(f"{fn}: {name} must be a numpy.ndarray {what}, got {type(g).__name__}"
                            .replace("  ", " "))
        _describe(fn, name, g, &arrs.d[i])
        if arrs.d[i].kind != b'f' or (arrs.d[i].itemsize != 4 and arrs.d[i].itemsize != 8):
            raise TypeError(f"{fn}: {name} must be float32 or float64, got dtype {_dtype(g)}")
        if inplace:
            if not arrs.d[i].native:
                raise TypeError(f"{fn}: {name} must be native-endian to be clipped in place, "
                                f"got dtype {_dtype(g)}")
            _writable(fn, name, &arrs.d[i])
        else:
            g = _contig(fn, name, g, &arrs.d[i])
        arrs.objs.append(g)
    _same_device(fn, [f"grads[{i}]" for i in range(arrs.k)],
                 [_dp(&arrs.d[i]) for i in range(arrs.k)])
    return arrs


cdef int _sumsq_many(_Arrays a, double div, bint maxabs, double *out) except -1:
    cdef int *dsizes = <int *>malloc(a.k * sizeof(int))
    cdef int64_t *ns = <int64_t *>malloc(a.k * sizeof(int64_t))
    cdef const void **xs = <const void **>malloc(a.k * sizeof(void *))
    cdef int i, rc
    cdef const fbp_backend *be
    try:
        if dsizes == NULL or ns == NULL or xs == NULL:
            raise MemoryError()
        for i in range(a.k):
            dsizes[i], ns[i], xs[i] = a.d[i].itemsize, a.d[i].size, a.d[i].ptr
        be = _backend(a.d[0].device)
        with nogil:
            rc = be.sumsq_many(a.d[0].device, a.d[0].stream, a.k, dsizes, ns, xs, div, maxabs, out)
        _check(rc, be)
    finally:
        free(dsizes)
        free(ns)
        free(xs)
    return 0


cdef double _global_norm(_Arrays a) except? -1.0:
    """The 2-norm of all of a's arrays, in double, in a fixed order. A sum of
    squares that overflows is recomputed scaled by the largest |g|."""
    if a.k == 0:
        return 0.0
    cdef double *part = <double *>malloc(a.k * sizeof(double))
    cdef double total = 0.0, m = 0.0, s
    cdef int i
    if part == NULL:
        raise MemoryError()
    try:
        _sumsq_many(a, 0.0, False, part)
        for i in range(a.k):
            total += part[i]
        if total == np.inf:
            _sumsq_many(a, 0.0, True, part)
            for i in range(a.k):
                s = part[i]
                m = s if (s > m or s != s) else m
            if 0 < m < np.inf:
                _sumsq_many(a, m, False, part)
                total = 0.0
                for i in range(a.k):
                    total += part[i]
                return m * np.sqrt(total)
        return np.sqrt(total)
    finally:
        free(part)


def global_norm(grads):
    """The 2-norm of all arrays together, accumulated in float64 in a fixed order.

    A sum of squares that overflows is recomputed scaled by the largest |g|,
    so finite gradients always give the finite norm. The arrays are only
    read, so any float arrays will do (read-only, strided, 0-d).
    """
    return _global_norm(_grad_arrays("global_norm", grads, False))


def clip_by_value(grads, limit):
    """Clip every array of grads in place to [-limit, limit] (NaN stays NaN)."""
    fn = "clip_by_value"
    cdef double lim = _real(fn, "limit", limit)
    if not lim >= 0:
        raise ValueError(f"{fn}: limit must be >= 0, got {limit}")
    cdef _Arrays a = _grad_arrays(fn, grads, True)
    cdef const fbp_backend *be
    cdef Desc *d
    cdef int i, rc
    for i in range(a.k):
        d = &a.d[i]
        be = _backend(d.device)
        with nogil:
            rc = be.clip_value(d.device, d.stream, d.itemsize, d.size, d.ptr, lim)
        _check(rc, be)


def clip_by_global_norm(grads, max_norm):
    """Scale all arrays of grads in place so their global 2-norm is <= max_norm.

    Returns the norm before clipping. A non-finite norm leaves the gradients
    untouched (it is returned for the caller to act on, never spread as NaN).
    """
    fn = "clip_by_global_norm"
    cdef double mx = _real(fn, "max_norm", max_norm)
    if not mx >= 0:
        raise ValueError(f"{fn}: max_norm must be >= 0, got {max_norm}")
    cdef _Arrays a = _grad_arrays(fn, grads, True)
    cdef double total = _global_norm(a), scale
    cdef const fbp_backend *be
    cdef Desc *d
    cdef int i, rc
    if np.isfinite(total) and total > mx:
        scale = mx / total
        for i in range(a.k):
            d = &a.d[i]
            be = _backend(d.device)
            with nogil:
                rc = be.scale(d.device, d.stream, d.itemsize, d.size, d.ptr, scale)
            _check(rc, be)
    return total
