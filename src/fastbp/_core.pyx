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

This file holds the declarations; the code is in the files it includes, one
per section: _runtime.pxi, _desc.pxi, _kernels.pxi, _step.pxi, _bf16.pxi
(docs/dev/architecture.md).
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

cdef extern from "fbp_rng.h" nogil:
    uint64_t fbp_order_key(uint64_t seed, int64_t epoch, int64_t rank)
    void fbp_permutation(int64_t n, uint64_t key, int64_t *out)

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
    void fbp_set_handoff_us(double us)
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


include "_runtime.pxi"
include "_desc.pxi"
include "_kernels.pxi"
include "_step.pxi"

# ---- bfloat16 matmul precision -------------------------------------------------------------

include "_bf16.pxi"
