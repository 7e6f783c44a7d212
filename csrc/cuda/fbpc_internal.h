/* fbpc_internal.h - shared by the .cu files; not part of the API.
 *
 * Error plumbing (a thread-local message and -1), the device guard, the
 * row-major cuBLAS GEMM, the per-thread scratch memory, the device-side math
 * and block reductions every concern uses, and the launchers one file calls in
 * another, each instantiated for float and double. The codes are fbp_api.h's.
 */
#ifndef FBPC_INTERNAL_H
#define FBPC_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "fbp_cuda.h"

typedef int64_t idx;

/* Record a printf-style message for fbpc_last_error(); returns -1. */
int fbpc_fail(const char *fmt, ...);

/* Return -1 with the library's message unless expr gives ok. */
#define STATUS_TRY(type, ok, message, expr)                                              \
    do {                                                                                \
        type s_ = (expr);                                                               \
        if (s_ != (ok))                                                                 \
            return fbpc_fail("%s failed: %s (%s:%d)", #expr, message(s_), __FILE__,     \
                             __LINE__);                                                 \
    } while (0)
#define CUDA_TRY(expr) STATUS_TRY(cudaError_t, cudaSuccess, cudaGetErrorString, expr)
#define BLAS_TRY(expr) \
    STATUS_TRY(cublasStatus_t, CUBLAS_STATUS_SUCCESS, cublasGetStatusString, expr)

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

/* The element type of dsize: CALL(float) or CALL(double). */
#define DISPATCH(dsize, CALL) ((dsize) == 4 ? CALL(float) : CALL(double))

/* ---- runtime.cu ------------------------------------------------------------------- */

/* The shared cuBLAS handle of the current device (created once, default math:
 * no TF32), bound to stream s. */
int fbpc_blas(cudaStream_t s, cublasHandle_t *h);
/* A new handle with default math mode (the MLP workspace owns its own). */
int fbpc_blas_create(cublasHandle_t *h);
/* At least nbytes of device memory on the current device for this host thread:
 * a functional kernel's reduction partials and results. Calls on one thread are
 * ordered (each syncs its stream before returning a host value), so reuse is safe. */
int fbpc_scratch(size_t nbytes, void **p);
/* Copy n doubles from the device to out, then sync the stream. */
int fbpc_read_doubles(cudaStream_t s, const double *src, double *out, idx n);

/* Row-major C (M, N) = alpha op(A) (M, K) . op(B) (K, N) + beta C; ta/tb
 * transpose A/B; lda/ldb/ldc are row strides. As csrc/runtime.c's fbp_gemm: the
 * column-major C^T = op(B)^T . op(A)^T, so the operands are swapped, not copied. */
template <class T>
int gemm(cublasHandle_t h, cudaStream_t s, int ta, int tb, idx M, idx N, idx K, T alpha,
         const T *A, idx lda, const T *B, idx ldb, T beta, T *C, idx ldc);

/* ---- element-wise launches ------------------------------------------------------------ */

#define EW_THREADS 256

static inline unsigned ew_blocks(idx n)
{
    idx b = (n + EW_THREADS - 1) / EW_THREADS;
    return (unsigned)(b > 16384 ? 16384 : b);
}

#define GRID_STRIDE(i, n) \
    for (idx i = (idx)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (idx)gridDim.x * blockDim.x)

/* ---- the activations, per element type (as csrc/fbp_act.h) ---------------------------- */

__device__ __forceinline__ float d_exp(float v) { return expf(v); }
__device__ __forceinline__ double d_exp(double v) { return exp(v); }
__device__ __forceinline__ float d_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double d_tanh(double v) { return tanh(v); }
__device__ __forceinline__ float d_erf(float v) { return erff(v); }
__device__ __forceinline__ double d_erf(double v) { return erf(v); }

/* The host side of every launcher that takes an activation refuses a code
 * outside the table before launching (act_ok); inside a kernel, a code no case
 * knows traps (the launch then fails with an error) instead of computing the
 * identity. */
static inline int act_ok(int act)
{
    return act >= 0 && act < FBP_NACT ? 0 : fbpc_fail("unknown activation code %d", act);
}

/* sigmoid(v), exact in both tails: e <= 1 never overflows */
template <class T> __device__ __forceinline__ T d_sigmoid(T v)
{
    T e = d_exp(-(v < (T)0 ? -v : v));
    T r = (T)1 / ((T)1 + e);
    return v < (T)0 ? e * r : r;
}

/* act(v); as fbp_act_apply (NaN stays NaN, sigmoid exact in both tails). */
template <class T> __device__ __forceinline__ T act_apply(int act, T v)
{
    static_assert(FBP_NACT == 7, "act_apply: a case per activation");
    switch (act) {
    case FBP_ACT_NONE:
        return v;
    case FBP_ACT_RELU:
        return v < (T)0 ? (T)0 : v;
    case FBP_ACT_SIGMOID:
        return d_sigmoid(v);
    case FBP_ACT_TANH:
        return d_tanh(v);
    case FBP_ACT_GELU:
        return v * (T)0.5 * ((T)1 + d_erf(v * (T)0.70710678118654752440));
    case FBP_ACT_SILU:
        return v * d_sigmoid(v);
    case FBP_ACT_GELU_TANH:
        return (T)0.5 * v *
               ((T)1 + d_tanh((T)0.79788456080286535588 * (v + (T)0.044715 * v * v * v)));
    default:
        __trap();
    }
    return v;
}

/* act'(y) from the backward input y (the output, or GELU's input); as fbp_act_mask. */
template <class T> __device__ __forceinline__ T act_mask(int act, T y)
{
    static_assert(FBP_NACT == 7, "act_mask: a case per activation");
    switch (act) {
    case FBP_ACT_NONE:
        return (T)1;
    case FBP_ACT_RELU:
        return (T)(y > (T)0);
    case FBP_ACT_SIGMOID:
        return y * ((T)1 - y);
    case FBP_ACT_TANH:
        return (T)1 - y * y;
    case FBP_ACT_GELU:
        return (T)0.5 * ((T)1 + d_erf(y * (T)0.70710678118654752440)) +
               y * d_exp((T)-0.5 * y * y) * (T)0.39894228040143267794;
    case FBP_ACT_SILU: {
        T s = d_sigmoid(y);
        return s * ((T)1 + y * ((T)1 - s));
    }
    case FBP_ACT_GELU_TANH: {
        T th = d_tanh((T)0.79788456080286535588 * (y + (T)0.044715 * y * y * y));
        T dinner = (T)0.79788456080286535588 * ((T)1 + (T)(3 * 0.044715) * y * y);
        return (T)0.5 * ((T)1 + th) + (T)0.5 * y * ((T)1 - th * th) * dinner;
    }
    default:
        __trap();
    }
    return (T)1;
}

/* ---- reductions: a fixed butterfly in each warp, then warp 0 over the warp
 * results; every thread gets the result. NT is a multiple of 32. Level 1 writes
 * one double per block (red_blocks(n) blocks, a function of n only), level 2 sums
 * a run of partials in one block. Both sum in a fixed order, so results do not
 * depend on timing. ----------------------------------------------------------------- */

#define FULL_MASK 0xffffffffu
#define RED_THREADS 256
#define RED_MAXBLK 256

static inline idx red_blocks(idx n)
{
    idx b = (n + RED_THREADS * 8 - 1) / (RED_THREADS * 8);
    return b < 1 ? 1 : (b > RED_MAXBLK ? RED_MAXBLK : b);
}

struct OpSum {
    template <class V> __device__ V operator()(V a, V b) const { return a + b; }
};
struct OpMax { /* NaN wins */
    template <class V> __device__ V operator()(V a, V b) const
    {
        return (a != a || b != b) ? (a != a ? a : b) : (a > b ? a : b);
    }
};
struct OpMin {
    template <class V> __device__ V operator()(V a, V b) const { return b < a ? b : a; }
};

template <int NT, class V, class Op> __device__ V block_reduce(V v, Op op, V id)
{
    for (int o = 16; o > 0; o >>= 1)
        v = op(v, __shfl_xor_sync(FULL_MASK, v, o));
    if (NT == 32)
        return v;
    __shared__ V sh[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    v = lane < NT / 32 ? sh[lane] : id;
    for (int o = 16; o > 0; o >>= 1)
        v = op(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

/* f over [0, n): part[blockIdx.x] = op over the block's grid-strided indices. */
template <class F, class Op>
__global__ void __launch_bounds__(RED_THREADS) reduce1_kernel(idx n, F f, Op op, double *part)
{
    double a = 0.0;
    GRID_STRIDE(i, n) a = op(a, f(i));
    a = block_reduce<RED_THREADS>(a, op, 0.0);
    if (threadIdx.x == 0)
        part[blockIdx.x] = a;
}

template <class F, class Op> static inline int reduce1(cudaStream_t s, idx n, F f, Op op, double *part)
{
    reduce1_kernel<<<(unsigned)red_blocks(n), RED_THREADS, 0, s>>>(n, f, op, part);
    LAUNCH_TRY();
    return 0;
}

/* ---- launchers one file calls in another. Shapes as in fbp_cuda.h. ------------------ */

/* runtime.cu. part[0:red_blocks(n)]: partial sums of x (n,) doubles; dst[0] = sum of
 * part (np,) in a fixed order (maxop: the NaN-propagating max). */
int k_sum_partials(cudaStream_t s, idx n, const double *x, double *part);
int k_reduce_final(cudaStream_t s, idx np, const double *part, double *dst, int maxop);
/* dense.cu. y (N, O) in place, b (O,) or NULL: y = act(y + b). dy, y, dz (N, O),
 * db (O,): dz = dy * act'(y), db (+)= column sums of dz (dz may alias dy, may be
 * NULL with act NONE; y unused with act NONE). */
template <class T> int k_bias_act(cudaStream_t s, idx N, idx O, const T *b, int act, T *y);
template <class T>
int k_act_backward_bias_grad(cudaStream_t s, idx N, idx O, int act, const T *dy, const T *y,
                             T *dz, T *db, int accumulate);
/* losses.cu. z, dz (N, C), labels (N,) or t (N, C): dz = (softmax(z) - t)/N; loss
 * (N,) per-row losses in double; hit (N,) 1.0 where the first argmax is the label
 * (labels only; NULL to skip). y, t, dy (n,): dy = (y - t) invN, part = partial
 * sums of (y - t)^2. labels (N,): out {min, max, first index outside [0, C) or -1,
 * its value}. */
template <class T>
int k_softmax_xent(cudaStream_t s, idx N, idx C, const T *z, const int64_t *labels, const T *t,
                   T *dz, double *loss, double *hit);
template <class T>
int k_mse_partials(cudaStream_t s, idx n, const T *y, const T *t, T invN, T *dy, double *part);
int k_check_labels(cudaStream_t s, idx N, const int64_t *labels, int64_t C, int64_t *out);
/* optim.cu. part[0:red_blocks(n)] = partial sums of (x/div)^2 (div 0: x^2), or of
 * max|x|. dst (n,) += a src. x (n,) *= sc. The step's update after clipping, as
 * torch.optim.SGD: p, g, v (n,); clip (device double) or NULL: g *= (T)*clip in
 * place; then g += wd p, v = mu v + g (v non-NULL) and p -= lr v, or p -= lr g.
 * sc[0] = sqrt(sc[0]) (the norm); sc[1] = (T)(max_norm / (norm + 1e-6)) if the norm
 * is finite and that is < 1, else 1 (torch.nn.utils.clip_grad_norm_). */
template <class T> int k_sumsq_partials(cudaStream_t s, idx n, const T *x, T div, double *part);
template <class T> int k_maxabs_partials(cudaStream_t s, idx n, const T *x, double *part);
template <class T> int k_axpy(cudaStream_t s, idx n, T a, const T *src, T *dst);
template <class T> int k_scale(cudaStream_t s, idx n, T *x, T sc);
template <class T>
int k_update(cudaStream_t s, idx n, T *p, T *g, T *v, T lr, T mu, T wd, const double *clip);
template <class T> int k_clip_factor(cudaStream_t s, double *sc, double max_norm);

#endif /* FBPC_INTERNAL_H */
