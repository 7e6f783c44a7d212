# cython: language_level=3, boundscheck=False, wraparound=False
# distutils: language = c++
"""fastbp._cuda: csrc/cuda/ for the binding (built only with FASTBP_CUDA=1).

The functional kernels are not wrapped here: fastbp._core calls them through the
backend table this module hands out (``backend_capsule``), with the same
checks and messages as on the CPU. What is here: devices, copies, and the
device MLP workspace, whose step fastbp._core.mlp_step validates and runs.
Arguments are plain integers: device ids, streams (cudaStream_t values, 0 the
legacy default stream) and device pointers. A CUDA or cuBLAS failure raises
RuntimeError with the library's message.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

import numpy as np

from fastbp._api cimport *

cdef extern from "fbp_cuda.h" nogil:
    const fbp_backend *fbpc_backend()
    const char *fbpc_last_error()
    int fbpc_device_count(int *n)
    int fbpc_pointer_device(const void *p, int *dev)
    int fbpc_memcpy(int dev, void *stream, void *dst, const void *src, size_t nbytes)

    ctypedef struct fbpc_mlp:
        pass
    int fbpc_mlp_create(fbpc_mlp **out, int dev, int dsize, int L, const int64_t *sizes,
                        const int *act, int loss, int64_t cap, int graph)
    void fbpc_mlp_destroy(fbpc_mlp *m)
    void *fbpc_mlp_buffer(const fbpc_mlp *m, int which, int l)
    int fbpc_mlp_alloc_momentum(fbpc_mlp *m, void *stream)
    int fbpc_mlp_reset_momentum(fbpc_mlp *m, void *stream)
    int fbpc_mlp_step(fbpc_mlp *m, void *stream, int64_t N, const void *x, const int64_t *labels,
                      const void *t, const fbp_step_opts *opt, int sync, fbp_step_out *out)
    int fbpc_mlp_read_out(fbpc_mlp *m, void *stream, fbp_step_out *out)
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


def backend_capsule():
    """The table of csrc/cuda's entry points (fbp_api.h), for fastbp._core."""
    return PyCapsule_New(<void *>fbpc_backend(), "fastbp.backend", NULL)


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


cdef class Workspace:
    """The device MLP of csrc/cuda/step.cu: owns every buffer of fbp_api.h's table.

    Has the attributes fastbp._core.mlp_step reads from a CPU MLPWorkspace
    (sizes, dtype, cap, loss_code, device, has_momentum); run() is its step.
    """
    cdef fbpc_mlp *m
    cdef readonly int device, L, loss_code
    cdef readonly tuple sizes, activations
    cdef readonly object dtype
    cdef readonly long long cap

    def __cinit__(self, int dev, dtype, sizes, activations, int loss_code, long long cap,
                  bint graph):
        self.m = NULL
        cdef int L = len(sizes) - 1, l
        cdef int64_t *sz = <int64_t *>malloc((L + 1) * sizeof(int64_t))
        cdef int *act = <int *>malloc(L * sizeof(int))
        if sz == NULL or act == NULL:
            free(sz)
            free(act)
            raise MemoryError()
        for l in range(L + 1):
            sz[l] = sizes[l]
        for l in range(L):
            act[l] = activations[l]
        self.dtype = np.dtype(dtype)
        cdef int rc, dsize = self.dtype.itemsize
        with nogil:
            rc = fbpc_mlp_create(&self.m, dev, dsize, L, sz, act, loss_code, cap, graph)
        free(sz)
        free(act)
        check(rc)
        self.device, self.L, self.cap, self.loss_code = dev, L, cap, loss_code
        self.sizes = tuple(int(s) for s in sizes)
        self.activations = tuple(int(a) for a in activations)

    def __dealloc__(self):
        if self.m != NULL:
            fbpc_mlp_destroy(self.m)
            self.m = NULL

    def buffer(self, int which, int l):
        """Device pointer of buffer `which` (an fbp_buf code) of layer l; 0 if none."""
        return <uintptr_t>fbpc_mlp_buffer(self.m, which, l)

    @property
    def has_momentum(self):
        return fbpc_mlp_buffer(self.m, FBP_BUF_VW, 0) != NULL

    def alloc_momentum(self, stream):
        check(fbpc_mlp_alloc_momentum(self.m, P(stream)))

    def reset_momentum(self, stream):
        check(fbpc_mlp_reset_momentum(self.m, P(stream)))

    def run(self, stream, int64_t N, x, labels, t, int mode, double lr, double weight_decay,
            double clip_norm, double momentum, bint count_correct, bint sync):
        """The step on checked inputs (fastbp._core.mlp_step checks them): (loss,
        reg, grad_norm, ncorrect) if sync, else None."""
        cdef fbp_step_opts opt
        cdef fbp_step_out out
        memset(&opt, 0, sizeof(opt))
        opt.optimizer = FBP_OPT_SGD
        opt.t = 1
        opt.mode = mode
        opt.lr = lr
        opt.weight_decay = weight_decay
        opt.clip_norm = clip_norm
        opt.momentum = momentum
        opt.count_correct = count_correct
        cdef void *s = P(stream)
        cdef void *px = P(x)
        cdef void *pl = P(labels) if labels else NULL
        cdef void *pt = P(t) if t else NULL
        cdef int rc, sy = sync
        with nogil:
            rc = fbpc_mlp_step(self.m, s, N, px, <int64_t *>pl, pt, &opt, sy, &out)
        check(rc)
        return (out.loss, out.reg, out.grad_norm, out.ncorrect) if sync else None

    def read_out(self, stream):
        cdef fbp_step_out out
        cdef void *s = P(stream)
        cdef int rc
        with nogil:
            rc = fbpc_mlp_read_out(self.m, s, &out)
        check(rc)
        return out.loss, out.reg, out.grad_norm, out.ncorrect

    def stats(self):
        cdef int64_t out[3]
        fbpc_mlp_stats(self.m, out)
        return {"eager": out[0], "captured": out[1], "replayed": out[2]}
