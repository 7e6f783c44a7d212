# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""fastbp._core: validation, dtype dispatch and GIL-free calls into csrc/.

The C kernels trust their caller; this module is that caller. Every argument
is checked here (dtype, ndim, shape, contiguity, overlap, label range) and a
bad one raises TypeError or ValueError naming what was expected and what was
given, before any C runs. Inputs that are not C-contiguous or aligned are
copied; outputs (``out=`` buffers, in-place parameters) must already be
C-contiguous, aligned and writeable, since a copy would silently lose the
result.
"""
import operator

import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, free

cnp.import_array()

cdef extern from "fastbp.h" nogil:
    ctypedef Py_ssize_t fbp_idx
    ctypedef void (*fbp_sgemm_fn)(char *, char *, int *, int *, int *, float *, float *,
                                  int *, float *, int *, float *, float *, int *)
    ctypedef void (*fbp_dgemm_fn)(char *, char *, int *, int *, int *, double *, double *,
                                  int *, double *, int *, double *, double *, int *)
    ctypedef int (*fbp_blas_get_threads_fn)()
    ctypedef void (*fbp_blas_set_threads_fn)(int)
    void fbp_set_blas(fbp_sgemm_fn, fbp_dgemm_fn, fbp_blas_get_threads_fn, fbp_blas_set_threads_fn)
    void fbp_gemm_f32(int ta, int tb, fbp_idx M, fbp_idx N, fbp_idx K, float alpha,
                      const float *A, fbp_idx lda, const float *B, fbp_idx ldb, float beta,
                      float *C, fbp_idx ldc)
    void fbp_gemm_f64(int ta, int tb, fbp_idx M, fbp_idx N, fbp_idx K, double alpha,
                      const double *A, fbp_idx lda, const double *B, fbp_idx ldb, double beta,
                      double *C, fbp_idx ldc)
    void fbp_set_num_threads(int)
    int fbp_get_num_threads()
    int fbp_cpu_count()
    int fbp_pool_workers(int *create_error)
    void fbp_set_wait_us(double us)
    double fbp_get_wait_us()
    int fbp_init_cpu(int max_level)

    void fbp_act_forward_f32(fbp_idx n, int act, const float *x, float *y)
    void fbp_act_forward_f64(fbp_idx n, int act, const double *x, double *y)
    void fbp_act_backward_f32(fbp_idx n, int act, const float *dy, const float *y, float *dx)
    void fbp_act_backward_f64(fbp_idx n, int act, const double *dy, const double *y, double *dx)
    void fbp_dense_forward_f32(fbp_idx N, fbp_idx I, fbp_idx O, const float *x, const float *W,
                               const float *b, int act, float *y)
    void fbp_dense_forward_f64(fbp_idx N, fbp_idx I, fbp_idx O, const double *x, const double *W,
                               const double *b, int act, double *y)
    void fbp_dense_backward_f32(fbp_idx N, fbp_idx I, fbp_idx O, const float *dy, const float *x,
                                const float *W, const float *y, int act, float *dz, float *dx,
                                float *dW, float *db, int accumulate)
    void fbp_dense_backward_f64(fbp_idx N, fbp_idx I, fbp_idx O, const double *dy, const double *x,
                                const double *W, const double *y, int act, double *dz, double *dx,
                                double *dW, double *db, int accumulate)
    double fbp_softmax_xent_labels_f32(fbp_idx N, fbp_idx C, const float *z, const int64_t *labels,
                                       float *dz)
    double fbp_softmax_xent_labels_f64(fbp_idx N, fbp_idx C, const double *z, const int64_t *labels,
                                       double *dz)
    double fbp_softmax_xent_probs_f32(fbp_idx N, fbp_idx C, const float *z, const float *t, float *dz)
    double fbp_softmax_xent_probs_f64(fbp_idx N, fbp_idx C, const double *z, const double *t, double *dz)
    double fbp_mse_f32(fbp_idx N, fbp_idx D, const float *y, const float *t, float *dy)
    double fbp_mse_f64(fbp_idx N, fbp_idx D, const double *y, const double *t, double *dy)
    void fbp_sgd_f32(fbp_idx n, float *p, const float *g, float lr, float wd)
    void fbp_sgd_f64(fbp_idx n, double *p, const double *g, double lr, double wd)
    void fbp_clip_value_f32(fbp_idx n, float *g, float limit)
    void fbp_clip_value_f64(fbp_idx n, double *g, double limit)
    double fbp_sumsq_f32(fbp_idx n, const float *x)
    double fbp_sumsq_f64(fbp_idx n, const double *x)
    double fbp_maxabs_f32(fbp_idx n, const float *x)
    double fbp_maxabs_f64(fbp_idx n, const double *x)
    void fbp_scale_f32(fbp_idx n, float *x, float s)
    void fbp_scale_f64(fbp_idx n, double *x, double s)
    fbp_idx fbp_first_bad_label(fbp_idx N, const int64_t *labels, int64_t C)

    ctypedef struct fbp_mlp:
        int L
        const fbp_idx *sizes
        int act
        int loss
        fbp_idx cap
        void **W
        void **b
        void **dW
        void **db
        void **vW
        void **vb
        void **h
        void **dh
        void *xb
        void *tb
        int64_t *lb
    ctypedef struct fbp_step_opts:
        int mode
        double lr, weight_decay, clip_norm, momentum
        int count_correct
    ctypedef struct fbp_step_out:
        double loss, grad_norm
        int64_t ncorrect
    void fbp_mlp_step_f32(const fbp_mlp *m, fbp_idx N, const float *x, const int64_t *labels,
                          const float *t, const fbp_step_opts *opt, fbp_step_out *out)
    void fbp_mlp_step_f64(const fbp_mlp *m, fbp_idx N, const double *x, const int64_t *labels,
                          const double *t, const fbp_step_opts *opt, fbp_step_out *out)
    void fbp_mlp_epoch_f32(const fbp_mlp *m, fbp_idx n, const float *X, const int64_t *labels,
                           const float *t, const int64_t *order, fbp_idx B,
                           const fbp_step_opts *opt, fbp_step_out *out)
    void fbp_mlp_epoch_f64(const fbp_mlp *m, fbp_idx n, const double *X, const int64_t *labels,
                           const double *t, const int64_t *order, fbp_idx B,
                           const fbp_step_opts *opt, fbp_step_out *out)

import os as _os
import warnings as _warnings

CPU_LEVELS = ("baseline", "avx2", "avx512")


def set_cpu_dispatch(level="avx512"):
    """Use the dispatched copies of the exp-heavy kernels up to ``level``
    ("baseline", "avx2" for AVX2+FMA, "avx512"), as far as the CPU has them.
    Returns the level now in use. The copies agree to rounding, not bitwise."""
    global _level
    if level not in CPU_LEVELS:
        raise ValueError(f"set_cpu_dispatch: level must be one of {CPU_LEVELS}, got {level!r}")
    _level = CPU_LEVELS[fbp_init_cpu(CPU_LEVELS.index(level))]
    return _level


def cpu_dispatch():
    """The level of the dispatched kernel copies in use: "baseline", "avx2" or "avx512"."""
    return _level


def _dispatch_from_env():
    v = _os.environ.get("FASTBP_DISPATCH", "").strip().lower()
    if v in ("", "1", "on", "avx512"):
        return 2
    if v in ("0", "off", "baseline"):
        return 0
    if v == "avx2":
        return 1
    _warnings.warn(f"FASTBP_DISPATCH={v!r} is not one of baseline, avx2, avx512 (or 0/1); "
                   "using the widest copies the CPU supports", RuntimeWarning, stacklevel=2)
    return 2


_level = CPU_LEVELS[fbp_init_cpu(_dispatch_from_env())]


def _set_gemm(size_t sgemm_addr, size_t dgemm_addr, size_t get_threads, size_t set_threads):
    """Point the kernels at Fortran-ABI (32-bit integer) sgemm_/dgemm_ and the
    library's thread count functions, given as addresses (see fastbp._blas)."""
    if not (sgemm_addr and dgemm_addr and get_threads and set_threads):
        raise ValueError("_set_gemm: null address")
    fbp_set_blas(<fbp_sgemm_fn>sgemm_addr, <fbp_dgemm_fn>dgemm_addr,
                 <fbp_blas_get_threads_fn>get_threads, <fbp_blas_set_threads_fn>set_threads)

# The Fortran BLAS fastbp calls takes 32-bit integer dimensions.
BLAS_INT_MAX = 2**31 - 1

ACTIVATIONS = {None: 0, "relu": 1, "sigmoid": 2, "tanh": 3}


# ---- validation helpers ------------------------------------------------------

def _act_code(fn, activation):
    try:
        return ACTIVATIONS[activation]
    except (KeyError, TypeError):
        raise ValueError(
            f"{fn}: unknown activation {activation!r}; expected one of "
            "None, 'relu', 'sigmoid', 'tanh'") from None


def _float_view(fn, name, x, ndim=None, dtype=None, blas=False, shape=None):
    """x as a float32/float64 ndarray, checked but not yet copied.

    dtype: the dtype the other inputs have (mixing is an error, never a cast).
    shape: the exact shape required. blas=True: x goes to a GEMM, whose Fortran
    BLAS takes 32-bit dimensions. All of it is checked before _contig can copy,
    so a huge broadcast view is refused instead of allocated.
    """
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    dt = x.dtype
    if dt.kind != "f" or dt.itemsize not in (4, 8):
        raise TypeError(f"{fn}: {name} must be a float32 or float64 array, got dtype {dt}")
    if dtype is not None and dt.newbyteorder("=") != dtype:
        raise TypeError(
            f"{fn}: {name} has dtype {dt} but the inputs are {np.dtype(dtype)}; "
            "fastbp never casts silently, convert it with .astype()")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D, got {x.ndim}-D array of shape {x.shape}")
    if shape is not None and x.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {x.shape}")
    if blas:
        for i, d in enumerate(x.shape):
            if d > BLAS_INT_MAX:
                raise ValueError(f"{fn}: {name} dimension {i} of size {d} exceeds the BLAS "
                                 f"32-bit dimension limit {BLAS_INT_MAX}")
    return x


def _contig(x):
    """An aligned, C-contiguous, native-endian x (copied only if needed; np.require
    copies unless handed x's own dtype object)."""
    if _is_carray(x):  # the common case, without np.require's 1.5 us
        return x
    dt = x.dtype if x.dtype.isnative else x.dtype.newbyteorder("=")
    return np.require(x, dt, ["C", "A"])


cdef inline bint _is_carray(object x):
    """C-contiguous, aligned and native-endian: what the kernels read as is."""
    return (isinstance(x, np.ndarray) and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>x)
            and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>x))


def _float_input(fn, name, x, ndim=None, dtype=None, blas=False, shape=None):
    """_float_view, then _contig: a checked input the C can read."""
    return _contig(_float_view(fn, name, x, ndim, dtype, blas, shape))


def _out_buffer(fn, name, out, shape, dtype):
    """An output buffer given by the caller, or a new one."""
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{fn}: {name} must have dtype {np.dtype(dtype)}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {out.shape}")
    _writable_contiguous(fn, name, out)
    return out


def _writable_contiguous(fn, name, cnp.ndarray a):
    if not cnp.PyArray_ISCARRAY_RO(a):
        raise ValueError(f"{fn}: {name} must be C-contiguous and aligned to be written in place")
    if not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{fn}: {name} is read-only")


def _no_overlap(fn, out_name, out, inputs, allow_same=()):
    """out must not share memory with the inputs, except identically with the
    arrays in allow_same (the kernels that may run in place)."""
    cdef char *o0
    cdef char *a0
    for name, a in inputs:
        if a is None or a.size == 0 or out.size == 0:
            continue
        if any(a is s for s in allow_same) and _p(a) == _p(out):
            continue
        if _is_carray(a) and _is_carray(out):
            # both one block of memory: the exact test, without np.may_share_memory
            o0, a0 = <char *>_p(out), <char *>_p(a)
            if o0 < a0 + cnp.PyArray_NBYTES(<cnp.ndarray>a) and \
                    a0 < o0 + cnp.PyArray_NBYTES(<cnp.ndarray>out):
                raise ValueError(f"{fn}: {out_name} overlaps {name} in memory")
        elif np.may_share_memory(out, a):
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


cdef inline void *_p(object a):
    # a checked cast: anything but an ndarray raises instead of reaching C
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray?>a)


# ---- threads -----------------------------------------------------------------

def set_num_threads(n):
    """Set the number of threads fastbp's kernels use, and its BLAS (n >= 1;
    the BLAS gets at most one per CPU).

    Results do not depend on it: reductions run in a fixed block order.
    Without a call, fastbp follows OMP_NUM_THREADS, else the number of CPUs
    this process may run on; ``threadpoolctl.threadpool_limits`` also sets it.
    """
    if isinstance(n, (bool, np.bool_)):
        raise TypeError("set_num_threads: n must be an integer, got bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"set_num_threads: n must be an integer, got {type(n).__name__}") from None
    if not 1 <= n <= 4096:
        raise ValueError(f"set_num_threads: n must be in [1, 4096], got {n}")
    fbp_set_num_threads(n)


def get_num_threads():
    """The number of threads fastbp's kernels use."""
    return fbp_get_num_threads()


def cpu_count():
    """The CPUs this process may run on (its affinity mask)."""
    return fbp_cpu_count()


def pool_info():
    """The thread pool's state: workers started, the errno of the last thread
    that could not start (0 if none), and the idle workers' yield window."""
    cdef int err = 0
    cdef int n = fbp_pool_workers(&err)
    return {"workers": n, "create_error": err, "wait_us": fbp_get_wait_us()}


def _set_wait_us(double us):
    """How long idle workers yield before sleeping (a tuning knob for bench/)."""
    fbp_set_wait_us(us)


# ---- activations ---------------------------------------------------------------

def _act_forward(fn, int act, x, out):
    x = _float_input(fn, "x", x)
    out = _out_buffer(fn, "out", out, x.shape, x.dtype)
    _no_overlap(fn, "out", out, [("x", x)], allow_same=(x,))
    cdef fbp_idx n = x.size
    cdef void *px = _p(x)
    cdef void *po = _p(out)
    if x.dtype == np.float32:
        with nogil:
            fbp_act_forward_f32(n, act, <float *>px, <float *>po)
    else:
        with nogil:
            fbp_act_forward_f64(n, act, <double *>px, <double *>po)
    return out


def _act_backward(fn, int act, dy, y, out):
    dy = _float_input(fn, "dy", dy)
    y = _float_view(fn, "y", y, dtype=dy.dtype)
    if y.shape != dy.shape:
        raise ValueError(f"{fn}: dy and y must have the same shape, got {dy.shape} and {y.shape}")
    y = _contig(y)
    out = _out_buffer(fn, "out", out, dy.shape, dy.dtype)
    _no_overlap(fn, "out", out, [("dy", dy), ("y", y)], allow_same=(dy, y))
    cdef fbp_idx n = dy.size
    cdef void *pdy = _p(dy)
    cdef void *py = _p(y)
    cdef void *po = _p(out)
    if dy.dtype == np.float32:
        with nogil:
            fbp_act_backward_f32(n, act, <float *>pdy, <float *>py, <float *>po)
    else:
        with nogil:
            fbp_act_backward_f64(n, act, <double *>pdy, <double *>py, <double *>po)
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


# ---- dense layer -----------------------------------------------------------------

def dense_forward(x, W, b, activation=None, out=None):
    """y = act(x @ W + b) with x (N, I), W (I, O), b (O,) or None -> y (N, O).

    One GEMM through BLAS, then bias and activation in one fused pass.
    """
    fn = "dense_forward"
    cdef int act = _act_code(fn, activation)
    x = _float_input(fn, "x", x, ndim=2, blas=True)
    W = _float_input(fn, "W", W, ndim=2, dtype=x.dtype, blas=True)
    cdef fbp_idx N = x.shape[0], I = x.shape[1], O = W.shape[1]
    if W.shape[0] != I:
        raise ValueError(f"{fn}: shapes {x.shape} (x) and {W.shape} (W) not aligned: "
                         f"{I} (dim 1) != {W.shape[0]} (dim 0)")
    if b is not None:
        b = _float_view(fn, "b", b, ndim=1, dtype=x.dtype)
        if b.shape[0] != O:
            raise ValueError(f"{fn}: b must have shape ({O},) to match W {W.shape}, got {b.shape}")
        b = _contig(b)
    _check_blas_dims(fn, [("N", N), ("I", I), ("O", O)])
    out = _out_buffer(fn, "out", out, (N, O), x.dtype)
    _no_overlap(fn, "out", out, [("x", x), ("W", W), ("b", b)])
    cdef void *px = _p(x)
    cdef void *pW = _p(W)
    cdef void *pb = _p(b)
    cdef void *py = _p(out)
    if x.dtype == np.float32:
        with nogil:
            fbp_dense_forward_f32(N, I, O, <float *>px, <float *>pW, <float *>pb, act, <float *>py)
    else:
        with nogil:
            fbp_dense_forward_f64(N, I, O, <double *>px, <double *>pW, <double *>pb, act, <double *>py)
    return out


def dense_backward(dy, x, W, y=None, activation=None, *, dx=None, dW=None, db=None,
                   dz=None, accumulate=False, need_dx=True):
    """Backward of dense_forward; returns (dx, dW, db).

    dy, y (N, O) with y the forward output (needed unless activation is None),
    x (N, I), W (I, O). dz = dy * act'(y) is formed in the pass that sums
    db = dz.sum(0); then dx = dz @ W.T and dW = x.T @ dz through BLAS.

    dx, dW, db: optional output buffers. accumulate=True adds into dW and db
    (both must be given) instead of overwriting them. dz: optional (N, O)
    workspace for the masked gradient; it may be ``dy`` itself to overwrite dy.
    need_dx=False skips dx (the first layer) and returns None for it.
    """
    fn = "dense_backward"
    cdef int act = _act_code(fn, activation)
    dy = _float_input(fn, "dy", dy, ndim=2, blas=True)
    x = _float_input(fn, "x", x, ndim=2, dtype=dy.dtype, blas=True)
    W = _float_input(fn, "W", W, ndim=2, dtype=dy.dtype, blas=True)
    cdef fbp_idx N = x.shape[0], I = x.shape[1], O = W.shape[1]
    if W.shape[0] != I:
        raise ValueError(f"{fn}: shapes {x.shape} (x) and {W.shape} (W) not aligned: "
                         f"{I} (dim 1) != {W.shape[0]} (dim 0)")
    if dy.shape != (N, O):
        raise ValueError(f"{fn}: dy must have shape {(N, O)} (x rows, W columns), got {dy.shape}")
    if act:
        if y is None:
            raise ValueError(f"{fn}: y (the forward output) is required with activation {activation!r}")
        y = _float_view(fn, "y", y, ndim=2, dtype=dy.dtype)
        if y.shape != dy.shape:
            raise ValueError(f"{fn}: y must have the shape of dy {dy.shape}, got {y.shape}")
        y = _contig(y)
    else:
        y = None
    _check_blas_dims(fn, [("N", N), ("I", I), ("O", O)])
    accumulate = bool(accumulate)
    if accumulate and (dW is None or db is None):
        raise ValueError(f"{fn}: accumulate=True needs the dW and db buffers to add into")
    dt = dy.dtype
    dW = _out_buffer(fn, "dW", dW, (I, O), dt)
    db = _out_buffer(fn, "db", db, (O,), dt)
    if need_dx:
        dx = _out_buffer(fn, "dx", dx, (N, I), dt)
    elif dx is not None:
        raise ValueError(f"{fn}: dx given with need_dx=False")
    if act:
        dz = _out_buffer(fn, "dz", dz, (N, O), dt)
    else:
        dz = None
    ins = [("dy", dy), ("x", x), ("W", W), ("y", y)]
    _no_overlap(fn, "dW", dW, ins + [("db", db), ("dx", dx), ("dz", dz)])
    _no_overlap(fn, "db", db, ins + [("dx", dx), ("dz", dz)])
    if dx is not None:
        _no_overlap(fn, "dx", dx, ins + [("dz", dz)])
    if dz is not None:
        _no_overlap(fn, "dz", dz, ins, allow_same=(dy,))
    cdef void *pdy = _p(dy)
    cdef void *px = _p(x)
    cdef void *pW = _p(W)
    cdef void *py = _p(y)
    cdef void *pdz = _p(dz)
    cdef void *pdx = _p(dx)
    cdef void *pdW = _p(dW)
    cdef void *pdb = _p(db)
    cdef int acc = accumulate
    if dt == np.float32:
        with nogil:
            fbp_dense_backward_f32(N, I, O, <float *>pdy, <float *>px, <float *>pW, <float *>py, act,
                                   <float *>pdz, <float *>pdx, <float *>pdW, <float *>pdb, acc)
    else:
        with nogil:
            fbp_dense_backward_f64(N, I, O, <double *>pdy, <double *>px, <double *>pW, <double *>py,
                                   act, <double *>pdz, <double *>pdx, <double *>pdW, <double *>pdb, acc)
    return dx, dW, db


# ---- losses --------------------------------------------------------------------------

def _labels(fn, target, fbp_idx N, fbp_idx C):
    """Integer labels (N,) of any integer dtype, range-checked, as int64."""
    t = target if isinstance(target, np.ndarray) else np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{fn}: 1-D targets must be integer class labels, got dtype {t.dtype}")
    if t.shape[0] != N:
        raise ValueError(f"{fn}: got {t.shape[0]} labels for {N} rows of logits")
    cdef cnp.ndarray t64 = t
    if cnp.PyArray_TYPE(t64) != cnp.NPY_INT64 or not _is_carray(t64):
        t64 = np.require(t, np.int64, ["C", "A"])  # uint64 above 2^63 wraps negative: caught below
    cdef fbp_idx bad
    with nogil:
        bad = fbp_first_bad_label(N, <int64_t *>cnp.PyArray_DATA(t64), C)
    if bad >= 0:
        lo, hi = int(t.min()), int(t.max())
        raise ValueError(f"{fn}: labels must be in [0, {C}), got values in [{lo}, {hi}]")
    return t64


def softmax_cross_entropy(logits, target, out=None):
    """Fused softmax + cross-entropy: returns (loss, dlogits).

    logits (N, C); target is integer labels (N,) in [0, C) or class
    probabilities (N, C) of the logits' dtype. loss is the batch mean of
    -log softmax(logits)[target] (exact log-sum-exp); dlogits =
    (softmax(logits) - t) / N, computed in the same pass. ``out`` (N, C) may be
    ``logits`` itself to overwrite them with the gradient.
    """
    fn = "softmax_cross_entropy"
    z = _float_input(fn, "logits", logits, ndim=2)
    cdef fbp_idx N = z.shape[0], C = z.shape[1]
    if C == 0 and N > 0:
        raise ValueError(f"{fn}: logits must have at least one class, got shape {z.shape}")
    t = target if isinstance(target, np.ndarray) else np.asarray(target)
    cdef int labels
    if t.ndim == 1:
        t = _labels(fn, t, N, C)
        labels = 1
    elif t.ndim == 2:
        t = _float_view(fn, "target", t, dtype=z.dtype)
        if t.shape != z.shape:
            raise ValueError(f"{fn}: probability targets must have the logits' shape {z.shape}, "
                             f"got {t.shape}")
        t = _contig(t)
        labels = 0
    else:
        raise ValueError(f"{fn}: target must be labels (N,) or probabilities (N, C), "
                         f"got {t.ndim}-D array of shape {t.shape}")
    out = _out_buffer(fn, "out", out, z.shape, z.dtype)
    _no_overlap(fn, "out", out, [("logits", z), ("target", t)], allow_same=(z,))
    cdef void *pz = _p(z)
    cdef void *pt = _p(t)
    cdef void *po = _p(out)
    cdef double loss
    if z.dtype == np.float32:
        with nogil:
            if labels:
                loss = fbp_softmax_xent_labels_f32(N, C, <float *>pz, <int64_t *>pt, <float *>po)
            else:
                loss = fbp_softmax_xent_probs_f32(N, C, <float *>pz, <float *>pt, <float *>po)
    else:
        with nogil:
            if labels:
                loss = fbp_softmax_xent_labels_f64(N, C, <double *>pz, <int64_t *>pt, <double *>po)
            else:
                loss = fbp_softmax_xent_probs_f64(N, C, <double *>pz, <double *>pt, <double *>po)
    return loss, out


def mse_loss(pred, target, out=None):
    """Mean squared error: returns (loss, dpred).

    pred, target (N, ...) of one dtype; loss = 0.5 * sum((pred - target)**2) / N,
    dpred = (pred - target) / N. ``out`` may be ``pred`` itself.
    """
    fn = "mse_loss"
    y = _float_input(fn, "pred", pred)
    if y.ndim == 0:
        raise ValueError(f"{fn}: pred must have a batch dimension, got a 0-D array")
    t = _float_view(fn, "target", target, dtype=y.dtype)
    if t.shape != y.shape:
        raise ValueError(f"{fn}: target must have the shape of pred {y.shape}, got {t.shape}")
    t = _contig(t)
    out = _out_buffer(fn, "out", out, y.shape, y.dtype)
    _no_overlap(fn, "out", out, [("pred", y), ("target", t)], allow_same=(y, t))
    cdef fbp_idx N = y.shape[0]
    cdef fbp_idx D = y.size // N if N else 0
    cdef void *py = _p(y)
    cdef void *pt = _p(t)
    cdef void *po = _p(out)
    cdef double loss
    if y.dtype == np.float32:
        with nogil:
            loss = fbp_mse_f32(N, D, <float *>py, <float *>pt, <float *>po)
    else:
        with nogil:
            loss = fbp_mse_f64(N, D, <double *>py, <double *>pt, <double *>po)
    return loss, out


# ---- optimizer and clipping ---------------------------------------------------------------

def sgd_update(param, grad, lr, weight_decay=0.0):
    """In place: param -= lr * (grad + weight_decay * param). Returns param."""
    fn = "sgd_update"
    if not isinstance(param, np.ndarray):
        raise TypeError(f"{fn}: param must be a numpy.ndarray (updated in place), "
                        f"got {type(param).__name__}")
    p = _float_input(fn, "param", param)
    if p is not param:
        raise ValueError(f"{fn}: param must be C-contiguous, aligned and native-endian "
                         "to be updated in place")
    _writable_contiguous(fn, "param", p)
    g = _float_view(fn, "grad", grad, dtype=p.dtype)
    if g.shape != p.shape:
        raise ValueError(f"{fn}: grad must have the shape of param {p.shape}, got {g.shape}")
    g = _contig(g)
    _no_overlap(fn, "param", p, [("grad", g)])
    cdef double clr = _real(fn, "lr", lr), cwd = _real(fn, "weight_decay", weight_decay)
    cdef fbp_idx n = p.size
    cdef void *pp = _p(p)
    cdef void *pg = _p(g)
    if p.dtype == np.float32:
        with nogil:
            fbp_sgd_f32(n, <float *>pp, <float *>pg, <float>clr, <float>cwd)
    else:
        with nogil:
            fbp_sgd_f64(n, <double *>pp, <double *>pg, clr, cwd)
    return param


def _as_list(fn, grads):
    """grads as a list: one array, a dict's values, or any iterable of arrays."""
    if isinstance(grads, np.ndarray):
        return [grads]
    if isinstance(grads, dict):
        return list(grads.values())
    try:
        return list(grads)
    except TypeError:
        raise TypeError(f"{fn}: grads must be a list of arrays, got {type(grads).__name__}") from None


def _grad_list(fn, grads):
    """grads as a list of float arrays that can be written in place."""
    grads = _as_list(fn, grads)
    out = []
    for i, g in enumerate(grads):
        name = f"grads[{i}]"
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{fn}: {name} must be a numpy.ndarray (clipped in place), "
                            f"got {type(g).__name__}")
        if g.dtype != np.float32 and g.dtype != np.float64:
            raise TypeError(f"{fn}: {name} must be float32 or float64, got dtype {g.dtype}")
        _writable_contiguous(fn, name, g)
        out.append(g)
    return out


def clip_by_value(grads, limit):
    """Clip every array of grads in place to [-limit, limit] (NaN stays NaN)."""
    fn = "clip_by_value"
    cdef double lim = _real(fn, "limit", limit)
    if not lim >= 0:
        raise ValueError(f"{fn}: limit must be >= 0, got {limit}")
    cdef fbp_idx n
    cdef void *pg
    for g in _grad_list(fn, grads):
        n = g.size
        pg = _p(g)
        if g.dtype == np.float32:
            with nogil:
                fbp_clip_value_f32(n, <float *>pg, <float>lim)
        else:
            with nogil:
                fbp_clip_value_f64(n, <double *>pg, lim)


cdef double _sumsq(cnp.ndarray g):
    cdef fbp_idx n = g.size
    cdef void *pg = cnp.PyArray_DATA(g)
    cdef double s
    if g.dtype == np.float32:
        with nogil:
            s = fbp_sumsq_f32(n, <float *>pg)
    else:
        with nogil:
            s = fbp_sumsq_f64(n, <double *>pg)
    return s


cdef double _maxabs(cnp.ndarray g):
    cdef fbp_idx n = g.size
    cdef void *pg = cnp.PyArray_DATA(g)
    if g.dtype == np.float32:
        return fbp_maxabs_f32(n, <float *>pg)
    return fbp_maxabs_f64(n, <double *>pg)


def global_norm(grads):
    """The 2-norm of all arrays together, accumulated in float64 in a fixed order.

    A sum of squares that overflows is recomputed scaled by the largest |g|,
    so finite gradients always give the finite norm. The arrays are only
    read, so any float ndarrays will do (read-only, strided, 0-d).
    """
    fn = "global_norm"
    grads = _as_list(fn, grads)
    gs = []
    for i, g in enumerate(grads):
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{fn}: grads[{i}] must be a numpy.ndarray, got {type(g).__name__}")
        gs.append(_float_input(fn, f"grads[{i}]", g))
    return _global_norm(gs)


cdef double _global_norm(list gs):
    """global_norm of arrays already checked to be aligned C-contiguous floats."""
    cdef double total = 0.0, m = 0.0, s
    for g in gs:
        total += _sumsq(g)
    if total == np.inf:
        for g in gs:
            s = _maxabs(g)
            m = s if (s > m or s != s) else m
        if 0 < m < np.inf:
            total = 0.0
            for g in gs:  # rare path: the scaled copies are acceptable
                total += _sumsq(_contig(np.asarray(g / m, dtype=g.dtype)))
            return m * np.sqrt(total)
    return np.sqrt(total)


def clip_by_global_norm(grads, max_norm):
    """Scale all arrays of grads in place so their global 2-norm is <= max_norm.

    Returns the norm before clipping. A non-finite norm leaves the gradients
    untouched (it is returned for the caller to act on, never spread as NaN).
    """
    fn = "clip_by_global_norm"
    cdef double mx = _real(fn, "max_norm", max_norm)
    if not mx >= 0:
        raise ValueError(f"{fn}: max_norm must be >= 0, got {max_norm}")
    gs = _grad_list(fn, grads)
    cdef double total = _global_norm(gs)
    cdef double scale
    cdef fbp_idx n
    cdef void *pg
    if np.isfinite(total) and total > mx:
        scale = mx / total
        for g in gs:
            n = g.size
            pg = _p(g)
            if g.dtype == np.float32:
                with nogil:
                    fbp_scale_f32(n, <float *>pg, <float>scale)
            else:
                with nogil:
                    fbp_scale_f64(n, <double *>pg, scale)
    return total


# ---- the MLP training step ---------------------------------------------------------------

LOSSES = {"softmax_cross_entropy": 0, "mse": 1}
STEP_FORWARD, STEP_LOSS, STEP_GRAD, STEP_TRAIN = 0, 1, 2, 3


cdef class MLPWorkspace:
    """Everything an MLP step writes besides the parameters, allocated once.

    Holds the layer outputs h[l] and their gradients dh[l] for batches of up to
    ``cap`` rows, the gradients dW[l], db[l], and the C pointer table over them
    and over the parameters (and momentum buffers) it was built with. The
    arrays are kept referenced here so the pointers stay valid.
    """
    cdef fbp_mlp m
    cdef fbp_idx *sizes_c
    cdef void **table
    cdef readonly list W, b, vW, vb, h, dh, dW, db
    cdef readonly object xb, lb, tb
    cdef readonly tuple sizes
    cdef readonly object dtype
    cdef readonly Py_ssize_t cap
    cdef readonly int loss_code, act_code

    def __cinit__(self, W, b, activation, loss, Py_ssize_t cap, vW=None, vb=None):
        fn = "MLPWorkspace"
        self.table = NULL
        self.sizes_c = NULL
        cdef Py_ssize_t L = len(W), l
        if L < 1 or len(b) != L:
            raise ValueError(f"{fn}: need one W and one b per layer, got {len(W)} and {len(b)}")
        self.act_code = _act_code(fn, activation)
        if loss not in LOSSES:
            raise ValueError(f"{fn}: unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
        self.loss_code = LOSSES[loss]
        if cap < 1:
            raise ValueError(f"{fn}: cap must be >= 1, got {cap}")
        dt = W[0].dtype if isinstance(W[0], np.ndarray) else None
        if dt != np.float32 and dt != np.float64:
            raise TypeError(f"{fn}: parameters must be float32 or float64 arrays, got {dt}")
        sizes = [W[0].shape[0]] + [w.shape[1] if w.ndim == 2 else -1 for w in W]
        for l in range(L):
            for name, a, shape in ((f"W[{l}]", W[l], (sizes[l], sizes[l + 1])),
                                   (f"b[{l}]", b[l], (sizes[l + 1],))):
                if not isinstance(a, np.ndarray) or a.dtype != dt:
                    raise TypeError(f"{fn}: {name} must be a {np.dtype(dt)} array")
                if a.shape != shape:
                    raise ValueError(f"{fn}: {name} must have shape {shape}, got {a.shape}")
                _writable_contiguous(fn, name, a)
        _check_blas_dims(fn, [("cap", cap)] + [(f"width {i}", s) for i, s in enumerate(sizes)])
        momentum = vW is not None
        if momentum:
            for l in range(L):
                if vW[l].shape != W[l].shape or vb[l].shape != b[l].shape or \
                        vW[l].dtype != dt or vb[l].dtype != dt:
                    raise ValueError(f"{fn}: momentum buffers must match the parameters")
                _writable_contiguous(fn, f"vW[{l}]", vW[l])
                _writable_contiguous(fn, f"vb[{l}]", vb[l])
        self.W, self.b = list(W), list(b)
        self.vW = list(vW) if momentum else None
        self.vb = list(vb) if momentum else None
        self.sizes = tuple(int(s) for s in sizes)
        self.dtype = np.dtype(dt)
        self.cap = cap
        self.h = [np.zeros((cap, s), dt) for s in sizes[1:]]
        self.dh = [np.zeros((cap, s), dt) for s in sizes[1:]]
        self.dW = [np.zeros_like(w) for w in W]
        self.db = [np.zeros_like(v) for v in b]
        self.xb = np.zeros((cap, sizes[0]), dt)
        self.lb = np.zeros(cap, np.int64)
        self.tb = np.zeros((cap, sizes[L]), dt)

        self.sizes_c = <fbp_idx *>calloc(L + 1, sizeof(fbp_idx))
        self.table = <void **>calloc(8 * L, sizeof(void *))
        if self.sizes_c == NULL or self.table == NULL:
            raise MemoryError()
        for l in range(L + 1):
            self.sizes_c[l] = sizes[l]
        groups = [self.W, self.b, self.dW, self.db, self.vW, self.vb, self.h, self.dh]
        for g in range(8):
            for l in range(L):
                self.table[g * L + l] = NULL if groups[g] is None else _p(groups[g][l])
        self.m.L = <int>L
        self.m.sizes = self.sizes_c
        self.m.act = self.act_code
        self.m.loss = self.loss_code
        self.m.cap = cap
        self.m.W, self.m.b = self.table, self.table + L
        self.m.dW, self.m.db = self.table + 2 * L, self.table + 3 * L
        self.m.vW, self.m.vb = self.table + 4 * L, self.table + 5 * L
        self.m.h, self.m.dh = self.table + 6 * L, self.table + 7 * L
        if not momentum:
            self.m.vW = NULL
            self.m.vb = NULL
        self.m.xb = _p(self.xb)
        self.m.tb = _p(self.tb)
        self.m.lb = <int64_t *>_p(self.lb)

    def __dealloc__(self):
        free(self.table)
        free(self.sizes_c)

    @property
    def has_momentum(self):
        return self.vW is not None


cdef inline fbp_step_opts _step_opts(int mode, double lr, double weight_decay, double clip_norm,
                                     double momentum, bint count_correct):
    cdef fbp_step_opts opt
    opt.mode = mode
    opt.lr = lr
    opt.weight_decay = weight_decay
    opt.clip_norm = clip_norm
    opt.momentum = momentum
    opt.count_correct = count_correct
    return opt


def mlp_step(MLPWorkspace ws, x, target, int mode, double lr=0.0, double weight_decay=0.0,
             double clip_norm=0.0, double momentum=0.0, bint count_correct=False):
    """One native call: forward, loss, backward and (mode TRAIN) the update.

    x (N, I) with N <= ws.cap; target: int64 labels (N,) for softmax-xent (any
    integer dtype is converted), or float targets (N, outputs). Returns
    (loss, grad_norm, ncorrect); grad_norm is -1.0 unless clipping ran.
    A well-formed call (C-contiguous x of the workspace dtype, int64 labels)
    allocates no arrays.
    """
    fn = "mlp_step"
    cdef cnp.ndarray xa, ta
    cdef fbp_idx N, C = ws.sizes[len(ws.sizes) - 1]
    if not isinstance(x, np.ndarray) or not cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>x) or \
            not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>x):
        x = _float_input(fn, "x", x, ndim=2, dtype=ws.dtype, blas=True)
    xa = <cnp.ndarray>x
    if xa.dtype is not ws.dtype and xa.dtype != ws.dtype:
        _float_input(fn, "x", x, ndim=2, dtype=ws.dtype)  # raises the dtype error
    if cnp.PyArray_NDIM(xa) != 2 or cnp.PyArray_DIM(xa, 1) != ws.sizes[0]:
        raise ValueError(f"{fn}: x must have shape (N, {ws.sizes[0]}), got {(<object>x).shape}")
    N = cnp.PyArray_DIM(xa, 0)
    if N > ws.cap:
        raise ValueError(f"{fn}: batch of {N} rows exceeds the workspace capacity {ws.cap}")
    if N == 0:
        raise ValueError(f"{fn}: empty batch")
    if momentum != 0.0 and not ws.has_momentum:
        raise ValueError(f"{fn}: momentum != 0 needs a workspace built with momentum buffers")
    cdef int use_labels = 0
    cdef fbp_idx bad
    if mode != STEP_FORWARD:
        ta = target if isinstance(target, np.ndarray) else np.asarray(target)
        if ws.loss_code == 0 and cnp.PyArray_NDIM(ta) == 1:
            if cnp.PyArray_TYPE(ta) != cnp.NPY_INT64 or not cnp.PyArray_ISCARRAY_RO(ta):
                if ta.dtype.kind not in "iu":
                    raise TypeError(f"{fn}: labels must be integers, got dtype {ta.dtype}")
                ta = np.require(ta, np.int64, ["C", "A"])
            if cnp.PyArray_DIM(ta, 0) != N:
                raise ValueError(f"{fn}: got {cnp.PyArray_DIM(ta, 0)} labels for {N} rows of x")
            with nogil:
                bad = fbp_first_bad_label(N, <int64_t *>cnp.PyArray_DATA(ta), C)
            if bad >= 0:
                raise ValueError(f"{fn}: labels must be in [0, {C}), got {target[bad]} at index {bad}")
            use_labels = 1
        else:
            if cnp.PyArray_NDIM(ta) == 1 and C == 1:
                ta = ta.reshape(-1, 1)
            ta = _float_input(fn, "target", ta, dtype=ws.dtype)
            if cnp.PyArray_NDIM(ta) != 2 or cnp.PyArray_DIM(ta, 0) != N or \
                    cnp.PyArray_DIM(ta, 1) != C:
                raise ValueError(f"{fn}: targets must have shape ({N}, {C}), "
                                 f"got {(<object>ta).shape}")
    else:
        ta = None
    cdef fbp_step_opts opt = _step_opts(mode, lr, weight_decay, clip_norm, momentum,
                                        count_correct)
    cdef fbp_step_out out
    cdef void *px = cnp.PyArray_DATA(xa)
    cdef void *pt = NULL if ta is None else cnp.PyArray_DATA(ta)
    cdef int64_t *plab = <int64_t *>pt if use_labels else NULL
    cdef void *ptf = NULL if use_labels else pt
    if ws.dtype.itemsize == 4:
        with nogil:
            fbp_mlp_step_f32(&ws.m, N, <float *>px, plab, <float *>ptf, &opt, &out)
    else:
        with nogil:
            fbp_mlp_step_f64(&ws.m, N, <double *>px, plab, <double *>ptf, &opt, &out)
    return out.loss, out.grad_norm, out.ncorrect


def mlp_epoch(MLPWorkspace ws, X, target, order, Py_ssize_t batch_size, double lr,
              double weight_decay=0.0, double clip_norm=0.0, double momentum=0.0,
              bint count_correct=False):
    """One epoch of training steps in one native call; returns (loss, ncorrect).

    X (n, I) C-contiguous of the workspace dtype; target int64 labels (n,) for
    softmax-xent or float targets (n, outputs); order int64 (n,), a permutation
    of range(n); batches of batch_size <= ws.cap rows are gathered in C.
    """
    fn = "mlp_epoch"
    X = _float_input(fn, "X", X, ndim=2, dtype=ws.dtype)
    cdef fbp_idx n = X.shape[0], C = ws.sizes[len(ws.sizes) - 1]
    if X.shape[1] != ws.sizes[0]:
        raise ValueError(f"{fn}: X must have shape (n, {ws.sizes[0]}), got {X.shape}")
    if not 1 <= batch_size <= ws.cap:
        raise ValueError(f"{fn}: batch_size must be in [1, {ws.cap}], got {batch_size}")
    if momentum != 0.0 and not ws.has_momentum:
        raise ValueError(f"{fn}: momentum != 0 needs a workspace built with momentum buffers")
    order = np.asarray(order)
    if order.dtype.kind not in "iu" or order.shape != (n,):
        raise ValueError(f"{fn}: order must be integers of shape ({n},), got "
                         f"{order.dtype} {order.shape}")
    order = np.require(order, np.int64, ["C", "A"])
    if fbp_first_bad_label(n, <int64_t *>_p(order), n) >= 0:
        raise ValueError(f"{fn}: order must index rows in [0, {n})")
    t = np.asarray(target)
    cdef int use_labels = ws.loss_code == 0 and t.ndim == 1
    cdef fbp_idx bad
    if use_labels:
        t = _labels(fn, t, n, C)
    else:
        if t.ndim == 1 and C == 1:
            t = t.reshape(-1, 1)
        t = _float_input(fn, "target", t, ndim=2, dtype=ws.dtype)
        if t.shape != (n, C):
            raise ValueError(f"{fn}: targets must have shape ({n}, {C}), got {t.shape}")
    cdef fbp_step_opts opt = _step_opts(STEP_TRAIN, lr, weight_decay, clip_norm, momentum,
                                        count_correct)
    cdef fbp_step_out out
    cdef void *px = _p(X)
    cdef void *pt = _p(t)
    cdef int64_t *po = <int64_t *>_p(order)
    cdef int64_t *plab = <int64_t *>pt if use_labels else NULL
    cdef void *ptf = NULL if use_labels else pt
    cdef fbp_idx B = batch_size
    if ws.dtype.itemsize == 4:
        with nogil:
            fbp_mlp_epoch_f32(&ws.m, n, <float *>px, plab, <float *>ptf, po, B, &opt, &out)
    else:
        with nogil:
            fbp_mlp_epoch_f64(&ws.m, n, <double *>px, plab, <double *>ptf, po, B, &opt, &out)
    return out.loss, out.ncorrect
