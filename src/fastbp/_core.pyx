# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""fastbp._core: the one binding of both backends.

Every public kernel is one function here, for NumPy arrays (the CPU kernels of
csrc/) and for CUDA arrays (csrc/cuda/, through the table fastbp._cuda exports).
An argument is first described from its C-level layout (a `Desc`: data pointer,
shape, element kind and size, contiguity, writability, device, stream), never
from Python attributes a subclass could override; it is then checked (dtype,
ndim, shape, device, overlap, label range), and a bad one raises TypeError or
ValueError naming what was expected and what was given, before any kernel
runs. Inputs that are not C-contiguous and aligned are copied (by NumPy, or by
the CUDA array's own library) after their shape has been checked; outputs
(``out=`` buffers, in-place parameters) must already be C-contiguous, aligned
and writable, since a copy would silently lose the result. The entry points
of both backends have the same shapes (csrc/fbp_api.h), so each function has
one path: describe, check, call ``backend.<kernel>(device, stream, dsize, ...)``.
"""
import operator
import os as _os
import warnings as _warnings

import numpy as np
cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t, uint16_t, uint64_t, uint8_t, uintptr_t
from libc.stdlib cimport calloc, free, malloc

from fastbp._api cimport *

cnp.import_array()

cdef extern from "fastbp.h" nogil:
    ctypedef Py_ssize_t fbp_idx
    const fbp_backend fbp_cpu
    ctypedef void (*fbp_sgemm_fn)(char *, char *, int *, int *, int *, float *, float *,
                                  int *, float *, int *, float *, float *, int *)
    ctypedef void (*fbp_dgemm_fn)(char *, char *, int *, int *, int *, double *, double *,
                                  int *, double *, int *, double *, double *, int *)
    ctypedef int (*fbp_blas_get_threads_fn)()
    ctypedef void (*fbp_blas_set_threads_fn)(int)
    void fbp_set_blas(fbp_sgemm_fn, fbp_dgemm_fn, fbp_blas_get_threads_fn, fbp_blas_set_threads_fn)
    void fbp_set_num_threads(int)
    int fbp_get_num_threads()
    void fbp_set_local_threads(int)
    int fbp_get_local_threads()
    int fbp_cpu_count()
    int fbp_pool_workers(int *create_error)
    void fbp_pool_stats(double *out)
    double fbp_step_floor_f32(int L, const fbp_idx *widths, fbp_idx N, float **h, float **dz,
                              float **dh, float **W, float **dW, const float *src, float *dst,
                              fbp_idx n_state, int threads, int reps) nogil
    double fbp_step_floor_f64(int L, const fbp_idx *widths, fbp_idx N, double **h,
                              double **dz, double **dh, double **W, double **dW,
                              const double *src, double *dst, fbp_idx n_state, int threads,
                              int reps) nogil
    int fbp_set_force_parallel(int on)
    void fbp_set_wait_us(double us)
    double fbp_get_wait_us()
    int fbp_init_cpu(int max_level)
    int fbp_poisson(int dev, void *stream, int dsize, int64_t N, int64_t C, const void *z,
                    const void *t, void *dz, double *loss)

    ctypedef struct fbp_mlp:
        int dsize
        int L
        const fbp_idx *sizes
        const int *act
        int loss
        fbp_idx cap
        void **buf[FBP_NBUF]
        const double *drop
        uint8_t **keep
        void *xb
        void *tb
        void *wb
        int64_t *lb
        int mm
        void **w16
        void **a16
        void *g16
    ctypedef struct fbp_epoch_out:
        double loss_sum, weight_sum, grad_norm
        int64_t ncorrect
        double *batches
    int fbp_mlp_step(const fbp_mlp *m, int64_t N, const void *x, const int64_t *labels,
                     const void *t, const void *w, const fbp_step_opts *opt, fbp_step_out *out)
    int fbp_mlp_epoch(const fbp_mlp *m, int64_t n, const void *X, const int64_t *labels,
                      const void *t, const void *w, const int64_t *order, int64_t B, int64_t s0,
                      int64_t s1, const fbp_step_opts *opt, fbp_epoch_out *out)


# ---- codes (csrc/fbp_api.h), checked against the registries (fastbp.ops) ----------------

from fastbp import ops as _ops


def _agree(what, registry, int count, name_of):
    """The registry and the C table name the same ops with the same codes."""
    c_names = {name_of(k).decode(): k for k in range(count)}
    r_names = {e.name: e.code for e in registry.values()}
    if c_names != r_names:
        raise ImportError(f"fastbp._core: the {what} of csrc/fbp_api.h {c_names} and of "
                          f"fastbp.ops {r_names} disagree; rebuild, or fix the one that lags")


_agree("activations", _ops.ACTIVATIONS, FBP_NACT, fbp_act_name)
_agree("losses", _ops.LOSSES, FBP_NLOSS, fbp_loss_name)
_agree("optimizers", _ops.OPTIMIZERS, FBP_NOPT, fbp_opt_name)

#: activation name -> code; None and "identity" are the affine layer
ACTIVATIONS = {None: FBP_ACT_NONE}
ACTIVATIONS.update({a.name: a.code for a in _ops.ACTIVATIONS.values()})
#: activation code -> name
ACT_NAMES = {a.code: a.name for a in _ops.ACTIVATIONS.values()}
#: loss name -> code
LOSSES = {l.name: l.code for l in _ops.LOSSES.values()}
#: optimizer name -> code
OPTIMIZERS = {o.name: o.code for o in _ops.OPTIMIZERS.values()}
#: the buffers of an MLP workspace, in the order of their codes
BUFFERS = tuple(fbp_buf_name(k).decode() for k in range(FBP_NBUF))
STEP_FORWARD, STEP_LOSS, STEP_GRAD, STEP_TRAIN, STEP_UPDATE, STEP_BACKWARD = (
    FBP_MODE_FORWARD, FBP_MODE_LOSS, FBP_MODE_GRAD, FBP_MODE_TRAIN, FBP_MODE_UPDATE,
    FBP_MODE_BACKWARD)

# The BLAS fastbp calls (OpenBLAS's Fortran ABI on the CPU, cuBLAS on the GPU)
# takes 32-bit integer dimensions.
BLAS_INT_MAX = 2**31 - 1


def _act_code(fn, activation):
    return _ops.activation(fn, activation, allow_none=True).code


# ---- CPU dispatch, BLAS, threads -----------------------------------------------------

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


cdef class StepFloor:
    """The floor of a training step, for the benchmarks: the step's products for a
    net of these widths at batch N (per layer h W, h^T dz, and dz W^T for all but
    the first), each one whole BLAS call through the provider in use, plus
    n_state elements copied on fastbp's pool; no Python between them
    (fbp_step_floor in csrc/runtime.c). ``run(reps, threads)`` returns the mean
    of reps steps in seconds; calling the object runs one step."""
    cdef list bufs
    cdef int L
    cdef object dtype
    cdef Py_ssize_t N, n_state
    cdef Py_ssize_t w[65]
    cdef void *p[5][65]

    def __init__(self, widths, Py_ssize_t N, dtype=np.float32, Py_ssize_t n_state=0):
        widths = [int(v) for v in widths]
        self.L = len(widths) - 1
        if not 1 <= self.L <= 64:
            raise ValueError(f"StepFloor: expected 2 to 65 widths, got {len(widths)}")
        if N < 1 or n_state < 0 or min(widths) < 1:
            raise ValueError(f"StepFloor: expected positive sizes, got widths {widths}, "
                             f"N={N}, n_state={n_state}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"StepFloor: expected float32 or float64, got {self.dtype}")
        _check_blas_dims("StepFloor", [("N", N)] + [(f"width {i}", v) for i, v in enumerate(widths)])
        self.N, self.n_state = N, n_state
        rng = np.random.default_rng(0)
        h = [rng.standard_normal((N, v)).astype(self.dtype) for v in widths]
        dz = [rng.standard_normal((N, v)).astype(self.dtype) for v in widths]
        dh = [np.empty((N, v), self.dtype) for v in widths]
        W = [(rng.standard_normal((i, o)) * 0.01).astype(self.dtype)
             for i, o in zip(widths[:self.L], widths[1:])]
        dW = [np.empty_like(a) for a in W]
        state = [np.ones(max(n_state, 1), self.dtype), np.empty(max(n_state, 1), self.dtype)]
        self.bufs = [h, dz, dh, W, dW, state]
        cdef int i, l
        for l in range(self.L + 1):
            self.w[l] = widths[l]
        for i in range(5):
            for l, a in enumerate(self.bufs[i]):
                self.p[i][l] = <void *><size_t>a.ctypes.data

    def run(self, int reps=1, int threads=1):
        if reps < 1 or threads < 1:
            raise ValueError(f"StepFloor.run: expected reps >= 1 and threads >= 1, "
                             f"got {reps}, {threads}")
        cdef void *src = <void *><size_t>self.bufs[5][0].ctypes.data
        cdef void *dst = <void *><size_t>self.bufs[5][1].ctypes.data
        cdef double ns
        if self.dtype == np.float32:
            with nogil:
                ns = fbp_step_floor_f32(self.L, self.w, self.N, <float **>self.p[0],
                                        <float **>self.p[1], <float **>self.p[2],
                                        <float **>self.p[3], <float **>self.p[4],
                                        <const float *>src, <float *>dst, self.n_state,
                                        threads, reps)
        else:
            with nogil:
                ns = fbp_step_floor_f64(self.L, self.w, self.N, <double **>self.p[0],
                                        <double **>self.p[1], <double **>self.p[2],
                                        <double **>self.p[3], <double **>self.p[4],
                                        <const double *>src, <double *>dst, self.n_state,
                                        threads, reps)
        return ns * 1e-9

    def __call__(self):
        self.run(1, get_num_threads())


def set_num_threads(n):
    """Set the number of threads fastbp's kernels and GEMMs use (n >= 1).

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
    """The number of threads fastbp's kernels use (in the calling thread: its
    own count inside ``local_threads``)."""
    return fbp_get_num_threads()


def _set_local_threads(n):
    """This thread's own count (0: none, the process-wide one applies)."""
    fbp_set_local_threads(n)


def _get_local_threads():
    return fbp_get_local_threads()


def cpu_count():
    """The CPUs this process may run on (its affinity mask)."""
    return fbp_cpu_count()


def pool_info():
    """The thread pool's state: workers started, the errno of the last thread
    that could not start (0 if none), the idle workers' spin window, and what
    the pool has measured: a sleeping worker's wake-up and a spinning one's
    hand-off latency (us), one element of a memory pass (ns), parallel jobs
    run, jobs the backoff kept on the caller, and the backoff left (ms)."""
    cdef int err = 0
    cdef int n = fbp_pool_workers(&err)
    cdef double st[6]
    fbp_pool_stats(st)
    return {"workers": n, "create_error": err, "wait_us": fbp_get_wait_us(),
            "wake_us": st[0], "handoff_us": st[1], "pass_ns": st[2], "jobs": int(st[3]),
            "jobs_backed_off": int(st[4]), "backoff_ms": st[5]}


def _force_parallel(bint on):
    """Tests: split every kernel that can split over the thread count, whatever
    it costs, so that thread-count tests run the parallel paths at small sizes.
    Returns the previous setting."""
    return bool(fbp_set_force_parallel(on))


def _set_wait_us(double us):
    """How long idle workers spin before sleeping (a tuning knob for bench/)."""
    fbp_set_wait_us(us)


# ---- backends ------------------------------------------------------------------------------

cdef const fbp_backend *_cuda_table = NULL
_cuda_mod = None


cdef object _cuda():
    """fastbp.cuda, imported when the first CUDA array arrives."""
    global _cuda_mod
    if _cuda_mod is None:
        from fastbp import cuda
        _cuda_mod = cuda
    return _cuda_mod


cdef const fbp_backend *_backend(int dev) except NULL:
    """The table of the backend that owns device dev (-1: the CPU)."""
    global _cuda_table
    if dev < 0:
        return &fbp_cpu
    if _cuda_table == NULL:
        cap = _cuda().backend_capsule()
        _cuda_table = <const fbp_backend *>PyCapsule_GetPointer(cap, "fastbp.backend")
    return _cuda_table


cdef inline int _check(int rc, const fbp_backend *be) except -1:
    if rc != 0:
        raise RuntimeError("fastbp: " + be.last_error().decode("utf-8", "replace"))
    return 0


# ---- array descriptions ---------------------------------------------------------------------

DEF MAXDIM = 64

cdef struct Desc:
    char *ptr
    int ndim
    Py_ssize_t shape[MAXDIM]
    Py_ssize_t size
    int itemsize
    char kind          # NumPy's dtype kind: 'f', 'i', 'u', 'b', 'c', ...
    bint native        # native byte order
    bint contig        # C-contiguous and aligned
    bint writeable
    int device         # -1: host memory (NumPy), else the CUDA device
    void *stream       # the cudaStream_t work goes to (NULL: the legacy default)


cdef bint _is_device(object a):
    """Whether a is a CUDA array (CuPy, a PyTorch CUDA tensor, or anything with
    __cuda_array_interface__); host data of any kind is not."""
    if isinstance(a, np.ndarray):
        return False
    if type(a).__module__.startswith("torch"):
        return bool(getattr(a, "is_cuda", False))
    try:
        return hasattr(a, "__cuda_array_interface__")
    except Exception:
        return False


cdef int _describe(str fn, str name, object a, Desc *d) except -1:
    """Fill d from a's C-level description (an ndarray, or a CUDA array)."""
    cdef cnp.ndarray arr
    cdef int k
    if isinstance(a, np.ndarray):
        arr = <cnp.ndarray>a
        d.ndim = cnp.PyArray_NDIM(arr)
        d.size = 1
        for k in range(d.ndim):
            d.shape[k] = cnp.PyArray_DIM(arr, k)
            d.size *= d.shape[k]
        d.ptr = <char *>cnp.PyArray_DATA(arr)
        d.itemsize = cnp.PyArray_ITEMSIZE(arr)
        d.kind = (b'f' if cnp.PyArray_ISFLOAT(arr) else b'i' if cnp.PyArray_ISSIGNED(arr)
                  else b'u' if cnp.PyArray_ISUNSIGNED(arr) else b'b' if cnp.PyArray_ISBOOL(arr)
                  else b'c' if cnp.PyArray_ISCOMPLEX(arr) else b'O')[0]
        d.native = cnp.PyArray_ISNOTSWAPPED(arr)
        d.contig = cnp.PyArray_ISCARRAY_RO(arr)
        d.writeable = cnp.PyArray_ISWRITEABLE(arr)
        d.device = -1
        d.stream = NULL
        return 0
    ptr, shape, dtype, contig, readonly, dev, stream = _cuda().describe(fn, name, a)
    if len(shape) > MAXDIM:
        raise ValueError(f"{fn}: {name} has {len(shape)} dimensions, at most {MAXDIM} are supported")
    d.ndim = len(shape)
    d.size = 1
    for k in range(d.ndim):
        d.shape[k] = shape[k]
        d.size *= d.shape[k]
    d.ptr = <char *><uintptr_t>ptr
    d.itemsize = dtype.itemsize
    d.kind = ord(dtype.kind)
    d.native = dtype.isnative
    d.contig = contig
    d.writeable = not readonly
    d.device = dev
    d.stream = <void *><uintptr_t>stream
    return 0


cdef tuple _shape(const Desc *d):
    return tuple([d.shape[k] for k in range(d.ndim)])


cdef object _dtype(object a):
    """a's dtype, for messages."""
    return a.dtype if isinstance(a, np.ndarray) else _cuda().dtype_of(a)


cdef object _where(int dev):
    return "the host (NumPy)" if dev < 0 else f"CUDA device {dev}"


cdef object _float_view(str fn, str name, object a, Desc *d, int ndim=-1,
                        const Desc *like=NULL, object like_obj=None):
    """a described and checked as a float32/float64 array, not yet copied: the
    shape checks that follow come before any copy, so a huge broadcast view is
    refused instead of allocated. like: the other inputs (dtypes never mix)."""
    if not isinstance(a, np.ndarray) and not _is_device(a):
        a = np.asarray(a)
    _describe(fn, name, a, d)
    if d.kind != b'f' or (d.itemsize != 4 and d.itemsize != 8):
        raise TypeError(f"{fn}: {name} must be a float32 or float64 array, got dtype {_dtype(a)}")
    if like != NULL and d.itemsize != like.itemsize:
        raise TypeError(
            f"{fn}: {name} has dtype {_dtype(a)} but the inputs are "
            f"{np.dtype(_dtype(like_obj)).newbyteorder('=')}; "
            "fastbp never casts silently, convert it with .astype()")
    if ndim >= 0 and d.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D, got {d.ndim}-D array of shape {_shape(d)}")
    return a


cdef object _contig(str fn, str name, object a, Desc *d):
    """a itself if the kernels can read it as is, else a C-contiguous, aligned,
    native copy (made on a's own device), described into d."""
    if d.contig and d.native:
        return a
    if d.device < 0:
        dt = a.dtype if a.dtype.isnative else a.dtype.newbyteorder("=")
        a = np.require(a, dt, ["C", "A"])
    else:
        if not d.native:
            raise TypeError(f"{fn}: {name} must be native-endian, got dtype {_dtype(a)}")
        a = _cuda().contiguous(fn, name, a)
    _describe(fn, name, a, d)
    return a


cdef object _float_input(str fn, str name, object a, Desc *d, int ndim=-1,
                         const Desc *like=NULL, object like_obj=None):
    return _contig(fn, name, _float_view(fn, name, a, d, ndim, like, like_obj), d)


cdef int _need_shape(str fn, str name, const Desc *d, tuple shape) except -1:
    if _shape(d) != shape:
        raise ValueError(f"{fn}: {name} must have shape {shape}, got {_shape(d)}")
    return 0


cdef object _out_buffer(str fn, str name, object out, Desc *d, tuple shape, const Desc *like,
                        object like_obj):
    """The caller's output buffer for an array of like's dtype and device (checked),
    or a new one (NumPy, or like's CUDA library)."""
    if out is None:
        if like.device < 0:
            out = np.empty(shape, np.float32 if like.itemsize == 4 else np.float64)
        else:
            out = _cuda().empty(fn, like_obj, shape, np.float32 if like.itemsize == 4 else np.float64)
        _describe(fn, name, out, d)
        return out
    if not isinstance(out, np.ndarray) and not _is_device(out):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(out).__name__}")
    _describe(fn, name, out, d)
    if d.kind != b'f' or d.itemsize != like.itemsize or not d.native:
        raise TypeError(f"{fn}: {name} must have dtype "
                        f"{np.dtype(np.float32 if like.itemsize == 4 else np.float64)}, "
                        f"got {_dtype(out)}")
    _need_shape(fn, name, d, shape)
    _writable(fn, name, d)
    return out


cdef int _writable(str fn, str name, const Desc *d) except -1:
    if not d.contig:
        raise ValueError(f"{fn}: {name} must be C-contiguous and aligned to be written in place")
    if not d.writeable:
        raise ValueError(f"{fn}: {name} is read-only")
    return 0


cdef int _same_device(str fn, list names, list descs) except -1:
    """All the arrays on one device (the host, or one CUDA device); None skipped."""
    cdef Desc *d
    cdef Desc *d0 = NULL
    cdef int k
    for k in range(len(descs)):
        if descs[k] is None:
            continue
        d = <Desc *><uintptr_t>descs[k]
        if d0 == NULL:
            d0, n0 = d, names[k]
        elif d.device != d0.device:
            raise ValueError(f"{fn}: {names[k]} is on {_where(d.device)}, {n0} on {_where(d0.device)}")
    return 0


cdef inline object _dp(Desc *d):
    return <uintptr_t>d


cdef int _no_overlap(str fn, str out_name, const Desc *out, list names, list descs,
                     tuple allow_same=()) except -1:
    """out must not share memory with the inputs (all contiguous by now), except
    starting at the same address as one of allow_same (the in-place kernels)."""
    cdef Desc *a
    cdef Py_ssize_t na, no = out.size * out.itemsize
    cdef int k
    for k in range(len(descs)):
        if descs[k] is None:
            continue
        a = <Desc *><uintptr_t>descs[k]
        na = a.size * a.itemsize
        if na == 0 or no == 0 or a.device != out.device:
            continue
        if names[k] in allow_same and a.ptr == out.ptr and na == no:
            continue
        if out.ptr < a.ptr + na and a.ptr < out.ptr + no:
            raise ValueError(f"{fn}: {out_name} overlaps {names[k]} in memory")
    return 0


cdef int _check_blas_dims(str fn, list dims) except -1:
    for name, d in dims:
        if d > BLAS_INT_MAX:
            raise ValueError(
                f"{fn}: {name} = {d} exceeds the BLAS 32-bit dimension limit {BLAS_INT_MAX}")
    return 0


cdef double _real(str fn, str name, object v) except? -1.0:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(v).__name__}")
    return float(v)


cdef object _labels(str fn, object target, Desc *d, Py_ssize_t N, int64_t C, str what):
    """Integer labels (N,) of any integer dtype, as a C-contiguous int64 array on
    their own device, range-checked by that device's kernels. what: the rows'
    name in messages ("logits", "x")."""
    cdef int64_t out[4]
    cdef const fbp_backend *be
    if not isinstance(target, np.ndarray) and not _is_device(target):
        target = np.asarray(target)
    _describe(fn, "target", target, d)
    if d.kind != b'i' and d.kind != b'u':
        what_ = "1-D targets must be integer class labels" if what == "logits" else \
            "labels must be integers"
        raise TypeError(f"{fn}: {what_}, got dtype {_dtype(target)}")
    if d.shape[0] != N:
        raise ValueError(f"{fn}: got {d.shape[0]} labels for {N} rows of {what}")
    orig = target
    if not (d.kind == b'i' and d.itemsize == 8 and d.contig and d.native):
        # uint64 above 2^63 wraps negative: caught by the range check
        if d.device < 0:
            target = np.require(target, np.int64, ["C", "A"])
        else:
            target = _cuda().as_int64(fn, "target", target)
        _describe(fn, "target", target, d)
    if N == 0:
        return target
    be = _backend(d.device)
    with nogil:
        rc = be.check_labels(d.device, d.stream, N, <int64_t *>d.ptr, C, out)
    _check(rc, be)
    if out[2] >= 0:  # the values as given (uint64 ones wrapped in the int64 copy)
        host = isinstance(orig, np.ndarray)
        if what == "logits":
            lo, hi = (int(orig.min()), int(orig.max())) if host else (out[0], out[1])
            raise ValueError(f"{fn}: labels must be in [0, {C}), got values in [{lo}, {hi}]")
        bad = int(orig[out[2]]) if host else out[3]
        raise ValueError(f"{fn}: labels must be in [0, {C}), got {bad} at index {out[2]}")
    return target


# ---- activations ---------------------------------------------------------------------------

cdef object _act_forward(str fn, int act, object x, object out):
    cdef Desc dx, do
    cdef const fbp_backend *be
    cdef int rc
    x = _float_input(fn, "x", x, &dx)
    if dx.device >= 0:
        _ops.require(fn, "cuda", "activation", [ACT_NAMES[act]])
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
    if ddy.device >= 0:
        _ops.require(fn, "cuda", "activation", [ACT_NAMES[act]])
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
    cdef int mm = _matmul_precision(fn, matmul_precision, _dtype(x), dx.device >= 0)
    x = _contig(fn, "x", x, &dx)
    W = _contig(fn, "W", W, &dW)
    if b is not None:
        b = _contig(fn, "b", b, &db)
    out = _out_buffer(fn, "out", out, &dy, (N, O), &dx, x)
    descs = [_dp(&dx), _dp(&dW), None if b is None else _dp(&db), _dp(&dy)]
    _same_device(fn, ["x", "W", "b", "out"], descs)
    _no_overlap(fn, "out", &dy, ["x", "W", "b"], descs[:3])
    cdef void *pb = NULL if b is None else db.ptr
    if dx.device >= 0:
        _ops.require(fn, "cuda", "activation", [ACT_NAMES[act]])
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
    cdef int mm = _matmul_precision(fn, matmul_precision, _dtype(dy), ddy.device >= 0)
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
    if ddy.device >= 0:
        _ops.require(fn, "cuda", "activation", [ACT_NAMES[act]])
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
    if be.bce == NULL:
        raise NotImplementedError(f"{fn} is not implemented for {_where(dz.device)} yet")
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
    if dz.device >= 0:
        raise NotImplementedError(f"{fn} is not implemented for {_where(dz.device)} yet")
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


# ---- the MLP training step ----------------------------------------------------------------

def _grad_block(sizes, dt):
    """(block, dW, db): every layer's gradients as views of one zeroed block, so that
    a data-parallel step reduces them all with one Allreduce (fastbp.distributed).
    The last layer comes first: the backward pass finishes its gradients first, so
    the block fills front to back, the order in which a reduction overlapping the
    backward pass (PyTorch DDP's buckets) would send it. Each piece starts on a
    64-byte line, as a separate allocation would; the padding stays zero."""
    cdef Py_ssize_t A = 64 // dt.itemsize, n = 0, L = len(sizes) - 1, l
    offsets = [None] * L
    for l in range(L - 1, -1, -1):
        ow = n
        n += -(-sizes[l] * sizes[l + 1] // A) * A
        offsets[l] = (ow, n)
        n += -(-sizes[l + 1] // A) * A
    raw = np.zeros(n + A, dt)
    start = (-(raw.ctypes.data // dt.itemsize)) % A
    block = raw[start:start + n]
    dW = [block[ow:ow + sizes[l] * sizes[l + 1]].reshape(sizes[l], sizes[l + 1])
          for l, (ow, ob) in enumerate(offsets)]
    db = [block[ob:ob + sizes[l + 1]] for l, (ow, ob) in enumerate(offsets)]
    return block, dW, db


cdef class MLPWorkspace:
    """Everything an MLP step writes besides the parameters, allocated once.

    Holds the layer outputs h[l] and their gradients dh[l] for batches of up to
    ``cap`` rows, the gradients dW[l], db[l] (views of one block, ``grad``: see
    _grad_block), dropout's hd[l] and masks, and the C
    pointer table over them and over the parameters and optimizer state it was
    built with; the arrays are kept referenced here so the pointers stay valid.
    ``buffers[name]`` is the list of a buffer's arrays by layer (names: BUFFERS;
    None for a buffer this workspace does not have). activation: one name for
    the hidden layers (the output layer is affine), or one per layer. state:
    {"vW": [...], "vb": [...], "sW": [...], "sb": [...]} the optimizer's state
    arrays (any of them absent or None). dropout: one rate in [0, 1) per layer
    (the output layer's 0), or None.
    """
    cdef fbp_mlp m
    cdef fbp_idx *sizes_c
    cdef int *act_c
    cdef double *drop_c
    cdef uint8_t **keep_c
    cdef void **table
    cdef Py_ssize_t *nbytes_c
    cdef readonly dict buffers
    cdef readonly list keep
    cdef readonly object xb, lb, tb, wb, grad
    cdef readonly tuple sizes, activations, dropout
    cdef readonly object dtype
    cdef readonly Py_ssize_t cap
    cdef readonly int loss_code, device
    cdef readonly str matmul_precision
    cdef list bf16_bufs
    cdef void **bf16_table

    def __cinit__(self, W, b, activation, loss, Py_ssize_t cap, state=None, dropout=None):
        fn = "MLPWorkspace"
        self.table = NULL
        self.nbytes_c = NULL
        self.sizes_c = NULL
        self.act_c = NULL
        self.drop_c = NULL
        self.keep_c = NULL
        self.bf16_table = NULL
        self.matmul_precision = "float32"
        self.device = -1
        cdef Py_ssize_t L = len(W), l
        cdef Desc d
        if L < 1 or len(b) != L:
            raise ValueError(f"{fn}: need one W and one b per layer, got {len(W)} and {len(b)}")
        if isinstance(activation, (list, tuple)):
            if len(activation) != L:
                raise ValueError(f"{fn}: need one activation per layer ({L}), got {len(activation)}")
            acts = [_act_code(fn, a) for a in activation]
        else:
            acts = [_act_code(fn, activation)] * (L - 1) + [FBP_ACT_NONE]
        if loss not in LOSSES:
            raise ValueError(f"{fn}: unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
        self.loss_code = LOSSES[loss]
        if cap < 1:
            raise ValueError(f"{fn}: cap must be >= 1, got {cap}")
        if not isinstance(W[0], np.ndarray):
            raise TypeError(f"{fn}: parameters must be float32 or float64 arrays, "
                            f"got {type(W[0]).__name__}")
        _describe(fn, "W[0]", W[0], &d)
        if d.kind != b'f' or (d.itemsize != 4 and d.itemsize != 8) or d.ndim != 2:
            raise TypeError(f"{fn}: parameters must be 2-D float32 or float64 arrays, "
                            f"got {W[0].dtype} of {d.ndim} dimensions")
        dt = np.dtype(np.float32 if d.itemsize == 4 else np.float64)
        sizes = [d.shape[0], d.shape[1]]
        for l in range(1, L):
            if not isinstance(W[l], np.ndarray):
                raise TypeError(f"{fn}: W[{l}] must be a {dt} array")
            _describe(fn, f"W[{l}]", W[l], &d)
            sizes.append(d.shape[d.ndim - 1] if d.ndim else -1)
        state = dict(state or {})
        state_names = _ops.state_buffers(_ops.STATE_BUFFERS)
        for key in state:
            if key not in state_names:
                raise ValueError(f"{fn}: unknown optimizer state {key!r}; expected one of "
                                 f"{state_names}")
        for l in range(L):
            wshape, bshape = (sizes[l], sizes[l + 1]), (sizes[l + 1],)
            for name, group in (("W", W), ("b", b)) + tuple(
                    (k, state.get(k)) for k in state_names):
                shape = wshape if name.endswith("W") else bshape
                if group is None:
                    continue
                a = group[l]
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"{fn}: {name}[{l}] must be a {dt} array")
                _describe(fn, f"{name}[{l}]", a, &d)
                if d.kind != b'f' or d.itemsize != dt.itemsize or not d.native:
                    raise TypeError(f"{fn}: {name}[{l}] must be a {dt} array")
                _need_shape(fn, f"{name}[{l}]", &d, shape)
                _writable(fn, f"{name}[{l}]", &d)
        if dropout is None:
            drops = [0.0] * L
        else:
            drops = [float(p) for p in dropout]
            if len(drops) != L or drops[L - 1] != 0.0 or not all(0.0 <= p < 1.0 for p in drops):
                raise ValueError(f"{fn}: dropout must be one rate in [0, 1) per layer, "
                                 f"the output layer's 0, got {dropout!r}")
        _check_blas_dims(fn, [("cap", cap)] + [(f"width {i}", s) for i, s in enumerate(sizes)])
        self.sizes = tuple(int(s) for s in sizes)
        self.activations = tuple(acts)
        self.dropout = tuple(drops)
        self.dtype = dt
        self.cap = cap
        self.grad, dW, db = _grad_block(sizes, dt)
        needs_z = [_ops.ACTIVATIONS[ACT_NAMES[a]].backward_input == "input" for a in acts]
        bufs = {"W": list(W), "b": list(b), "dW": dW, "db": db,
                "h": [np.zeros((cap, s), dt) for s in sizes[1:]],
                "dh": [np.zeros((cap, s), dt) for s in sizes[1:]],
                "hd": ([np.zeros((cap, sizes[l + 1]), dt) if drops[l] > 0 else None
                        for l in range(L)] if any(drops) else None),
                # the pre-activations, only for the layers whose activation's
                # derivative needs its input (the others take it from h)
                "z": ([np.zeros((cap, sizes[l + 1]), dt) if needs_z[l] else None
                       for l in range(L)] if any(needs_z) else None)}
        for key in state_names:
            bufs[key] = list(state[key]) if state.get(key) is not None else None
        self.buffers = bufs
        self.keep = [np.zeros((cap, sizes[l + 1]), np.uint8) if drops[l] > 0 else None
                     for l in range(L)]
        self.xb = np.zeros((cap, sizes[0]), dt)
        self.lb = np.zeros(cap, np.int64)
        self.tb = np.zeros((cap, sizes[L]), dt)
        self.wb = np.zeros(cap, dt)

        self.sizes_c = <fbp_idx *>calloc(L + 1, sizeof(fbp_idx))
        self.act_c = <int *>calloc(L, sizeof(int))
        self.drop_c = <double *>calloc(L, sizeof(double))
        self.keep_c = <uint8_t **>calloc(L, sizeof(uint8_t *))
        self.table = <void **>calloc(FBP_NBUF * L, sizeof(void *))
        self.nbytes_c = <Py_ssize_t *>calloc(FBP_NBUF * L, sizeof(Py_ssize_t))
        if (self.sizes_c == NULL or self.table == NULL or self.act_c == NULL or
                self.nbytes_c == NULL or
                self.drop_c == NULL or self.keep_c == NULL):
            raise MemoryError()
        for l in range(L + 1):
            self.sizes_c[l] = sizes[l]
        for l in range(L):
            self.act_c[l] = acts[l]
            self.drop_c[l] = drops[l]
            if self.keep[l] is not None:
                self.keep_c[l] = <uint8_t *>cnp.PyArray_DATA(<cnp.ndarray>self.keep[l])
        cdef int k
        for k in range(FBP_NBUF):
            group = bufs[BUFFERS[k]]
            self.m.buf[k] = NULL if group is None else self.table + k * L
            for l in range(L):
                if group is not None and group[l] is not None:
                    self.table[k * L + l] = cnp.PyArray_DATA(<cnp.ndarray>group[l])
                    self.nbytes_c[k * L + l] = group[l].nbytes
        self.m.dsize = dt.itemsize
        self.m.L = <int>L
        self.m.sizes = self.sizes_c
        self.m.act = self.act_c
        self.m.loss = self.loss_code
        self.m.cap = cap
        self.m.drop = self.drop_c if any(drops) else NULL
        self.m.keep = self.keep_c
        self.m.xb = cnp.PyArray_DATA(<cnp.ndarray>self.xb)
        self.m.tb = cnp.PyArray_DATA(<cnp.ndarray>self.tb)
        self.m.wb = cnp.PyArray_DATA(<cnp.ndarray>self.wb)
        self.m.lb = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>self.lb)

    def __dealloc__(self):
        free(self.table)
        free(self.nbytes_c)
        free(self.sizes_c)
        free(self.act_c)
        free(self.drop_c)
        free(self.keep_c)
        free(self.bf16_table)

    def set_matmul_precision(self, precision):
        """The products' precision from the next step on: "float32", or
        "bfloat16" (float32 workspaces): its bf16 buffers (csrc/fastbp.h's
        fbp_mlp.w16, a16, g16) are allocated on the first use and kept."""
        fn = "MLPWorkspace.set_matmul_precision"
        cdef int mm = _matmul_precision(fn, precision, self.dtype)
        cdef Py_ssize_t L = self.m.L, l
        if mm and self.bf16_table == NULL:
            s = self.sizes
            self.bf16_bufs = ([np.zeros(s[l] * s[l + 1], np.float32) for l in range(L)] +
                              [np.zeros(self.cap * s[l], np.float32) for l in range(L)] +
                              [np.zeros(self.cap * max(s[1:]), np.float32)])
            self.bf16_table = <void **>calloc(2 * L, sizeof(void *))
            if self.bf16_table == NULL:
                raise MemoryError()
            for l in range(2 * L):
                self.bf16_table[l] = cnp.PyArray_DATA(<cnp.ndarray>self.bf16_bufs[l])
            self.m.w16 = self.bf16_table
            self.m.a16 = self.bf16_table + L
            self.m.g16 = cnp.PyArray_DATA(<cnp.ndarray>self.bf16_bufs[2 * L])
        self.m.mm = mm
        self.matmul_precision = precision

    @property
    def has_momentum(self):
        return self.buffers["vW"] is not None

    def has_state(self, names):
        """Whether this workspace holds every optimizer state buffer in names."""
        return all(self.buffers[k] is not None for k in names)

    cdef int refuse_overlap(self, str fn, str name, const Desc *d) except -1:
        """A batch must not share memory with any buffer of the step (a parameter
        as x would be read after the step starts to update it)."""
        cdef Py_ssize_t nd = d.size * d.itemsize, i
        cdef char *p
        if nd == 0:
            return 0
        for i in range(FBP_NBUF * self.m.L):
            p = <char *>self.table[i]
            if p != NULL and d.ptr < p + self.nbytes_c[i] and p < d.ptr + nd:
                raise ValueError(f"{fn}: {name} overlaps the model's "
                                 f"{BUFFERS[i // self.m.L]}{i % self.m.L + 1} in memory; "
                                 "pass a copy")
        return 0

    def __getattr__(self, name):  # ws.W, ws.dW, ws.h, ...
        try:
            return self.buffers[name]
        except KeyError:
            raise AttributeError(name) from None


cdef class StepOptions:
    """The options of one kind of step (csrc/fbp_api.h's fbp_step_opts), kept by a
    model and updated in place (t, step, lr) from step to step.

    mode: STEP_*; optimizer: "SGD", "Adam" or "AdamW", with PyTorch's arguments
    (lr, momentum, dampening, nesterov, betas, eps, weight_decay on the weights
    only), or "sklearn_sgd", "sklearn_adam", scikit-learn's MLP solvers (lr,
    momentum, nesterov, betas, eps; fastbp.sklearn's); t: the optimizer's step
    (from 1); clip_norm, clip_value: 0 for none; seed, step, row0: the dropout
    key; norm: the total weight the loss is divided by (0: this batch's);
    count_correct; alpha: scikit-learn's L2 term, a weight decay of alpha over
    the batch's total weight (added to weight_decay); loss_eps: > 0 reports the
    log-losses with the probabilities clipped to [eps, 1 - eps], as
    scikit-learn's log_loss (the gradient is not clipped).
    """
    cdef fbp_step_opts o
    cdef readonly tuple need_state  # the workspace buffers its optimizer updates

    def __cinit__(self, int mode=FBP_MODE_TRAIN, optimizer="SGD", lr=0.0, weight_decay=0.0,
                  momentum=0.0, dampening=0.0, nesterov=False, betas=(0.9, 0.999), eps=1e-8,
                  t=1, clip_norm=0.0, clip_value=0.0, seed=0, step=0, row0=0, norm=0.0,
                  count_correct=False, alpha=0.0, loss_eps=0.0, centered=False):
        fn = "StepOptions"
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"{fn}: unknown optimizer {optimizer!r}; expected one of "
                             f"{sorted(OPTIMIZERS)}")
        self.o.mode = mode
        self.o.optimizer = OPTIMIZERS[optimizer]
        self.o.lr = _real(fn, "lr", lr)
        self.o.weight_decay = _real(fn, "weight_decay", weight_decay)
        self.o.momentum = _real(fn, "momentum", momentum)
        self.o.dampening = _real(fn, "dampening", dampening)
        self.o.nesterov = bool(nesterov)
        self.o.centered = bool(centered)
        self.o.beta1 = _real(fn, "betas[0]", betas[0])
        self.o.beta2 = _real(fn, "betas[1]", betas[1])
        self.o.eps = _real(fn, "eps", eps)
        self.o.t = t
        self.o.clip_norm = _real(fn, "clip_norm", clip_norm)
        self.o.clip_value = _real(fn, "clip_value", clip_value)
        self.o.seed = seed
        self.o.step = step
        self.o.row0 = row0
        self.o.norm = _real(fn, "norm", norm)
        self.o.count_correct = bool(count_correct)
        self.o.alpha = _real(fn, "alpha", alpha)
        self.o.loss_eps = _real(fn, "loss_eps", loss_eps)
        if not 0.0 <= self.o.loss_eps < 0.5:
            raise ValueError(f"{fn}: loss_eps must be in [0, 0.5), got {loss_eps!r}")
        # what the step needs, decided once here (a step allocates nothing)
        self.need_state = _ops.state_buffers(_ops.OPTIMIZERS[optimizer].state(self.settings()))

    def settings(self):
        """The options an optimizer's registry entry reads (fastbp.ops)."""
        return {"momentum": self.o.momentum, "centered": bool(self.o.centered)}

    property mode:
        def __get__(self): return self.o.mode
        def __set__(self, int v): self.o.mode = v
    property optimizer:
        def __get__(self): return fbp_opt_name(self.o.optimizer).decode()
    property lr:
        def __get__(self): return self.o.lr
        def __set__(self, double v): self.o.lr = v
    property weight_decay:
        def __get__(self): return self.o.weight_decay
    property momentum:
        def __get__(self): return self.o.momentum
    property dampening:
        def __get__(self): return self.o.dampening
    property nesterov:
        def __get__(self): return bool(self.o.nesterov)
    property clip_norm:
        def __get__(self): return self.o.clip_norm
    property clip_value:
        def __get__(self): return self.o.clip_value
    property t:
        def __get__(self): return self.o.t
        def __set__(self, int64_t v): self.o.t = v
    property step:
        def __get__(self): return self.o.step
        def __set__(self, int64_t v): self.o.step = v
    property seed:
        def __get__(self): return self.o.seed
        def __set__(self, uint64_t v): self.o.seed = v
    property row0:
        def __get__(self): return self.o.row0
        def __set__(self, int64_t v): self.o.row0 = v
    property norm:
        def __get__(self): return self.o.norm
        def __set__(self, double v): self.o.norm = v
    property count_correct:
        def __get__(self): return bool(self.o.count_correct)
        def __set__(self, bint v): self.o.count_correct = v
    property alpha:
        def __get__(self): return self.o.alpha
        def __set__(self, double v): self.o.alpha = v
    property loss_eps:
        def __get__(self): return self.o.loss_eps


cdef int _step_target(str fn, object ws, int mode, Py_ssize_t N, object target, Desc *dt,
                      list keep, bint check_labels) except -1:
    """The step's labels (1 for labels in dt) or float targets (0), checked: ws
    is a CPU MLPWorkspace or a CUDA one (fastbp._cuda), with the same attributes."""
    cdef Py_ssize_t C = ws.sizes[len(ws.sizes) - 1]
    if mode == FBP_MODE_FORWARD or mode == FBP_MODE_UPDATE:
        return -2
    t = target if isinstance(target, np.ndarray) or _is_device(target) else np.asarray(target)
    tndim = t.ndim if isinstance(t, np.ndarray) else len(_cuda().describe(fn, "target", t)[1])
    if ws.loss_code == FBP_LOSS_XENT and tndim == 1:
        if check_labels:
            t = _labels(fn, t, dt, N, C, "x")
        else:
            _describe(fn, "target", t, dt)
            if dt.kind != b'i' and dt.kind != b'u':
                raise TypeError(f"{fn}: labels must be integers, got dtype {_dtype(t)}")
            if dt.shape[0] != N:
                raise ValueError(f"{fn}: got {dt.shape[0]} labels for {N} rows of x")
            if not (dt.kind == b'i' and dt.itemsize == 8 and dt.contig and dt.native):
                t = (np.require(t, np.int64, ["C", "A"]) if dt.device < 0
                     else _cuda().as_int64(fn, "target", t))
                _describe(fn, "target", t, dt)
        keep.append(t)
        return 1
    if tndim == 1 and C == 1:
        t = t.reshape(-1, 1)
    t = _float_view(fn, "target", t, dt)
    if dt.itemsize != ws.dtype.itemsize:
        raise TypeError(f"{fn}: target has dtype {_dtype(t)} but the inputs are {ws.dtype}; "
                        "fastbp never casts silently, convert it with .astype()")
    if _shape(dt) != (N, C):
        raise ValueError(f"{fn}: targets must have shape ({N}, {C}), got {_shape(dt)}")
    keep.append(_contig(fn, "target", t, dt))
    return 0


cdef object _sample_weight(str fn, object w, Desc *dw, Py_ssize_t N, object dtype,
                           bint need_weight):
    """Sample weights (N,) of the step's dtype, finite and >= 0, checked in place
    (no copy, so a step stays allocation-free); need_weight: their sum must be
    > 0 (a batch of its own; the batches of an epoch may weigh 0, mlp_epoch's
    caller checks the whole)."""
    w = _float_view(fn, "sample_weight", w, dw, 1)
    if dw.itemsize != dtype.itemsize:
        raise TypeError(f"{fn}: sample_weight has dtype {_dtype(w)} but the inputs are "
                        f"{dtype}; fastbp never casts silently, convert it with .astype()")
    if dw.shape[0] != N:
        raise ValueError(f"{fn}: got {dw.shape[0]} sample weights for {N} rows of x")
    w = _contig(fn, "sample_weight", w, dw)
    if dw.device >= 0:
        return w
    cdef Py_ssize_t i, n = dw.shape[0], bad = -1
    cdef double v, total = 0.0
    cdef bint f32 = dw.itemsize == 4
    with nogil:
        for i in range(n):
            v = (<const float *>dw.ptr)[i] if f32 else (<const double *>dw.ptr)[i]
            if not (v >= 0.0 and v - v == 0.0):  # NaN, negative or inf
                bad = i
                break
            total += v
    if bad >= 0:
        raise ValueError(f"{fn}: sample_weight must be finite and >= 0, got {w[bad]} at "
                         f"index {bad}")
    if need_weight and not total > 0.0:
        raise ValueError(f"{fn}: the sample weights sum to 0")
    return w


cdef int _gpu_unsupported(str fn, object ws, StepOptions opts, bint weighted) except -1:
    """The GPU step implements SGD (momentum, weight decay) and clip_norm; anything
    else is refused by name rather than computed differently."""
    cdef fbp_step_opts *o = &opts.o
    what = None
    if o.mode == FBP_MODE_UPDATE:
        what = "a step from given gradients (mode UPDATE)"
    elif o.mode == FBP_MODE_BACKWARD:
        what = "a data-parallel step (mode BACKWARD)"
    elif not _ops.supports("cuda_step", "optimizer", fbp_opt_name(o.optimizer).decode()):
        what = f"optimizer {fbp_opt_name(o.optimizer).decode()!r}"
    elif o.nesterov:
        what = "nesterov=True"
    elif o.dampening != 0.0:
        what = "dampening"
    elif o.clip_value > 0.0:
        what = "clip_value"
    elif o.norm > 0.0:
        what = "a data-parallel normalization (norm)"
    elif o.alpha != 0.0:
        what = "alpha (scikit-learn's L2 term)"
    elif o.loss_eps > 0.0:
        what = "loss_eps (scikit-learn's clipped log-loss)"
    elif weighted:
        what = "sample_weight"
    if what is not None:
        raise NotImplementedError(f"{fn}: {what} is not supported on the GPU yet "
                                  "(docs/cuda.md lists what is)")
    return 0


def mlp_step(ws, x, target, StepOptions opts not None, sample_weight=None, *,
             bint check_labels=True, bint sync=True, stream=None, bint check_only=False):
    """One native call: forward, loss, backward and (TRAIN) the update, as opts says.

    ws: an MLPWorkspace (CPU) or a fastbp._cuda.Workspace (GPU; x and target
    may then be NumPy or CUDA arrays, copied into its staging buffers). x (N, I)
    with 0 < N <= ws.cap; target: integer labels (N,) for softmax-xent (any
    integer dtype; range-checked unless check_labels=False), or float targets
    (N, outputs); sample_weight: (N,) or None. Mode UPDATE takes no x or target
    (pass None) and applies the optimizer to the gradients in ws.dW, ws.db; mode
    BACKWARD leaves the loss gradient there (all of it in ws.grad) and updates
    nothing.
    Returns (loss, reg, grad_norm, ncorrect): the data loss, 0.5 wd sum ||W||^2
    for coupled decay, the clipped gradient's norm (-1 unless clip_norm ran).
    GPU only: sync=False returns None at once (read_out() gives the result
    later), stream is a cudaStream_t as an int. A well-formed CPU call
    (C-contiguous x of the workspace dtype, int64 labels) allocates nothing.
    check_only=True: every check, then None without running anything (a
    data-parallel rank agrees with the others that all inputs are valid before
    the first collective call of the step). A TRAIN or UPDATE step advances
    opts.t and opts.step by one as it returns (see _advance).
    """
    fn = "mlp_step"
    cdef Desc dx, dt, dw
    cdef list keep = []
    cdef fbp_step_out out
    cdef MLPWorkspace cws
    cdef int rc, mode = opts.o.mode
    cdef Py_ssize_t I = ws.sizes[0], N = 0
    cdef const void *px = NULL
    cdef const void *pw = NULL
    if ws.device >= 0:
        _gpu_unsupported(fn, ws, opts, sample_weight is not None)
    if mode != FBP_MODE_UPDATE:
        x = _float_view(fn, "x", x, &dx, 2)
        if dx.itemsize != ws.dtype.itemsize:
            raise TypeError(f"{fn}: x has dtype {_dtype(x)} but the inputs are {ws.dtype}; "
                            "fastbp never casts silently, convert it with .astype()")
        if dx.shape[1] != I:
            raise ValueError(f"{fn}: x must have shape (N, {I}), got {_shape(&dx)}")
        N = dx.shape[0]
        if N > ws.cap:
            raise ValueError(f"{fn}: batch of {N} rows exceeds the workspace capacity {ws.cap}")
        if N == 0:
            raise ValueError(f"{fn}: empty batch")
        if ws.device < 0 and dx.device >= 0:
            raise ValueError(f"{fn}: x is on {_where(dx.device)}, the model on the host")
        if dx.device >= 0 and dx.device != ws.device:
            raise ValueError(f"{fn}: x is on {_where(dx.device)}, the model on {_where(ws.device)}")
        x = _contig(fn, "x", x, &dx)
        px = dx.ptr
    kind = _step_target(fn, ws, mode, N, target, &dt, keep, check_labels)
    if kind >= 0 and ws.device < 0 and dt.device >= 0:
        raise ValueError(f"{fn}: target is on {_where(dt.device)}, the model on the host")
    if sample_weight is not None and mode != FBP_MODE_FORWARD and mode != FBP_MODE_UPDATE:
        keep.append(_sample_weight(fn, sample_weight, &dw, N, ws.dtype, opts.o.norm <= 0.0))
        pw = dw.ptr
    cdef const int64_t *pl = <int64_t *>dt.ptr if kind == 1 else NULL
    cdef const void *pt = dt.ptr if kind == 0 else NULL
    if isinstance(ws, MLPWorkspace):
        cws = <MLPWorkspace>ws
        if mode == FBP_MODE_TRAIN or mode == FBP_MODE_UPDATE:
            _check_state(fn, cws, opts)
        if mode != FBP_MODE_UPDATE:
            cws.refuse_overlap(fn, "x", &dx)
        if kind >= 0:
            cws.refuse_overlap(fn, "target", &dt)
        if pw != NULL:
            cws.refuse_overlap(fn, "sample_weight", &dw)
        if check_only:
            return None
        with nogil:
            rc = fbp_mlp_step(&cws.m, N, px, pl, pt, pw, &opts.o, &out)
        if cws.m.mm:
            _bf16_check()
        if mode == FBP_MODE_TRAIN or mode == FBP_MODE_UPDATE:
            _advance(opts, 1)
        return out.loss, out.reg, out.grad_norm, out.ncorrect
    if check_only:
        return None
    s = <uintptr_t>dx.stream if stream is None and dx.device >= 0 else (stream or 0)
    r = ws.run(s, N, <uintptr_t>px, <uintptr_t>pl, <uintptr_t>pt, mode, opts.o.lr,
               opts.o.weight_decay, opts.o.clip_norm, opts.o.momentum,
               opts.o.count_correct, sync)
    if mode == FBP_MODE_TRAIN or mode == FBP_MODE_UPDATE:
        _advance(opts, 1)
    return r


cdef inline void _advance(StepOptions opts, int64_t steps) noexcept:
    """Moves opts past `steps` training steps that have run (the optimizer's t and
    the model's step). Done here, before the call returns, because a Ctrl-C that
    arrives during the native call is raised as soon as the interpreter resumes,
    before the caller's next statement: a model that counted its steps itself
    would be left with parameters some steps ahead of its counters."""
    opts.o.t += steps
    opts.o.step += steps


cdef int _check_state(str fn, MLPWorkspace ws, StepOptions opts) except -1:
    """The workspace holds the state the optimizer updates (fastbp.ops says which)."""
    cdef fbp_step_opts *o = &opts.o
    if not ws.has_state(opts.need_state):
        raise ValueError(f"{fn}: the {fbp_opt_name(o.optimizer).decode()} step needs a "
                         f"workspace built with its state {opts.need_state}")
    return 0


cdef int _check_permutation(str fn, const int64_t *p, Py_ssize_t n) except -1:
    """p (n,) holds every index of range(n) once: one pass, not a sort (a caller
    that splits an epoch into many calls pays it per call)."""
    cdef unsigned char *seen = <unsigned char *>calloc(n if n > 0 else 1, 1)
    cdef Py_ssize_t i
    cdef int64_t v
    cdef bint ok = True
    if seen == NULL:
        raise MemoryError()
    with nogil:
        for i in range(n):
            v = p[i]
            if v < 0 or v >= n or seen[v]:
                ok = False
                break
            seen[v] = 1
    free(seen)
    if not ok:
        raise ValueError(f"{fn}: order must be a permutation of range({n})")
    return 0


def mlp_epoch(MLPWorkspace ws, X, target, sample_weight, order, Py_ssize_t batch_size,
              Py_ssize_t first, Py_ssize_t last, StepOptions opts not None,
              double loss_sum=0.0, double weight_sum=0.0, losses=None):
    """Batches [first, last) of an epoch of training steps in one native call.

    X (n, I) of the workspace dtype; target int labels (n,) for softmax-xent or
    float targets (n, outputs); sample_weight (n,) or None; order (n,), a
    permutation of range(n); batch s holds rows order[s B : (s+1) B] (the last
    partial), gathered in C; opts.t and opts.step are the first batch's and
    advance by one per batch; opts is left past the last batch (t and step
    advanced by last - first, see _advance). Returns (loss_sum plus the sum of
    (loss + reg) times each batch's weight, weight_sum plus the weights' sum,
    the last grad_norm, ncorrect): running sums, which an epoch run in several
    calls passes on from call to call, so that its sums are added in one order
    however the calls split it. losses, a float64 array (last - first, 2),
    receives each batch's (loss, reg) if given. The CPU only.
    """
    fn = "mlp_epoch"
    cdef Desc dX, dt, do, dw, dl
    cdef list keep = []
    cdef fbp_epoch_out out
    X = _float_view(fn, "X", X, &dX, 2)
    if dX.device >= 0:
        raise ValueError(f"{fn}: X is on {_where(dX.device)}, the model on the host")
    if dX.itemsize != ws.dtype.itemsize:
        raise TypeError(f"{fn}: X has dtype {_dtype(X)} but the inputs are {ws.dtype}; "
                        "fastbp never casts silently, convert it with .astype()")
    cdef Py_ssize_t n = dX.shape[0]
    if dX.shape[1] != ws.sizes[0]:
        raise ValueError(f"{fn}: X must have shape (n, {ws.sizes[0]}), got {_shape(&dX)}")
    X = _contig(fn, "X", X, &dX)
    if not 1 <= batch_size <= ws.cap:
        raise ValueError(f"{fn}: batch_size must be in [1, {ws.cap}], got {batch_size}")
    cdef Py_ssize_t nbatches = (n + batch_size - 1) // batch_size
    if not 0 <= first <= last <= nbatches:
        raise ValueError(f"{fn}: batches [{first}, {last}) are not within the epoch's "
                         f"{nbatches} batches")
    _check_state(fn, ws, opts)
    order = np.asarray(order)
    if order.dtype.kind not in "iu" or order.shape != (n,):
        raise ValueError(f"{fn}: order must be integers of shape ({n},), got "
                         f"{order.dtype} {order.shape}")
    order = np.require(order, np.int64, ["C", "A"])
    _describe(fn, "order", order, &do)
    _check_permutation(fn, <const int64_t *>do.ptr, n)
    kind = _step_target(fn, ws, FBP_MODE_TRAIN, n, target, &dt, keep, True)
    if dt.device >= 0:
        raise ValueError(f"{fn}: target is on {_where(dt.device)}, the model on the host")
    cdef const void *pw = NULL
    if sample_weight is not None:
        keep.append(_sample_weight(fn, sample_weight, &dw, n, ws.dtype, False))
        ws.refuse_overlap(fn, "sample_weight", &dw)
        pw = dw.ptr
    cdef const int64_t *pl = <int64_t *>dt.ptr if kind == 1 else NULL
    cdef const void *pt = dt.ptr if kind == 0 else NULL
    ws.refuse_overlap(fn, "X", &dX)
    ws.refuse_overlap(fn, "target", &dt)
    cdef Py_ssize_t B = batch_size
    cdef fbp_step_opts o = opts.o
    o.mode = FBP_MODE_TRAIN
    out.loss_sum, out.weight_sum = loss_sum, weight_sum
    out.batches = NULL
    if losses is not None:
        _describe(fn, "losses", losses, &dl)
        if dl.device >= 0 or dl.kind != b'f' or dl.itemsize != 8 or not dl.native:
            raise TypeError(f"{fn}: losses must be a float64 NumPy array, got {_dtype(losses)}")
        _need_shape(fn, "losses", &dl, (last - first, 2))
        _writable(fn, "losses", &dl)
        _no_overlap(fn, "losses", &dl, ["X", "target", "order"], [_dp(&dX), _dp(&dt), _dp(&do)])
        if pw != NULL:
            _no_overlap(fn, "losses", &dl, ["sample_weight"], [_dp(&dw)])
        ws.refuse_overlap(fn, "losses", &dl)
        out.batches = <double *>dl.ptr
    with nogil:
        fbp_mlp_epoch(&ws.m, n, dX.ptr, pl, pt, pw, <int64_t *>do.ptr, B, first, last, &o, &out)
    if ws.m.mm:
        _bf16_check()
    _advance(opts, last - first)
    return out.loss_sum, out.weight_sum, out.grad_norm, out.ncorrect


# ---- bfloat16 matmul precision -------------------------------------------------------------

include "_bf16.pxi"
