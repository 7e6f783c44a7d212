/* kernels.cu - every non-GEMM kernel, and the functional API of fbp_cuda.h.
 *
 * The formulas are csrc/'s (fbp_act.h, dense.c, losses.c, optim.c): masks read
 * the forward output y; softmax-xent subtracts the row max (exact, no eps) and
 * writes the gradient in the pass that computes the loss; losses and norms
 * accumulate in double. Reductions never use atomics: every partial sum has a
 * fixed owner and the partials are added in a fixed order, so a result depends
 * only on the shapes (and the device), never on timing.
 */
#include <limits.h>
#include <math.h>

#include "fbpc_internal.h"

#define FULL_MASK 0xffffffffu
#define EW_THREADS 256

/* ---- scalar math, per element type ------------------------------------------ */

__device__ __forceinline__ float d_exp(float v) { return expf(v); }
__device__ __forceinline__ double d_exp(double v) { return exp(v); }
__device__ __forceinline__ float d_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double d_tanh(double v) { return tanh(v); }

/* act(v); as fbp_act_apply (NaN stays NaN, sigmoid exact in both tails). */
template <class T> __device__ __forceinline__ T act_apply(int act, T v)
{
    switch (act) {
    case ACT_RELU:
        return v < (T)0 ? (T)0 : v;
    case ACT_SIGMOID: { /* e <= 1 never overflows */
        T e = d_exp(-(v < (T)0 ? -v : v));
        T r = (T)1 / ((T)1 + e);
        return v < (T)0 ? e * r : r;
    }
    case ACT_TANH:
        return d_tanh(v);
    default:
        return v;
    }
}

/* act'(y) from the forward output y; as fbp_act_mask. */
template <class T> __device__ __forceinline__ T act_mask(int act, T y)
{
    switch (act) {
    case ACT_RELU:
        return (T)(y > (T)0);
    case ACT_SIGMOID:
        return y * ((T)1 - y);
    case ACT_TANH:
        return (T)1 - y * y;
    default:
        return (T)1;
    }
}

/* ---- block reductions: a fixed butterfly in each warp, then warp 0 over the
 * warp results; every thread gets the result. NT is a multiple of 32. ---------- */

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

static inline unsigned ew_blocks(idx n)
{
    idx b = (n + EW_THREADS - 1) / EW_THREADS;
    return (unsigned)(b > 16384 ? 16384 : b);
}

#define GRID_STRIDE(i, n) \
    for (idx i = (idx)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (idx)gridDim.x * blockDim.x)

/* ---- activations -------------------------------------------------------------- */

/* x, y (n,): y = act(x). */
template <class T> __global__ void act_fwd_kernel(idx n, int act, const T *x, T *y)
{
    GRID_STRIDE(i, n) y[i] = act_apply(act, x[i]);
}

/* dy, y, dx (n,): dx = dy * act'(y). */
template <class T> __global__ void act_bwd_kernel(idx n, int act, const T *dy, const T *y, T *dx)
{
    GRID_STRIDE(i, n)
    {
        T m = act_mask(act, y[i]);
        dx[i] = dy[i] * m;
    }
}

template <class T> int k_act_forward(cudaStream_t s, idx n, int act, const T *x, T *y)
{
    if (n > 0)
        act_fwd_kernel<T><<<ew_blocks(n), EW_THREADS, 0, s>>>(n, act, x, y);
    LAUNCH_TRY();
    return 0;
}

template <class T> int k_act_backward(cudaStream_t s, idx n, int act, const T *dy, const T *y, T *dx)
{
    if (n > 0)
        act_bwd_kernel<T><<<ew_blocks(n), EW_THREADS, 0, s>>>(n, act, dy, y, dx);
    LAUNCH_TRY();
    return 0;
}

/* ---- dense epilogues -------------------------------------------------------------- */

/* y (N, O) in place, b (O,) or NULL: y = act(y + b). Block: rows r = blockIdx.x
 * + k gridDim.x, threads over the row's columns. */
template <class T> __global__ void bias_act_kernel(idx N, idx O, const T *b, int act, T *y)
{
    for (idx r = blockIdx.x; r < N; r += gridDim.x) {
        T *yr = y + r * O;
        for (idx j = threadIdx.x; j < O; j += blockDim.x)
            yr[j] = act_apply(act, b ? yr[j] + b[j] : yr[j]);
    }
}

template <class T> int k_bias_act(cudaStream_t s, idx N, idx O, const T *b, int act, T *y)
{
    if (N <= 0 || O <= 0 || (!b && act == ACT_NONE))
        return 0;
    unsigned nt = O >= 256 ? 256 : (unsigned)((O + 31) / 32 * 32);
    unsigned nb = (unsigned)(N > 65535 ? 65535 : N);
    bias_act_kernel<T><<<nb, nt, 0, s>>>(N, O, b, act, y);
    LAUNCH_TRY();
    return 0;
}

/* Column sums: block (32, BG_ROWS) owns 32 columns; row lane ty sums rows ty,
 * ty + BG_ROWS, ... in order, and the lanes are added in lane order. */
#define BG_ROWS 16

/* dy, y, dz (N, O), db (O,): dz = dy * act'(y), db (+)= column sums of dz.
 * dz may alias dy (each element is read, then written, by one thread) or be
 * NULL with act NONE. */
template <class T>
__global__ void bias_grad_kernel(idx N, idx O, int act, const T *dy, const T *y, T *dz, T *db,
                                 int accumulate)
{
    __shared__ T sh[BG_ROWS][33];
    idx c = (idx)blockIdx.x * 32 + threadIdx.x;
    T acc = (T)0;
    if (c < O) {
        for (idx r = threadIdx.y; r < N; r += BG_ROWS) {
            idx i = r * O + c;
            T v = dy[i];
            if (act != ACT_NONE) {
                T m = act_mask(act, y[i]);
                v = v * m;
            }
            if (dz)
                dz[i] = v;
            acc += v;
        }
    }
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < O) {
        T sum = sh[0][threadIdx.x];
        for (int k = 1; k < BG_ROWS; k++)
            sum += sh[k][threadIdx.x];
        db[c] = accumulate ? db[c] + sum : sum;
    }
}

template <class T>
int k_act_backward_bias_grad(cudaStream_t s, idx N, idx O, int act, const T *dy, const T *y,
                             T *dz, T *db, int accumulate)
{
    if (O <= 0)
        return 0;
    if (act == ACT_NONE && dz == dy)
        dz = nullptr; /* nothing to write */
    dim3 block(32, BG_ROWS);
    bias_grad_kernel<T><<<(unsigned)((O + 31) / 32), block, 0, s>>>(N, O, act, dy, y, dz, db,
                                                                   accumulate);
    LAUNCH_TRY();
    return 0;
}

/* ---- fused softmax + cross-entropy: one block per row ----------------------------- */

/* z, dz (N, C) (may alias), labels (N,) or t (N, C); loss, hit (N,). Block r:
 * max of row r, then (before any write) the label logit, the target sums and the
 * first argmax; then exp(z - max) into dz while summing; then the scaling. */
template <class T, int NT>
__global__ void softmax_xent_kernel(idx N, idx C, const T *z, const int64_t *labels, const T *t,
                                    T *dz, double *loss, double *hit)
{
    const idx r = blockIdx.x;
    const T *zr = z + r * C;
    const T *tr = t ? t + r * C : nullptr;
    T *dzr = dz + r * C;
    const T invN = (T)1 / (T)N;

    T m = zr[0]; /* as losses.c: a NaN logit is skipped by the max, caught by the sum */
    for (idx c = threadIdx.x; c < C; c += NT)
        m = zr[c] > m ? zr[c] : m;
    m = block_reduce<NT>(m, OpMax(), zr[0]);

    double st = 0.0, stz = 0.0;
    long long first = (long long)C;
    const idx lab = labels ? (idx)labels[r] : -1;
    if (tr) {
        for (idx c = threadIdx.x; c < C; c += NT)
            if (tr[c] != (T)0) {
                st += (double)tr[c];
                stz += (double)tr[c] * (double)zr[c];
            }
        st = block_reduce<NT>(st, OpSum(), 0.0);
        stz = block_reduce<NT>(stz, OpSum(), 0.0);
    }
    if (hit) {
        for (idx c = threadIdx.x; c < C; c += NT)
            if (zr[c] == m && c < first)
                first = c;
        first = block_reduce<NT>(first, OpMin(), (long long)C);
    }
    const T zl = labels ? zr[lab] : (T)0;
    __syncthreads(); /* every read of z is done: dz may overwrite it now */

    T sum = (T)0;
    for (idx c = threadIdx.x; c < C; c += NT) {
        T e = d_exp(zr[c] - m);
        dzr[c] = e;
        sum += e;
    }
    sum = block_reduce<NT>(sum, OpSum(), (T)0);
    const T rs = (T)1 / sum;
    for (idx c = threadIdx.x; c < C; c += NT) {
        T p = dzr[c] * rs;
        if (labels)
            dzr[c] = c == lab ? (p - (T)1) * invN : p * invN;
        else
            dzr[c] = (p - tr[c]) * invN;
    }
    if (threadIdx.x == 0) {
        double lse = (double)m + log((double)sum);
        loss[r] = labels ? lse - (double)zl : st * lse - stz;
        if (hit)
            hit[r] = first == lab ? 1.0 : 0.0;
    }
}

template <class T>
int k_softmax_xent(cudaStream_t s, idx N, idx C, const T *z, const int64_t *labels, const T *t,
                   T *dz, double *loss, double *hit)
{
    if (N <= 0 || C <= 0)
        return 0;
    if (N > 0x7fffffff)
        return fbpc_fail("softmax_cross_entropy: %lld rows exceed the grid limit", (long long)N);
    if (C <= 256)
        softmax_xent_kernel<T, 32><<<(unsigned)N, 32, 0, s>>>(N, C, z, labels, t, dz, loss, hit);
    else
        softmax_xent_kernel<T, 256><<<(unsigned)N, 256, 0, s>>>(N, C, z, labels, t, dz, loss, hit);
    LAUNCH_TRY();
    return 0;
}

/* ---- two-level reductions -------------------------------------------------------------- */

template <class T> struct FSumSq { /* (x / div)^2, or x^2 with div == 0 */
    const T *x;
    T div;
    __device__ double operator()(idx i) const
    {
        double v = div != (T)0 ? (double)(x[i] / div) : (double)x[i];
        return v * v;
    }
};
template <class T> struct FAbs {
    const T *x;
    __device__ double operator()(idx i) const { return fabs((double)x[i]); }
};
struct FSumD {
    const double *x;
    __device__ double operator()(idx i) const { return x[i]; }
};
template <class T> struct FMse { /* writes dy as it goes */
    const T *y, *t;
    T invN;
    T *dy;
    __device__ double operator()(idx i) const
    {
        T d = y[i] - t[i];
        dy[i] = d * invN;
        return (double)d * (double)d;
    }
};

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

/* part (np,): dst[0] = op over part, in one block. */
template <class Op>
__global__ void __launch_bounds__(RED_THREADS) reduce2_kernel(idx np, const double *part,
                                                              double *dst, Op op)
{
    double a = 0.0;
    for (idx i = threadIdx.x; i < np; i += RED_THREADS)
        a = op(a, part[i]);
    a = block_reduce<RED_THREADS>(a, op, 0.0);
    if (threadIdx.x == 0)
        dst[0] = a;
}

template <class F, class Op> static int reduce1(cudaStream_t s, idx n, F f, Op op, double *part)
{
    reduce1_kernel<<<(unsigned)red_blocks(n), RED_THREADS, 0, s>>>(n, f, op, part);
    LAUNCH_TRY();
    return 0;
}

template <class T> int k_sumsq_partials(cudaStream_t s, idx n, const T *x, T div, double *part)
{
    return reduce1(s, n, FSumSq<T>{x, div}, OpSum(), part);
}

template <class T> int k_maxabs_partials(cudaStream_t s, idx n, const T *x, double *part)
{
    return reduce1(s, n, FAbs<T>{x}, OpMax(), part);
}

int k_sum_partials(cudaStream_t s, idx n, const double *x, double *part)
{
    return reduce1(s, n, FSumD{x}, OpSum(), part);
}

template <class T>
int k_mse_partials(cudaStream_t s, idx n, const T *y, const T *t, T invN, T *dy, double *part)
{
    return reduce1(s, n, FMse<T>{y, t, invN, dy}, OpSum(), part);
}

int k_reduce_final(cudaStream_t s, idx np, const double *part, double *dst, int maxop)
{
    if (maxop)
        reduce2_kernel<<<1, RED_THREADS, 0, s>>>(np, part, dst, OpMax());
    else
        reduce2_kernel<<<1, RED_THREADS, 0, s>>>(np, part, dst, OpSum());
    LAUNCH_TRY();
    return 0;
}

/* ---- optimizer ----------------------------------------------------------------------- */

/* p, g (n,): p -= lr (g + wd p). */
template <class T> __global__ void sgd_kernel(idx n, T *p, const T *g, T lr, T wd)
{
    GRID_STRIDE(i, n) p[i] -= lr * (g[i] + wd * p[i]);
}

/* g (n,) to [-limit, limit]; NaN stays NaN. */
template <class T> __global__ void clip_kernel(idx n, T *g, T limit)
{
    GRID_STRIDE(i, n)
    {
        T v = g[i];
        g[i] = v > limit ? limit : (v < -limit ? -limit : v);
    }
}

/* x (n,) *= s. */
template <class T> __global__ void scale_kernel(idx n, T *x, T sc)
{
    GRID_STRIDE(i, n) x[i] *= sc;
}

/* dst (n,) += a src. */
template <class T> __global__ void axpy_kernel(idx n, T a, const T *src, T *dst)
{
    GRID_STRIDE(i, n) dst[i] += a * src[i];
}

/* p, g, v (n,): g *= (T)*clip (clip non-NULL); v = mu v + g, p -= lr v (v
 * non-NULL), else p -= lr (g + 0 p) (fbp_sgd with wd 0). */
template <class T>
__global__ void update_kernel(idx n, T *p, T *g, T *v, T lr, T mu, const double *clip)
{
    const T c = clip ? (T)*clip : (T)1;
    GRID_STRIDE(i, n)
    {
        T gi = g[i];
        if (clip) {
            gi = gi * c;
            g[i] = gi;
        }
        if (v) {
            T vi = mu * v[i] + gi;
            v[i] = vi;
            p[i] -= lr * vi;
        } else {
            p[i] -= lr * (gi + (T)0 * p[i]);
        }
    }
}

/* sc[0] = sqrt(sc[0]); sc[1] = the clip factor. One thread. */
template <class T> __global__ void clip_factor_kernel(double *sc, double max_norm)
{
    double norm = sqrt(sc[0]);
    sc[0] = norm;
    sc[1] = (isfinite(norm) && norm > max_norm) ? (double)(T)(max_norm / norm) : 1.0;
}

template <class T> int k_sgd(cudaStream_t s, idx n, T *p, const T *g, T lr, T wd)
{
    if (n > 0)
        sgd_kernel<T><<<ew_blocks(n), EW_THREADS, 0, s>>>(n, p, g, lr, wd);
    LAUNCH_TRY();
    return 0;
}

template <class T> int k_clip(cudaStream_t s, idx n, T *g, T limit)
{
    if (n > 0)
        clip_kernel<T><<<ew_blocks(n), EW_THREADS, 0, s>>>(n, g, limit);
    LAUNCH_TRY();
    return 0;
}

template <class T> int k_scale(cudaStream_t s, idx n, T *x, T sc)
{
    if (n > 0)
        scale_kernel<T><<<ew_blocks(n), EW_THREADS, 0, s>>>(n, x, sc);
    LAUNCH_TRY();
    return 0;
}

template <class T> int k_axpy(cudaStream_t s, idx n, T a, const T *src, T *dst)
{
    if (n > 0)
        axpy_kernel<T><<<ew_blocks(n), EW_THREADS, 0, s>>>(n, a, src, dst);
    LAUNCH_TRY();
    return 0;
}

template <class T>
int k_update(cudaStream_t s, idx n, T *p, T *g, T *v, T lr, T mu, const double *clip)
{
    if (n > 0)
        update_kernel<T><<<ew_blocks(n), EW_THREADS, 0, s>>>(n, p, g, v, lr, mu, clip);
    LAUNCH_TRY();
    return 0;
}

template <class T> int k_clip_factor(cudaStream_t s, double *sc, double max_norm)
{
    clip_factor_kernel<T><<<1, 1, 0, s>>>(sc, max_norm);
    LAUNCH_TRY();
    return 0;
}

/* ---- labels ------------------------------------------------------------------------- */

/* labels (N,): out {min, max, first index outside [0, C) or -1, its value}. One block. */
__global__ void __launch_bounds__(RED_THREADS)
    check_labels_kernel(idx N, const int64_t *labels, int64_t C, int64_t *out)
{
    long long lo = LLONG_MAX, hi = LLONG_MIN, bad = LLONG_MAX;
    for (idx i = threadIdx.x; i < N; i += RED_THREADS) {
        long long v = labels[i];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        if ((v < 0 || v >= C) && i < bad)
            bad = i;
    }
    lo = block_reduce<RED_THREADS>(lo, OpMin(), LLONG_MAX);
    hi = block_reduce<RED_THREADS>(hi, OpMax(), LLONG_MIN);
    bad = block_reduce<RED_THREADS>(bad, OpMin(), LLONG_MAX);
    if (threadIdx.x == 0) {
        out[0] = N ? lo : 0;
        out[1] = N ? hi : 0;
        out[2] = bad < N ? bad : -1;
        out[3] = bad < N ? labels[bad] : 0;
    }
}

int k_check_labels(cudaStream_t s, idx N, const int64_t *labels, int64_t C, int64_t *out)
{
    check_labels_kernel<<<1, RED_THREADS, 0, s>>>(N, labels, C, out);
    LAUNCH_TRY();
    return 0;
}

/* ---- instantiations ---------------------------------------------------------------- */

#define INSTANTIATE(T)                                                                      \
    template int k_act_forward<T>(cudaStream_t, idx, int, const T *, T *);                  \
    template int k_act_backward<T>(cudaStream_t, idx, int, const T *, const T *, T *);      \
    template int k_bias_act<T>(cudaStream_t, idx, idx, const T *, int, T *);                \
    template int k_act_backward_bias_grad<T>(cudaStream_t, idx, idx, int, const T *,        \
                                             const T *, T *, T *, int);                     \
    template int k_softmax_xent<T>(cudaStream_t, idx, idx, const T *, const int64_t *,      \
                                   const T *, T *, double *, double *);                     \
    template int k_sumsq_partials<T>(cudaStream_t, idx, const T *, T, double *);            \
    template int k_maxabs_partials<T>(cudaStream_t, idx, const T *, double *);              \
    template int k_mse_partials<T>(cudaStream_t, idx, const T *, const T *, T, T *,         \
                                   double *);                                               \
    template int k_sgd<T>(cudaStream_t, idx, T *, const T *, T, T);                         \
    template int k_clip<T>(cudaStream_t, idx, T *, T);                                      \
    template int k_scale<T>(cudaStream_t, idx, T *, T);                                     \
    template int k_axpy<T>(cudaStream_t, idx, T, const T *, T *);                           \
    template int k_update<T>(cudaStream_t, idx, T *, T *, T *, T, T, const double *);       \
    template int k_clip_factor<T>(cudaStream_t, double *, double);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

/* ---- the functional API (fbp_cuda.h) ------------------------------------------------- */

#define DISPATCH(dsize, CALL) ((dsize) == 4 ? CALL(float) : CALL(double))

/* Copy n doubles from the device to out, then sync the stream. */
static int read_doubles(cudaStream_t s, const double *src, double *out, idx n)
{
    CUDA_TRY(cudaMemcpyAsync(out, src, (size_t)n * sizeof(double), cudaMemcpyDeviceToHost, s));
    CUDA_TRY(cudaStreamSynchronize(s));
    return 0;
}

extern "C" int fbpc_check_labels(int dev, void *stream, int64_t N, const int64_t *labels,
                                 int64_t C, int64_t *scratch, int64_t out[4])
{
    DEVICE_GUARD(dev);
    cudaStream_t s = (cudaStream_t)stream;
    TRY(k_check_labels(s, N, labels, C, scratch));
    CUDA_TRY(cudaMemcpyAsync(out, scratch, 4 * sizeof(int64_t), cudaMemcpyDeviceToHost, s));
    CUDA_TRY(cudaStreamSynchronize(s));
    return 0;
}

extern "C" int fbpc_act_forward(int dev, void *stream, int dsize, int64_t n, int act,
                                const void *x, void *y)
{
    DEVICE_GUARD(dev);
#define CALL(T) k_act_forward<T>((cudaStream_t)stream, n, act, (const T *)x, (T *)y)
    return DISPATCH(dsize, CALL);
#undef CALL
}

extern "C" int fbpc_act_backward(int dev, void *stream, int dsize, int64_t n, int act,
                                 const void *dy, const void *y, void *dx)
{
    DEVICE_GUARD(dev);
#define CALL(T) k_act_backward<T>((cudaStream_t)stream, n, act, (const T *)dy, (const T *)y, (T *)dx)
    return DISPATCH(dsize, CALL);
#undef CALL
}

template <class T>
static int dense_forward(cudaStream_t s, idx N, idx I, idx O, const T *x, const T *W,
                         const T *b, int act, T *y)
{
    cublasHandle_t h;
    TRY(fbpc_blas(s, &h));
    TRY(gemm<T>(h, s, 0, 0, N, O, I, (T)1, x, I, W, O, (T)0, y, O));
    return k_bias_act<T>(s, N, O, b, act, y);
}

extern "C" int fbpc_dense_forward(int dev, void *stream, int dsize, int64_t N, int64_t I,
                                  int64_t O, const void *x, const void *W, const void *b, int act,
                                  void *y)
{
    DEVICE_GUARD(dev);
#define CALL(T) dense_forward<T>((cudaStream_t)stream, N, I, O, (const T *)x, (const T *)W, \
                                 (const T *)b, act, (T *)y)
    return DISPATCH(dsize, CALL);
#undef CALL
}

/* As fbp_dense_backward (csrc/dense.c). */
template <class T>
static int dense_backward(cudaStream_t s, idx N, idx I, idx O, const T *dy, const T *x,
                          const T *W, const T *y, int act, T *dz, T *dx, T *dW, T *db, int acc)
{
    cublasHandle_t h;
    TRY(fbpc_blas(s, &h));
    const T *g = dy;
    if (act == ACT_NONE) {
        TRY(k_act_backward_bias_grad<T>(s, N, O, act, dy, y, nullptr, db, acc));
    } else {
        TRY(k_act_backward_bias_grad<T>(s, N, O, act, dy, y, dz, db, acc));
        g = dz;
    }
    if (dx)
        TRY(gemm<T>(h, s, 0, 1, N, I, O, (T)1, g, O, W, O, (T)0, dx, I));
    return gemm<T>(h, s, 1, 0, I, O, N, (T)1, x, I, g, O, acc ? (T)1 : (T)0, dW, O);
}

extern "C" int fbpc_dense_backward(int dev, void *stream, int dsize, int64_t N, int64_t I,
                                   int64_t O, const void *dy, const void *x, const void *W,
                                   const void *y, int act, void *dz, void *dx, void *dW, void *db,
                                   int accumulate)
{
    DEVICE_GUARD(dev);
#define CALL(T) dense_backward<T>((cudaStream_t)stream, N, I, O, (const T *)dy, (const T *)x, \
                                  (const T *)W, (const T *)y, act, (T *)dz, (T *)dx, (T *)dW,  \
                                  (T *)db, accumulate)
    return DISPATCH(dsize, CALL);
#undef CALL
}

/* scratch: rows (N) | partials (RED_MAXBLK) | result (1). */
template <class T>
static int softmax_xent(cudaStream_t s, idx N, idx C, const T *z, const int64_t *labels,
                        const T *t, T *dz, double *scratch, double *loss)
{
    double *rows = scratch, *part = scratch + N, *res = part + RED_MAXBLK, sum;
    TRY(k_softmax_xent<T>(s, N, C, z, labels, t, dz, rows, nullptr));
    TRY(k_sum_partials(s, N, rows, part));
    TRY(k_reduce_final(s, red_blocks(N), part, res, 0));
    TRY(read_doubles(s, res, &sum, 1));
    *loss = sum / (double)N;
    return 0;
}

extern "C" int fbpc_softmax_xent(int dev, void *stream, int dsize, int64_t N, int64_t C,
                                 const void *z, const int64_t *labels, const void *t, void *dz,
                                 double *scratch, double *loss)
{
    *loss = NAN;
    if (N <= 0)
        return 0;
    DEVICE_GUARD(dev);
#define CALL(T) softmax_xent<T>((cudaStream_t)stream, N, C, (const T *)z, labels, (const T *)t, \
                                (T *)dz, scratch, loss)
    return DISPATCH(dsize, CALL);
#undef CALL
}

/* scratch: partials (RED_MAXBLK) | result (1). */
template <class T>
static int mse(cudaStream_t s, idx N, idx D, const T *y, const T *t, T *dy, double *scratch,
               double *loss)
{
    double *part = scratch, *res = part + RED_MAXBLK, sum;
    idx n = N * D;
    TRY(k_mse_partials<T>(s, n, y, t, (T)1 / (T)N, dy, part));
    TRY(k_reduce_final(s, red_blocks(n), part, res, 0));
    TRY(read_doubles(s, res, &sum, 1));
    *loss = 0.5 * sum / (double)N;
    return 0;
}

extern "C" int fbpc_mse(int dev, void *stream, int dsize, int64_t N, int64_t D, const void *y,
                        const void *t, void *dy, double *scratch, double *loss)
{
    *loss = NAN;
    if (N <= 0)
        return 0;
    DEVICE_GUARD(dev);
#define CALL(T) mse<T>((cudaStream_t)stream, N, D, (const T *)y, (const T *)t, (T *)dy, scratch, loss)
    return DISPATCH(dsize, CALL);
#undef CALL
}

extern "C" int fbpc_sgd(int dev, void *stream, int dsize, int64_t n, void *p, const void *g,
                        double lr, double wd)
{
    DEVICE_GUARD(dev);
#define CALL(T) k_sgd<T>((cudaStream_t)stream, n, (T *)p, (const T *)g, (T)lr, (T)wd)
    return DISPATCH(dsize, CALL);
#undef CALL
}

extern "C" int fbpc_clip_value(int dev, void *stream, int dsize, int64_t n, void *g,
                               double limit)
{
    DEVICE_GUARD(dev);
#define CALL(T) k_clip<T>((cudaStream_t)stream, n, (T *)g, (T)limit)
    return DISPATCH(dsize, CALL);
#undef CALL
}

extern "C" int fbpc_scale(int dev, void *stream, int dsize, int64_t n, void *x, double sc)
{
    DEVICE_GUARD(dev);
#define CALL(T) k_scale<T>((cudaStream_t)stream, n, (T *)x, (T)sc)
    return DISPATCH(dsize, CALL);
#undef CALL
}

/* scratch: partials (k RED_MAXBLK) | results (k). */
extern "C" int fbpc_sumsq_many(int dev, void *stream, int k, const int *dsizes,
                               const int64_t *ns, const void *const *xs, double div, int maxabs,
                               double *scratch, double *out)
{
    if (k <= 0)
        return 0;
    DEVICE_GUARD(dev);
    cudaStream_t s = (cudaStream_t)stream;
    double *res = scratch + (idx)k * RED_MAXBLK;
    for (int i = 0; i < k; i++) {
        double *part = scratch + (idx)i * RED_MAXBLK;
        if (maxabs) {
#define CALL(T) k_maxabs_partials<T>(s, ns[i], (const T *)xs[i], part)
            TRY(DISPATCH(dsizes[i], CALL));
#undef CALL
        } else {
#define CALL(T) k_sumsq_partials<T>(s, ns[i], (const T *)xs[i], (T)div, part)
            TRY(DISPATCH(dsizes[i], CALL));
#undef CALL
        }
        TRY(k_reduce_final(s, red_blocks(ns[i]), part, res + i, maxabs));
    }
    return read_doubles(s, res, out, k);
}
