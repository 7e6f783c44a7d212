# cython: language_level=3, boundscheck=False, wraparound=False
# distutils: language = c++
"""fastbp._cuda: thin calls into csrc/cuda/ (built only with FASTBP_CUDA=1).

Arguments are plain integers: device ids, streams (cudaStream_t values, 0 the
legacy default stream) and device pointers. Nothing here validates shapes or
dtypes; fastbp.cuda does, with the CPU's messages, before calling in. A CUDA or
cuBLAS failure raises RuntimeError with the library's message.
"""
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc

cdef extern from "fbp_cuda.h" nogil:
    const char *fbpc_last_error()
    int fbpc_device_count(int *n)
    int fbpc_pointer_device(const void *p, int *dev)
    int fbpc_memcpy(int dev, void *stream, void *dst, const void *src, size_t nbytes)
    int64_t fbpc_scratch_doubles(int64_t N, int64_t narrays)
    int fbpc_check_labels(int dev, void *stream, int64_t N, const int64_t *labels, int64_t C,
                          int64_t *scratch, int64_t *out)
    int fbpc_act_forward(int dev, void *stream, int dsize, int64_t n, int act, const void *x,
                         void *y)
    int fbpc_act_backward(int dev, void *stream, int dsize, int64_t n, int act, const void *dy,
                          const void *y, void *dx)
    int fbpc_dense_forward(int dev, void *stream, int dsize, int64_t N, int64_t I, int64_t O,
                           const void *x, const void *W, const void *b, int act, void *y)
    int fbpc_dense_backward(int dev, void *stream, int dsize, int64_t N, int64_t I, int64_t O,
                            const void *dy, const void *x, const void *W, const void *y, int act,
                            void *dz, void *dx, void *dW, void *db, int accumulate)
    int fbpc_softmax_xent(int dev, void *stream, int dsize, int64_t N, int64_t C, const void *z,
                          const int64_t *labels, const void *t, void *dz, double *scratch,
                          double *loss)
    int fbpc_mse(int dev, void *stream, int dsize, int64_t N, int64_t D, const void *y,
                 const void *t, void *dy, double *scratch, double *loss)
    int fbpc_sgd(int dev, void *stream, int dsize, int64_t n, void *p, const void *g, double lr,
                 double wd)
    int fbpc_clip_value(int dev, void *stream, int dsize, int64_t n, void *g, double limit)
    int fbpc_scale(int dev, void *stream, int dsize, int64_t n, void *x, double s)
    int fbpc_sumsq_many(int dev, void *stream, int k, const int *dsizes, const int64_t *ns,
                        const void *const *xs, double div, int maxabs, double *scratch,
                        double *out)

    ctypedef struct fbpc_mlp:
        pass
    ctypedef struct fbpc_step_opts:
        int mode
        double lr, weight_decay, clip_norm, momentum
        int count_correct
    ctypedef struct fbpc_step_out:
        double loss, grad_norm
        int64_t ncorrect
    int fbpc_mlp_create(fbpc_mlp **out, int dev, int dsize, int L, const int64_t *sizes, int act,
                        int loss, int64_t cap, int graph)
    void fbpc_mlp_destroy(fbpc_mlp *m)
    void *fbpc_mlp_buffer(const fbpc_mlp *m, int which, int l)
    int fbpc_mlp_check_labels(fbpc_mlp *m, void *stream, int64_t N, const int64_t *labels,
                              int64_t *out)
    int fbpc_mlp_alloc_momentum(fbpc_mlp *m, void *stream)
    int fbpc_mlp_reset_momentum(fbpc_mlp *m, void *stream)
    int fbpc_mlp_step(fbpc_mlp *m, void *stream, int64_t N, const void *x, const int64_t *labels,
                      const void *t, const fbpc_step_opts *opt, int sync, fbpc_step_out *out)
    int fbpc_mlp_read_out(fbpc_mlp *m, void *stream, fbpc_step_out *out)
    void fbpc_mlp_stats(const fbpc_mlp *m, int64_t *out)


cdef inline void *P(object p) except? NULL:
    """A pointer or stream given as an int; None is NULL."""
    if p is None:
        return NULL
    return <void *><uintptr_t>p


cdef int check(int rc) except -1:
    if rc != 0:
        raise RuntimeError("fastbp.cuda: " + fbpc_last_error().decode("utf-8", "replace"))
    return 0


def device_count():
    cdef int n = 0
    fbpc_device_count(&n)
    return n


def pointer_device(ptr):
    """The device of a pointer, -1 for host memory."""
    cdef int dev = -1
    fbpc_pointer_device(P(ptr), &dev)
    return dev


def memcpy(int dev, stream, dst, src, size_t nbytes):
    """Copy nbytes (host or device on either side) on stream, then sync it."""
    cdef void *s = P(stream)
    cdef void *d = P(dst)
    cdef void *c = P(src)
    cdef int rc
    with nogil:
        rc = fbpc_memcpy(dev, s, d, c, nbytes)
    check(rc)


def scratch_doubles(int64_t N, int64_t narrays=1):
    return fbpc_scratch_doubles(N, narrays)


def check_labels(int dev, stream, int64_t N, labels, int64_t C, scratch):
    """(min, max, first bad index or -1, its value) of int64 labels (N,)."""
    cdef int64_t out[4]
    cdef void *s = P(stream)
    cdef void *l = P(labels)
    cdef void *sc = P(scratch)
    cdef int rc
    with nogil:
        rc = fbpc_check_labels(dev, s, N, <int64_t *>l, C, <int64_t *>sc, out)
    check(rc)
    return out[0], out[1], out[2], out[3]


def act_forward(int dev, stream, int dsize, int64_t n, int act, x, y):
    check(fbpc_act_forward(dev, P(stream), dsize, n, act, P(x), P(y)))


def act_backward(int dev, stream, int dsize, int64_t n, int act, dy, y, dx):
    check(fbpc_act_backward(dev, P(stream), dsize, n, act, P(dy), P(y), P(dx)))


def dense_forward(int dev, stream, int dsize, int64_t N, int64_t I, int64_t O, x, W, b, int act,
                  y):
    check(fbpc_dense_forward(dev, P(stream), dsize, N, I, O, P(x), P(W), P(b), act, P(y)))


def dense_backward(int dev, stream, int dsize, int64_t N, int64_t I, int64_t O, dy, x, W, y,
                   int act, dz, dx, dW, db, int accumulate):
    check(fbpc_dense_backward(dev, P(stream), dsize, N, I, O, P(dy), P(x), P(W), P(y), act,
                              P(dz), P(dx), P(dW), P(db), accumulate))


def softmax_xent(int dev, stream, int dsize, int64_t N, int64_t C, z, labels, t, dz, scratch):
    cdef double loss = 0.0
    cdef void *s = P(stream)
    cdef void *pz = P(z)
    cdef void *pl = P(labels)
    cdef void *pt = P(t)
    cdef void *pd = P(dz)
    cdef void *sc = P(scratch)
    cdef int rc
    with nogil:
        rc = fbpc_softmax_xent(dev, s, dsize, N, C, pz, <int64_t *>pl, pt, pd, <double *>sc, &loss)
    check(rc)
    return loss


def mse(int dev, stream, int dsize, int64_t N, int64_t D, y, t, dy, scratch):
    cdef double loss = 0.0
    cdef void *s = P(stream)
    cdef void *py = P(y)
    cdef void *pt = P(t)
    cdef void *pd = P(dy)
    cdef void *sc = P(scratch)
    cdef int rc
    with nogil:
        rc = fbpc_mse(dev, s, dsize, N, D, py, pt, pd, <double *>sc, &loss)
    check(rc)
    return loss


def sgd(int dev, stream, int dsize, int64_t n, p, g, double lr, double wd):
    check(fbpc_sgd(dev, P(stream), dsize, n, P(p), P(g), lr, wd))


def clip_value(int dev, stream, int dsize, int64_t n, g, double limit):
    check(fbpc_clip_value(dev, P(stream), dsize, n, P(g), limit))


def scale(int dev, stream, int dsize, int64_t n, x, double s):
    check(fbpc_scale(dev, P(stream), dsize, n, P(x), s))


def sumsq_many(int dev, stream, dsizes, ns, ptrs, double div, bint maxabs, scratch):
    """Per array: sum of (x / div)^2 in double (div 0: x^2), or max |x|. One sync."""
    cdef int k = len(ptrs), i, rc
    if k == 0:
        return []
    cdef int *ds = <int *>malloc(k * sizeof(int))
    cdef int64_t *nn = <int64_t *>malloc(k * sizeof(int64_t))
    cdef void **xs = <void **>malloc(k * sizeof(void *))
    cdef double *out = <double *>malloc(k * sizeof(double))
    cdef void *s = P(stream)
    cdef void *sc = P(scratch)
    try:
        if ds == NULL or nn == NULL or xs == NULL or out == NULL:
            raise MemoryError()
        for i in range(k):
            ds[i] = dsizes[i]
            nn[i] = ns[i]
            xs[i] = P(ptrs[i])
        with nogil:
            rc = fbpc_sumsq_many(dev, s, k, ds, nn, xs, div, maxabs, <double *>sc, out)
        check(rc)
        return [out[i] for i in range(k)]
    finally:
        free(ds)
        free(nn)
        free(xs)
        free(out)


cdef class Workspace:
    """The device MLP of csrc/cuda/step.cu: owns every buffer (see fbp_cuda.h)."""
    cdef fbpc_mlp *m
    cdef readonly int device, dsize, L
    cdef readonly tuple sizes
    cdef readonly long long cap

    def __cinit__(self, int dev, int dsize, sizes, int act, int loss, long long cap, bint graph):
        self.m = NULL
        cdef int L = len(sizes) - 1, l
        cdef int64_t *sz = <int64_t *>malloc((L + 1) * sizeof(int64_t))
        if sz == NULL:
            raise MemoryError()
        for l in range(L + 1):
            sz[l] = sizes[l]
        cdef int rc
        with nogil:
            rc = fbpc_mlp_create(&self.m, dev, dsize, L, sz, act, loss, cap, graph)
        free(sz)
        check(rc)
        self.device, self.dsize, self.L, self.cap = dev, dsize, L, cap
        self.sizes = tuple(int(s) for s in sizes)

    def __dealloc__(self):
        if self.m != NULL:
            fbpc_mlp_destroy(self.m)
            self.m = NULL

    def buffer(self, int which, int l):
        """Device pointer of buffer `which` (W b dW db vW vb h dh = 0..7) of layer l; 0 if none."""
        return <uintptr_t>fbpc_mlp_buffer(self.m, which, l)

    def check_labels(self, stream, int64_t N, labels):
        cdef int64_t out[4]
        cdef void *s = P(stream)
        cdef void *l = P(labels)
        cdef int rc
        with nogil:
            rc = fbpc_mlp_check_labels(self.m, s, N, <int64_t *>l, out)
        check(rc)
        return out[0], out[1], out[2], out[3]

    def alloc_momentum(self, stream):
        check(fbpc_mlp_alloc_momentum(self.m, P(stream)))

    def reset_momentum(self, stream):
        check(fbpc_mlp_reset_momentum(self.m, P(stream)))

    def step(self, stream, int64_t N, x, labels, t, int mode, double lr, double weight_decay,
             double clip_norm, double momentum, bint count_correct, bint sync):
        """(loss, grad_norm, ncorrect) if sync, else None."""
        cdef fbpc_step_opts opt
        cdef fbpc_step_out out
        opt.mode = mode
        opt.lr = lr
        opt.weight_decay = weight_decay
        opt.clip_norm = clip_norm
        opt.momentum = momentum
        opt.count_correct = count_correct
        cdef void *s = P(stream)
        cdef void *px = P(x)
        cdef void *pl = P(labels)
        cdef void *pt = P(t)
        cdef int rc, sy = sync
        with nogil:
            rc = fbpc_mlp_step(self.m, s, N, px, <int64_t *>pl, pt, &opt, sy, &out)
        check(rc)
        return (out.loss, out.grad_norm, out.ncorrect) if sync else None

    def read_out(self, stream):
        cdef fbpc_step_out out
        cdef void *s = P(stream)
        cdef int rc
        with nogil:
            rc = fbpc_mlp_read_out(self.m, s, &out)
        check(rc)
        return out.loss, out.grad_norm, out.ncorrect

    def stats(self):
        cdef int64_t out[3]
        fbpc_mlp_stats(self.m, out)
        return {"eager": out[0], "captured": out[1], "replayed": out[2]}
