/* optim.c - SGD with L2 weight decay, clipping, and the norms clipping needs. */
#ifndef FBP_T
#define FBP_SELF "optim.c"
#include "fbp_generic.h"

int fbp_sgd(int dev, void *stream, int dsize, int64_t n, void *p, const void *g, double lr,
            double wd)
{
    (void)dev, (void)stream;
    if (dsize == 4)
        fbp_sgd_f32(n, p, g, (float)lr, (float)wd);
    else
        fbp_sgd_f64(n, p, g, lr, wd);
    return 0;
}

int fbp_clip_value(int dev, void *stream, int dsize, int64_t n, void *g, double limit)
{
    (void)dev, (void)stream;
    if (dsize == 4)
        fbp_clip_value_f32(n, g, (float)limit);
    else
        fbp_clip_value_f64(n, g, limit);
    return 0;
}

int fbp_scale(int dev, void *stream, int dsize, int64_t n, void *x, double s)
{
    (void)dev, (void)stream;
    if (dsize == 4)
        fbp_scale_f32(n, x, (float)s);
    else
        fbp_scale_f64(n, x, s);
    return 0;
}

int fbp_sumsq_many(int dev, void *stream, int k, const int *dsizes, const int64_t *ns,
                   const void *const *xs, double div, int maxabs, double *out)
{
    (void)dev, (void)stream;
    for (int i = 0; i < k; i++) {
        if (maxabs)
            out[i] = dsizes[i] == 4 ? fbp_maxabs_f32(ns[i], xs[i]) : fbp_maxabs_f64(ns[i], xs[i]);
        else
            out[i] = dsizes[i] == 4 ? fbp_sumsq_div_f32(ns[i], xs[i], div)
                                    : fbp_sumsq_div_f64(ns[i], xs[i], div);
    }
    return 0;
}

#else

/* One context for the flat loops of this file: p/x (n,), g (n,), two scalars. */
struct FN(flat_ctx) {
    fbp_idx n, bs;
    T *p;
    const T *g;
    T a, b;
    double *part, div;
};

static void FN(sgd_task)(void *q, fbp_idx t0, fbp_idx t1)
{
    const struct FN(flat_ctx) *c = q;
    fbp_idx i0, i1;
    fbp_chunk_range(c->n, t0, t1, &i0, &i1);
    T *restrict p = c->p;
    const T *restrict g = c->g;
    const T lr = c->a, wd = c->b;
    for (fbp_idx i = i0; i < i1; i++)
        p[i] -= lr * (g[i] + wd * p[i]);
}

/* p, g (n,): p -= lr * (g + wd * p). The same formula for wd == 0, so a
 * non-finite parameter behaves the same either way. */
void FN(fbp_sgd)(fbp_idx n, T *p, const T *g, T lr, T wd)
{
    struct FN(flat_ctx) c = {n, 0, p, g, lr, wd, NULL};
    fbp_parallel(fbp_threads_for(n, FBP_COST_MEM), fbp_nblocks(n, FBP_CHUNK), FN(sgd_task), &c);
}

static void FN(clip_task)(void *q, fbp_idx t0, fbp_idx t1)
{
    const struct FN(flat_ctx) *c = q;
    fbp_idx i0, i1;
    fbp_chunk_range(c->n, t0, t1, &i0, &i1);
    T *g = c->p;
    const T limit = c->a;
    for (fbp_idx i = i0; i < i1; i++) {
        T v = g[i];
        g[i] = v > limit ? limit : (v < -limit ? -limit : v);
    }
}

/* g (n,) in place to [-limit, limit]; comparisons keep NaN as NaN. */
static void FN(fbp_clip_value)(fbp_idx n, T *g, T limit)
{
    struct FN(flat_ctx) c = {n, 0, g, NULL, limit, 0, NULL};
    fbp_parallel(fbp_threads_for(n, FBP_COST_MEM), fbp_nblocks(n, FBP_CHUNK), FN(clip_task), &c);
}

static void FN(scale_task)(void *q, fbp_idx t0, fbp_idx t1)
{
    const struct FN(flat_ctx) *c = q;
    fbp_idx i0, i1;
    fbp_chunk_range(c->n, t0, t1, &i0, &i1);
    T *x = c->p;
    const T s = c->a;
    for (fbp_idx i = i0; i < i1; i++)
        x[i] *= s;
}

/* x (n,) *= s. */
void FN(fbp_scale)(fbp_idx n, T *x, T s)
{
    struct FN(flat_ctx) c = {n, 0, x, NULL, s, 0, NULL};
    fbp_parallel(fbp_threads_for(n, FBP_COST_MEM), fbp_nblocks(n, FBP_CHUNK), FN(scale_task), &c);
}

/* [i0, i1) of x: sum of squares in double. Eight accumulators give the compiler
 * independent lanes to vectorize without reassociating anything. */
static double FN(sumsq_block)(fbp_idx i0, fbp_idx i1, const T *x)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    fbp_idx i = i0;
    for (; i + 8 <= i1; i += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += (double)x[i + k] * (double)x[i + k];
    for (; i < i1; i++)
        acc[0] += (double)x[i] * (double)x[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* The same of x / div: the rare rescaled pass when the plain sum overflowed. */
static double FN(sumsq_div_block)(fbp_idx i0, fbp_idx i1, const T *x, double div)
{
    double acc = 0.0;
    for (fbp_idx i = i0; i < i1; i++) {
        double v = (double)x[i] / div;
        acc += v * v;
    }
    return acc;
}

static void FN(sumsq_task)(void *q, fbp_idx b0, fbp_idx b1)
{
    const struct FN(flat_ctx) *c = q;
    for (fbp_idx blk = b0; blk < b1; blk++) {
        fbp_idx i0 = blk * c->bs, i1 = i0 + c->bs < c->n ? i0 + c->bs : c->n;
        c->part[blk] = c->div == 0.0 ? FN(sumsq_block)(i0, i1, c->g)
                                     : FN(sumsq_div_block)(i0, i1, c->g, c->div);
    }
}

/* x (n,): sum of (x / div)^2 (div 0: of x^2) in double, fixed block order. */
static double FN(fbp_sumsq_div)(fbp_idx n, const T *x, double div)
{
    fbp_idx bs = fbp_block_size(n, FBP_RED_MIN), nb = fbp_nblocks(n, bs);
    double part[FBP_NBLK_MAX];
    struct FN(flat_ctx) c = {n, bs, NULL, x, 0, 0, part, div};
    fbp_parallel(fbp_threads_for(n, FBP_COST_MEM), nb, FN(sumsq_task), &c);
    return fbp_sum_partials(part, nb);
}

/* x (n,): sum of squares in double, fixed block order. */
double FN(fbp_sumsq)(fbp_idx n, const T *x)
{
    return FN(fbp_sumsq_div)(n, x, 0.0);
}

/* x (n,): max |x|, NaN if any element is NaN. Sequential: used only to rescale
 * a sum of squares that overflowed. */
static double FN(fbp_maxabs)(fbp_idx n, const T *x)
{
    double m = 0.0;
    for (fbp_idx i = 0; i < n; i++) {
        double a = fabs((double)x[i]);
        if (a != a)
            return NAN;
        m = a > m ? a : m;
    }
    return m;
}

#endif
