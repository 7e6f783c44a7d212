/* optim.cu - SGD with L2 weight decay, clipping, the norms clipping needs, and the
 * training step's update, as csrc/optim.c. */
#include <math.h>

#include "fbpc_internal.h"

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
__global__ void update_kernel(idx n, T *p, T *g, T *v, T lr, T mu, T wd, const double *clip)
{
    const T c = clip ? (T)*clip : (T)1;
    GRID_STRIDE(i, n)
    {
        T gi = g[i];
        if (clip) {
            gi = gi * c;
            g[i] = gi;
        }
        if (wd != (T)0) /* coupled L2 on the weights (torch.optim.SGD) */
            gi = gi + wd * p[i];
        if (v) {
            T vi = v[i] * mu + gi;
            v[i] = vi;
            gi = vi;
        }
        p[i] = p[i] + gi * -lr;
    }
}

/* sc[0] = sqrt(sc[0]); sc[1] = the clip factor. One thread. */
template <class T> __global__ void clip_factor_kernel(double *sc, double max_norm)
{
    double norm = sqrt(sc[0]);
    sc[0] = norm;
    double coef = max_norm / (norm + 1e-6); /* torch.nn.utils.clip_grad_norm_'s */
    sc[1] = (isfinite(norm) && coef < 1.0) ? (double)(T)coef : 1.0;
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
int k_update(cudaStream_t s, idx n, T *p, T *g, T *v, T lr, T mu, T wd, const double *clip)
{
    if (n > 0)
        update_kernel<T><<<ew_blocks(n), EW_THREADS, 0, s>>>(n, p, g, v, lr, mu, wd, clip);
    LAUNCH_TRY();
    return 0;
}

template <class T> int k_clip_factor(cudaStream_t s, double *sc, double max_norm)
{
    clip_factor_kernel<T><<<1, 1, 0, s>>>(sc, max_norm);
    LAUNCH_TRY();
    return 0;
}

/* ---- norms: two-level reductions in double --------------------------------------------- */

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
template <class T> int k_sumsq_partials(cudaStream_t s, idx n, const T *x, T div, double *part)
{
    return reduce1(s, n, FSumSq<T>{x, div}, OpSum(), part);
}

template <class T> int k_maxabs_partials(cudaStream_t s, idx n, const T *x, double *part)
{
    return reduce1(s, n, FAbs<T>{x}, OpMax(), part);
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
                               double *out)
{
    if (k <= 0)
        return 0;
    DEVICE_GUARD(dev);
    cudaStream_t s = (cudaStream_t)stream;
    void *mem;
    TRY(fbpc_scratch((size_t)k * (RED_MAXBLK + 1) * sizeof(double), &mem));
    double *scratch = (double *)mem, *res = scratch + (idx)k * RED_MAXBLK;
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
    return fbpc_read_doubles(s, res, out, k);
}

#define INSTANTIATE(T)                                                                      \
    template int k_sumsq_partials<T>(cudaStream_t, idx, const T *, T, double *);            \
    template int k_maxabs_partials<T>(cudaStream_t, idx, const T *, double *);              \
    template int k_scale<T>(cudaStream_t, idx, T *, T);                                     \
    template int k_axpy<T>(cudaStream_t, idx, T, const T *, T *);                           \
    template int k_update<T>(cudaStream_t, idx, T *, T *, T *, T, T, T, const double *);    \
    template int k_clip_factor<T>(cudaStream_t, double *, double);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE
