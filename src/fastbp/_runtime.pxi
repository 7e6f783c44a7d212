# Included by _core.pyx: the codes checked against fastbp.ops, the CPU dispatch,
# BLAS and threads, and the backend tables.

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
    run, those that found every worker asleep (woke), jobs the backoff kept on
    the caller, and the backoff left (ms)."""
    cdef int err = 0
    cdef int n = fbp_pool_workers(&err)
    cdef double st[7]
    fbp_pool_stats(st)
    return {"workers": n, "create_error": err, "wait_us": fbp_get_wait_us(),
            "wake_us": st[0], "handoff_us": st[1], "pass_ns": st[2], "jobs": int(st[3]), "jobs_woke": int(st[6]),
            "jobs_backed_off": int(st[4]), "backoff_ms": st[5]}


def _force_parallel(bint on):
    """Tests: split every kernel that can split over the thread count, whatever
    it costs, so that thread-count tests run the parallel paths at small sizes.
    Returns the previous setting."""
    return bool(fbp_set_force_parallel(on))


def _set_wait_us(double us):
    """How long idle workers spin before sleeping (a tuning knob for bench/)."""
    fbp_set_wait_us(us)


def _set_handoff_us(double us):
    """Tests: the hand-off latency the pool decides with, as load would leave it."""
    fbp_set_handoff_us(us)


# ---- backends ------------------------------------------------------------------------------

cdef const fbp_backend *_cuda_table = NULL
_CUDA_OPS = _ops.BACKENDS["cuda"]  # what CUDA arrays' kernels run (fastbp.ops)
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
    cdef const fbp_backend *table
    if dev < 0:
        return &fbp_cpu
    if _cuda_table == NULL:
        cap = _cuda().backend_capsule()
        table = <const fbp_backend *>PyCapsule_GetPointer(cap, "fastbp.backend")
        # an entry the table may lack, and fastbp.ops's answer, agree (as the codes do)
        if (table.bce != NULL) != _CUDA_OPS.supports("loss", "binary_cross_entropy"):
            raise RuntimeError("fastbp._core: csrc/cuda's table and fastbp.ops disagree on "
                               "binary_cross_entropy; rebuild, or fix the one that lags")
        _cuda_table = table
    return _cuda_table


cdef int _require(str fn, int dev, str kind, str name) except -1:
    """NotImplementedError unless the backend of device dev runs the op: fastbp.ops
    answers (the CPU runs every op, which fastbp.ops asserts, so a NumPy array
    asks nothing)."""
    if dev >= 0:
        _CUDA_OPS.require(fn, ((kind, name),))
    return 0


cdef inline int _check(int rc, const fbp_backend *be) except -1:
    if rc != 0:
        raise RuntimeError("fastbp: " + be.last_error().decode("utf-8", "replace"))
    return 0
