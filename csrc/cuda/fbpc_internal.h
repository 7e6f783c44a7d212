/* fbpc_internal.h - shared by the .cu files; not part of the API.
 *
 * Error plumbing (a thread-local message and -1), the device guard, the
 * row-major cuBLAS GEMM, and the kernel launchers of kernels.cu, each
 * instantiated for float and double.
 */
#ifndef FBPC_INTERNAL_H
#define FBPC_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "fbp_cuda.h"

typedef int64_t idx;

enum { ACT_NONE = 0, ACT_RELU = 1, ACT_SIGMOID = 2, ACT_TANH = 3 };

/* Record a printf-style message for fbpc_last_error(); returns -1. */
int fbpc_fail(const char *fmt, ...);

#define CUDA_TRY(expr)                                                                  \
    do {                                                                                \
        cudaError_t e_ = (expr);                                                        \
        if (e_ != cudaSuccess)                                                          \
            return fbpc_fail("%s failed: %s (%s:%d)", #expr, cudaGetErrorString(e_),    \
                             __FILE__, __LINE__);                                       \
    } while (0)

#define BLAS_TRY(expr)                                                                  \
    do {                                                                                \
        cublasStatus_t s_ = (expr);                                                     \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                \
            return fbpc_fail("%s failed: %s (%s:%d)", #expr, cublasGetStatusString(s_), \
                             __FILE__, __LINE__);                                       \
    } while (0)

/* Any launch error of the kernels queued so far. */
#define LAUNCH_TRY() CUDA_TRY(cudaGetLastError())

#define TRY(expr)             \
    do {                      \
        if ((expr) != 0)      \
            return -1;        \
    } while (0)

/* Makes dev current for a scope and restores the previous device after. */
struct DeviceGuard {
    int prev = -1, ok = 0;
    explicit DeviceGuard(int dev)
    {
        if (cudaGetDevice(&prev) != cudaSuccess)
            prev = -1;
        ok = (prev == dev) || cudaSetDevice(dev) == cudaSuccess;
        if (!ok)
            fbpc_fail("cannot make device %d current", dev);
    }
    ~DeviceGuard()
    {
        int cur;
        if (prev >= 0 && cudaGetDevice(&cur) == cudaSuccess && cur != prev)
            cudaSetDevice(prev);
    }
};

#define DEVICE_GUARD(dev)       \
    DeviceGuard guard_(dev);    \
    if (!guard_.ok)             \
        return -1

/* The shared cuBLAS handle of the current device (created once, default math:
 * no TF32), bound to stream s. */
int fbpc_blas(cudaStream_t s, cublasHandle_t *h);
/* A new handle with default math mode (the MLP workspace owns its own). */
int fbpc_blas_create(cublasHandle_t *h);

/* Row-major C (M, N) = alpha op(A) (M, K) . op(B) (K, N) + beta C; ta/tb
 * transpose A/B; lda/ldb/ldc are row strides. As csrc/runtime.c's fbp_gemm: the
 * column-major C^T = op(B)^T . op(A)^T, so the operands are swapped, not copied. */
template <class T>
int gemm(cublasHandle_t h, cudaStream_t s, int ta, int tb, idx M, idx N, idx K, T alpha,
         const T *A, idx lda, const T *B, idx ldb, T beta, T *C, idx ldc);

/* ---- reductions: level 1 writes one double per block (red_blocks(n) blocks, a
 * function of n only), level 2 sums a run of partials in one block. Both sum in
 * a fixed order, so results do not depend on timing. */
#define RED_THREADS 256
#define RED_MAXBLK 256

static inline idx red_blocks(idx n)
{
    idx b = (n + RED_THREADS * 8 - 1) / (RED_THREADS * 8);
    return b < 1 ? 1 : (b > RED_MAXBLK ? RED_MAXBLK : b);
}

/* ---- launchers (kernels.cu). Shapes as in fbp_cuda.h. ---------------------- */
template <class T> int k_act_forward(cudaStream_t s, idx n, int act, const T *x, T *y);
template <class T> int k_act_backward(cudaStream_t s, idx n, int act, const T *dy, const T *y, T *dx);
/* y (N, O) in place, b (O,) or NULL: y = act(y + b). */
template <class T> int k_bias_act(cudaStream_t s, idx N, idx O, const T *b, int act, T *y);
/* dy, y, dz (N, O), db (O,): dz = dy * act'(y), db (+)= column sums of dz.
 * dz may alias dy, may be NULL with act NONE; y unused with act NONE. */
template <class T>
int k_act_backward_bias_grad(cudaStream_t s, idx N, idx O, int act, const T *dy, const T *y,
                             T *dz, T *db, int accumulate);
/* z, dz (N, C), labels (N,) or t (N, C): dz = (softmax(z) - t)/N; loss (N,)
 * per-row losses in double; hit (N,) 1.0 where the first argmax is the label
 * (labels only; NULL to skip). */
template <class T>
int k_softmax_xent(cudaStream_t s, idx N, idx C, const T *z, const int64_t *labels, const T *t,
                   T *dz, double *loss, double *hit);
/* part[0:red_blocks(n)] = partial sums of (x/div)^2 (div 0: x^2), or of max|x|. */
template <class T> int k_sumsq_partials(cudaStream_t s, idx n, const T *x, T div, double *part);
template <class T> int k_maxabs_partials(cudaStream_t s, idx n, const T *x, double *part);
/* part[0:red_blocks(n)]: partial sums of x (n,) doubles. */
int k_sum_partials(cudaStream_t s, idx n, const double *x, double *part);
/* y, t, dy (n,): dy = (y - t) * invN; part = partial sums of (y - t)^2. */
template <class T>
int k_mse_partials(cudaStream_t s, idx n, const T *y, const T *t, T invN, T *dy, double *part);
/* dst[0] = sum of part (np,) in a fixed order (maxop: the NaN-propagating max). */
int k_reduce_final(cudaStream_t s, idx np, const double *part, double *dst, int maxop);
/* p, g (n,): p -= lr (g + wd p). */
template <class T> int k_sgd(cudaStream_t s, idx n, T *p, const T *g, T lr, T wd);
template <class T> int k_clip(cudaStream_t s, idx n, T *g, T limit);
/* x (n,) *= s. */
template <class T> int k_scale(cudaStream_t s, idx n, T *x, T sc);
/* dst (n,) += a src. */
template <class T> int k_axpy(cudaStream_t s, idx n, T a, const T *src, T *dst);
/* The step's update after clipping. p, g, v (n,); clip (device double) or NULL:
 * g *= (T)*clip in place; then v = mu v + g, p -= lr v (v non-NULL) or
 * p -= lr (g + 0 p). */
template <class T>
int k_update(cudaStream_t s, idx n, T *p, T *g, T *v, T lr, T mu, const double *clip);
/* sc[0] = sqrt(sc[0]) (the norm); sc[1] = (T)(max_norm / norm) if the norm is
 * finite and > max_norm, else 1. */
template <class T> int k_clip_factor(cudaStream_t s, double *sc, double max_norm);
/* labels (N,): out {min, max, first index outside [0, C) or -1, its value}. */
int k_check_labels(cudaStream_t s, idx N, const int64_t *labels, int64_t C, int64_t *out);

#endif /* FBPC_INTERNAL_H */
