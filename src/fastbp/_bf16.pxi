# bfloat16 matmul precision (csrc/bf16.c), included by _core.pyx: the option's
# check, the dense layer's bf16 calls and the bf16 step floor. Which path runs
# the products (oneDNN or emulated) is fastbp._bf16's choice.

cdef extern from "fastbp.h" nogil:
    ctypedef int (*fbp_gemm_bf16_fn)(char, char, int64_t, int64_t, int64_t, float,
                                     const uint16_t *, int64_t, const uint16_t *, int64_t,
                                     float, float *, int64_t)
    void fbp_set_gemm_bf16(fbp_gemm_bf16_fn fn)
    int fbp_bf16_native()
    int fbp_bf16_status(int clear)
    void fbp_bf16_copy(int native, fbp_idx n, const float *x, void *y)
    int fbp_dense_forward_bf16(int64_t N, int64_t In, int64_t O, const float *x, const float *W,
                               const float *b, int act, float *y, void *x16, void *W16)
    int fbp_dense_backward_bf16(int64_t N, int64_t In, int64_t O, const float *dy,
                                const float *x, const float *W, const float *y, int act,
                                float *dz, float *dx, float *dW, float *db, int accumulate,
                                void *x16, void *W16, void *g16)
    double fbp_step_floor_bf16(int L, const fbp_idx *widths, fbp_idx N, void **h16,
                               void **dz16, float **h, float **dh, void **W16, float **dW,
                               int reps)

#: matmul precision name -> code
MATMUL_PRECISIONS = {fbp_mm_name(k).decode(): k for k in range(FBP_NMM)}


def _set_gemm_bf16(size_t addr):
    """Point bfloat16 products at a row-major bf16 GEMM (oneDNN's
    dnnl_gemm_bf16bf16f32) given as an address, or 0: the emulated path."""
    fbp_set_gemm_bf16(<fbp_gemm_bf16_fn>addr)


def _bf16_native():
    return bool(fbp_bf16_native())


def _round_bf16(x):
    """x rounded to bfloat16 by the C kernel, as float32 values (the tests' check
    of csrc/bf16.c's rounding against reference.to_bfloat16)."""
    cdef cnp.ndarray a = np.ascontiguousarray(x, np.float32)
    cdef cnp.ndarray out = np.empty_like(a)
    fbp_bf16_copy(0, a.size, <const float *>a.data, out.data)
    return out


cdef int _bf16_check() except -1:
    """Raise the status the provider returned during the last call, if any."""
    cdef int st = fbp_bf16_status(1)
    if st:
        raise RuntimeError(f"fastbp: the bfloat16 GEMM (oneDNN) returned status {st}; "
                           "fastbp.set_bf16_provider('emulated') avoids it")
    return 0


def _matmul_precision(str fn, object precision, object dtype, str backend="cpu"):
    """The code of a matmul precision for arrays or models of dtype, checked;
    backend (a fastbp.ops.BACKENDS name) answers whether it runs bfloat16."""
    if not isinstance(precision, str) or precision not in MATMUL_PRECISIONS:
        raise ValueError(f"{fn}: matmul_precision must be one of "
                         f"{tuple(MATMUL_PRECISIONS)}, got {precision!r}")
    cdef int mm = MATMUL_PRECISIONS[precision]
    if mm == FBP_MM_F32:
        return mm
    if np.dtype(dtype) != np.float32:
        raise TypeError(f"{fn}: matmul_precision={precision!r} rounds float32 operands; "
                        f"expected float32, got {np.dtype(dtype)}")
    if not _ops.BACKENDS[backend].supports("option", "bfloat16"):
        # its own words: they say what to use instead
        raise NotImplementedError(f"{fn}: matmul_precision={precision!r} is CPU only so far "
                                  "(cuBLAS bf16 with CUBLAS_COMPUTE_32F is not built); use "
                                  "matmul_precision='float32' on the GPU")
    from fastbp import _bf16
    _bf16.ensure()
    return mm


cdef _dense_forward_bf16(Desc *dx, Desc *dW, void *pb, int act, Desc *dy):
    cdef Py_ssize_t N = dx.shape[0], I = dx.shape[1], O = dW.shape[1]
    cdef cnp.ndarray x16 = np.empty(N * I, np.float32)
    cdef cnp.ndarray W16 = np.empty(I * O, np.float32)
    with nogil:
        fbp_dense_forward_bf16(N, I, O, <const float *>dx.ptr, <const float *>dW.ptr,
                               <const float *>pb, act, <float *>dy.ptr, x16.data, W16.data)
    _bf16_check()


cdef _dense_backward_bf16(Desc *ddy, Desc *dx_, Desc *dW_, void *vy, int act, void *vdz,
                          void *vdx, Desc *ddW, Desc *ddb, int acc):
    cdef Py_ssize_t N = dx_.shape[0], I = dx_.shape[1], O = dW_.shape[1]
    cdef cnp.ndarray x16 = np.empty(N * I, np.float32)
    cdef cnp.ndarray W16 = np.empty(I * O, np.float32)
    cdef cnp.ndarray g16 = np.empty(N * O, np.float32)
    with nogil:
        fbp_dense_backward_bf16(N, I, O, <const float *>ddy.ptr, <const float *>dx_.ptr,
                                <const float *>dW_.ptr, <const float *>vy, act,
                                <float *>vdz, <float *>vdx, <float *>ddW.ptr,
                                <float *>ddb.ptr, acc, x16.data, W16.data, g16.data)
    _bf16_check()


cdef class StepFloorBF16:
    """The bfloat16 floor of a training step, for the benchmarks: StepFloor's
    products with bf16 operands, each one whole call of the provider's bf16 GEMM
    (oneDNN) on ``threads`` of its threads, no rounding passes and no Python
    between them (fbp_step_floor_bf16 in csrc/bf16.c). ``run(reps, threads)``:
    the mean of reps steps in seconds. Needs the onednn path."""
    cdef list bufs
    cdef int L
    cdef Py_ssize_t N
    cdef Py_ssize_t w[65]
    cdef void *p[6][65]  # h16, dz16, h, dh, W16, dW by layer

    def __init__(self, widths, Py_ssize_t N):
        widths = [int(v) for v in widths]
        self.L = len(widths) - 1
        if not 1 <= self.L <= 64 or N < 1 or min(widths) < 1:
            raise ValueError(f"StepFloorBF16: expected 2 to 65 positive widths and N >= 1, "
                             f"got widths {widths}, N={N}")
        self.N = N
        rng = np.random.default_rng(0)

        def bits(shape, scale):  # bf16 bits of normal values (truncated: any bf16 will do)
            a = (rng.standard_normal(shape) * scale).astype(np.float32)
            return (a.view(np.uint32) >> 16).astype(np.uint16)

        pairs = list(zip(widths[:self.L], widths[1:]))
        self.bufs = [[bits((N, v), 1.0) for v in widths],
                     [bits((N, v), 1.0) for v in widths],
                     [np.empty((N, v), np.float32) for v in widths],
                     [np.empty((N, v), np.float32) for v in widths],
                     [bits(s, 0.01) for s in pairs],
                     [np.empty(s, np.float32) for s in pairs]]
        cdef int i, l
        for l in range(self.L + 1):
            self.w[l] = widths[l]
        for i in range(6):
            for l, a in enumerate(self.bufs[i]):
                self.p[i][l] = <void *><size_t>a.ctypes.data

    def run(self, int reps=1, int threads=1):
        from fastbp import _bf16
        if reps < 1 or threads < 1:
            raise ValueError(f"StepFloorBF16.run: expected reps >= 1 and threads >= 1, "
                             f"got {reps}, {threads}")
        if not fbp_bf16_native():
            raise RuntimeError("StepFloorBF16: needs the onednn bfloat16 path "
                               "(fastbp.set_bf16_provider('onednn'))")
        cdef double ns
        _bf16.set_threads(threads)
        try:
            with nogil:
                ns = fbp_step_floor_bf16(self.L, self.w, self.N, self.p[0], self.p[1],
                                         <float **>self.p[2], <float **>self.p[3], self.p[4],
                                         <float **>self.p[5], reps)
        finally:
            _bf16.set_threads(1)
        _bf16_check()
        return ns * 1e-9
