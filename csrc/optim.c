/* optim.c - SGD with L2 weight decay, clipping, and the norms clipping needs. */
#ifndef FBP_T
#define FBP_SELF "optim.c"
#include "fbp_generic.h"
#else

/* One context for the flat loops of this file: p/x (n,), g (n,), two scalars. */
struct FN(flat_ctx) {
    fbp_idx n, bs;
    T *p;
    const T *g;
    T a, b;
    double *part;
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
void FN(fbp_clip_value)(fbp_idx n, T *g, T limit)
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

/* Block b of x: sum of squares in double. Eight accumulators give the compiler
 * independent lanes to vectorize without reassociating anything. */
static void FN(sumsq_task)(void *q, fbp_idx b0, fbp_idx b1)
{
    const struct FN(flat_ctx) *c = q;
    const T *x = c->g;
    for (fbp_idx blk = b0; blk < b1; blk++) {
        fbp_idx i0 = blk * c->bs, i1 = i0 + c->bs < c->n ? i0 + c->bs : c->n;
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        fbp_idx i = i0;
        for (; i + 8 <= i1; i += 8)
            for (int k = 0; k < 8; k++)
                acc[k] += (double)x[i + k] * (double)x[i + k];
        for (; i < i1; i++)
            acc[0] += (double)x[i] * (double)x[i];
        c->part[blk] =
            ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
}

/* x (n,): sum of squares in double, fixed block order. */
double FN(fbp_sumsq)(fbp_idx n, const T *x)
{
    fbp_idx bs = fbp_block_size(n, FBP_RED_MIN), nb = fbp_nblocks(n, bs);
    double part[FBP_NBLK_MAX];
    struct FN(flat_ctx) c = {n, bs, NULL, x, 0, 0, part};
    fbp_parallel(fbp_threads_for(n, FBP_COST_MEM), nb, FN(sumsq_task), &c);
    return fbp_sum_partials(part, nb);
}

/* x (n,): max |x|, NaN if any element is NaN. Sequential: used only to rescale
 * a sum of squares that overflowed. */
double FN(fbp_maxabs)(fbp_idx n, const T *x)
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
