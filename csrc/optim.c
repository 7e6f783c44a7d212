/* optim.c - SGD with L2 weight decay, clipping, and the norms clipping needs. */
#ifndef FBP_T
/* The element-wise updates of flat_task. */
enum { OP_SGD, OP_CLIP, OP_SCALE, OP_AXPY, OP_MOMENTUM };

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

/* The element-wise updates, one task for all: p (n,) is updated from g, v (n,)
 * and the scalars a, b of the op (enum above). */
struct FN(flat_ctx) {
    int op;
    fbp_idx n, bs;
    T *p, *v;
    const T *g;
    T a, b;
    double *part, div;
};

static void FN(flat_task)(void *q, fbp_idx t0, fbp_idx t1)
{
    const struct FN(flat_ctx) *c = q;
    fbp_idx i0, i1;
    fbp_chunk_range(c->n, t0, t1, &i0, &i1);
    T *restrict p = c->p, *restrict v = c->v;
    const T *restrict g = c->g;
    const T a = c->a, b = c->b;
    switch (c->op) {
    case OP_SGD: /* a = lr, b = wd; the same formula for wd == 0, so a non-finite
                  * parameter behaves the same either way */
        for (fbp_idx i = i0; i < i1; i++)
            p[i] -= a * (g[i] + b * p[i]);
        break;
    case OP_CLIP: /* to [-a, a]; the comparisons keep NaN as NaN */
        for (fbp_idx i = i0; i < i1; i++) {
            T x = p[i];
            p[i] = x > a ? a : (x < -a ? -a : x);
        }
        break;
    case OP_SCALE:
        for (fbp_idx i = i0; i < i1; i++)
            p[i] *= a;
        break;
    case OP_AXPY:
        for (fbp_idx i = i0; i < i1; i++)
            p[i] += a * g[i];
        break;
    case OP_MOMENTUM: /* a = lr, b = mu: v = mu v + g; p -= lr v (PyTorch's) */
        for (fbp_idx i = i0; i < i1; i++) {
            v[i] = b * v[i] + g[i];
            p[i] -= a * v[i];
        }
        break;
    }
}

static void FN(flat)(int op, fbp_idx n, T *p, const T *g, T *v, T a, T b)
{
    struct FN(flat_ctx) c = {op, n, 0, p, v, g, a, b, NULL, 0.0};
    fbp_parallel(fbp_threads_for(n, FBP_COST_MEM), fbp_nblocks(n, FBP_CHUNK), FN(flat_task), &c);
}

/* p, g (n,): p -= lr * (g + wd * p). */
void FN(fbp_sgd)(fbp_idx n, T *p, const T *g, T lr, T wd)
{
    FN(flat)(OP_SGD, n, p, g, NULL, lr, wd);
}

/* g (n,) in place to [-limit, limit]. */
static void FN(fbp_clip_value)(fbp_idx n, T *g, T limit)
{
    FN(flat)(OP_CLIP, n, g, NULL, NULL, limit, 0);
}

/* x (n,) *= s. */
void FN(fbp_scale)(fbp_idx n, T *x, T s)
{
    FN(flat)(OP_SCALE, n, x, NULL, NULL, s, 0);
}

/* dst (n,) += a * src. */
void FN(fbp_axpy)(fbp_idx n, T a, const T *src, T *dst)
{
    FN(flat)(OP_AXPY, n, dst, src, NULL, a, 0);
}

/* p, g, v (n,): v = mu v + g; p -= lr v. */
void FN(fbp_momentum)(fbp_idx n, T *p, const T *g, T *v, T lr, T mu)
{
    FN(flat)(OP_MOMENTUM, n, p, g, v, lr, mu);
}

/* [i0, i1) of x: sum of squares in double. Eight accumulators give the compiler
 * independent lanes to vectorize without reassociating anything. */
FBP_INLINE double FN(sumsq_block_body)(fbp_idx i0, fbp_idx i1, const T *x)
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

FBP_DISPATCHED(double, FN(sumsq_block), FN(sumsq_block_body),
               (fbp_idx i0, fbp_idx i1, const T *x), (i0, i1, x))

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
    struct FN(flat_ctx) c = {0, n, bs, NULL, NULL, x, 0, 0, part, div};
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
