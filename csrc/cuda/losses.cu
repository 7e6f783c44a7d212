/* losses.cu - fused softmax + cross-entropy, mean squared error, and the label
 * check, as csrc/losses.c: the row max is subtracted (exact, no eps), the gradient
 * is written in the pass that computes the loss, losses accumulate in double and
 * are summed in a fixed order. */
#include <limits.h>
#include <math.h>

#include "fbpc_internal.h"

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

    /* A row with a NaN, a +inf or only -inf logits comes out NaN (exp(z - max) is
     * NaN somewhere, and so is the sum), as in losses.c. */
    T m = zr[0];
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

/* ---- mean squared error ------------------------------------------------------------- */

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

template <class T>
int k_mse_partials(cudaStream_t s, idx n, const T *y, const T *t, T invN, T *dy, double *part)
{
    return reduce1(s, n, FMse<T>{y, t, invN, dy}, OpSum(), part);
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

/* ---- entries --------------------------------------------------------------------------- */

extern "C" int fbpc_check_labels(int dev, void *stream, int64_t N, const int64_t *labels,
                                 int64_t C, int64_t out[4])
{
    DEVICE_GUARD(dev);
    cudaStream_t s = (cudaStream_t)stream;
    void *scratch;
    TRY(fbpc_scratch(4 * sizeof(int64_t), &scratch));
    TRY(k_check_labels(s, N, labels, C, (int64_t *)scratch));
    CUDA_TRY(cudaMemcpyAsync(out, scratch, 4 * sizeof(int64_t), cudaMemcpyDeviceToHost, s));
    CUDA_TRY(cudaStreamSynchronize(s));
    return 0;
}

/* scratch: rows (N) | partials (RED_MAXBLK) | result (1). */
template <class T>
static int softmax_xent(cudaStream_t s, idx N, idx C, const T *z, const int64_t *labels,
                        const T *t, T *dz, double *loss)
{
    void *scratch;
    TRY(fbpc_scratch(((size_t)N + RED_MAXBLK + 1) * sizeof(double), &scratch));
    double *rows = (double *)scratch, *part = rows + N, *res = part + RED_MAXBLK, sum;
    TRY(k_softmax_xent<T>(s, N, C, z, labels, t, dz, rows, nullptr));
    TRY(k_sum_partials(s, N, rows, part));
    TRY(k_reduce_final(s, red_blocks(N), part, res, 0));
    TRY(fbpc_read_doubles(s, res, &sum, 1));
    *loss = sum / (double)N;
    return 0;
}

extern "C" int fbpc_softmax_xent(int dev, void *stream, int dsize, int64_t N, int64_t C,
                                 const void *z, const int64_t *labels, const void *t, void *dz,
                                 double *loss)
{
    *loss = NAN;
    if (N <= 0)
        return 0;
    DEVICE_GUARD(dev);
#define CALL(T) softmax_xent<T>((cudaStream_t)stream, N, C, (const T *)z, labels, (const T *)t, \
                                (T *)dz, loss)
    return DISPATCH(dsize, CALL);
#undef CALL
}

/* scratch: partials (RED_MAXBLK) | result (1). */
template <class T>
static int mse(cudaStream_t s, idx N, idx D, const T *y, const T *t, T *dy, double *loss)
{
    void *scratch;
    TRY(fbpc_scratch((RED_MAXBLK + 1) * sizeof(double), &scratch));
    double *part = (double *)scratch, *res = part + RED_MAXBLK, sum;
    idx n = N * D;
    TRY(k_mse_partials<T>(s, n, y, t, (T)1 / (T)N, dy, part));
    TRY(k_reduce_final(s, red_blocks(n), part, res, 0));
    TRY(fbpc_read_doubles(s, res, &sum, 1));
    *loss = 0.5 * sum / (double)N;
    return 0;
}

extern "C" int fbpc_mse(int dev, void *stream, int dsize, int64_t N, int64_t D, const void *y,
                        const void *t, void *dy, double *loss)
{
    *loss = NAN;
    if (N <= 0)
        return 0;
    DEVICE_GUARD(dev);
#define CALL(T) mse<T>((cudaStream_t)stream, N, D, (const T *)y, (const T *)t, (T *)dy, loss)
    return DISPATCH(dsize, CALL);
#undef CALL
}

template int k_softmax_xent<float>(cudaStream_t, idx, idx, const float *, const int64_t *,
                                   const float *, float *, double *, double *);
template int k_softmax_xent<double>(cudaStream_t, idx, idx, const double *, const int64_t *,
                                    const double *, double *, double *, double *);
template int k_mse_partials<float>(cudaStream_t, idx, const float *, const float *, float,
                                   float *, double *);
template int k_mse_partials<double>(cudaStream_t, idx, const double *, const double *, double,
                                    double *, double *);
