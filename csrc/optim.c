/* optim.c - the optimizers (PyTorch's, and scikit-learn's MLP solvers'), clipping,
 * and the norms clipping needs. */
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
    default:
        FBP_BAD_CODE("flat op", c->op);
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
void FN(fbp_clip_value)(fbp_idx n, T *g, T limit)
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

/* ---- the optimizers' updates, PyTorch's rules and order of operations -------------------
 * SGD (torch.optim.SGD): g += wd p; with momentum, buf = g on the first step, else
 * buf = mu buf + (1 - dampening) g, and g = g + mu buf (Nesterov) or buf; p -= lr g.
 * Adam (torch.optim.Adam): g += wd p; m = lerp(m, g, 1 - beta1); v = beta2 v +
 * (1 - beta2) g g; p += -(lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps), bcK = 1 - betaK^t.
 * AdamW: p *= 1 - lr wd first, then Adam without the L2 term. The scalars are
 * formed in double, as PyTorch's Python code forms them, then cast to T. */
struct FN(opt_ctx) {
    int kind, first, nesterov, centered;
    fbp_idx n;
    T *p, *v, *s, *a;
    const T *g;
    T lr, wd, mu, damp1, w1, b1, b2, omb2, step_size, bc2s, eps, decay;
};

/* torch.lerp's two forms, picked by the weight (aten/src/ATen/native/Lerp.h). */
FBP_INLINE T FN(lerp)(T a, T b, T w, int low)
{
    return low ? a + w * (b - a) : b - (b - a) * ((T)1 - w);
}

/* [i0, i1) of one SGD step. The flags are constants at each call site, so every
 * variant compiles to its own branch-free loop; wd = 0 skips the decay term (as
 * torch does: 0 * inf would be NaN). */
FBP_INLINE void FN(sgd_range)(fbp_idx i0, fbp_idx i1, T *restrict p, const T *restrict g,
                              T *restrict v, T lr, T wd, T mu, T damp1, int decay, int mom,
                              int first, int nesterov)
{
    for (fbp_idx i = i0; i < i1; i++) {
        T gi = decay ? g[i] + wd * p[i] : g[i];
        if (mom) {
            T b = first ? gi : v[i] * mu + gi * damp1;
            v[i] = b;
            gi = nesterov ? gi + b * mu : b;
        }
        p[i] = p[i] + gi * -lr;
    }
}

/* [i0, i1) of one Adam step: coupled L2 (Adam's weight_decay), decoupled decay
 * (AdamW's p *= 1 - lr wd), or neither. */
FBP_INLINE void FN(adam_range)(fbp_idx i0, fbp_idx i1, T *restrict p, const T *restrict g,
                               T *restrict m, T *restrict s, T wd, T decay, T w1, T b2, T omb2,
                               T bc2s, T eps, T step_size, int coupled, int decoupled, int low)
{
    for (fbp_idx i = i0; i < i1; i++) {
        T pi = decoupled ? p[i] * decay : p[i];
        T gi = coupled ? g[i] + wd * pi : g[i];
        T mi = FN(lerp)(m[i], gi, w1, low);
        T si = s[i] * b2 + omb2 * gi * gi;
        m[i] = mi;
        s[i] = si;
        T denom = SQRT(si) / bc2s + eps;
        p[i] = pi + -step_size * mi / denom;
    }
}

/* ---- scikit-learn's MLP solvers (sklearn/neural_network/_stochastic_optimizers.py),
 * in its order of operations; the L2 term is in the gradient (coupled):
 * SKSGD: g += wd p; v = mu v - lr g; p += v, or with Nesterov p += mu v - lr g.
 * SKADAM: g += wd p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
 *         p += -lr_t m / (sqrt(v) + eps), lr_t = lr sqrt(1 - b2^t) / (1 - b1^t). */
FBP_INLINE void FN(sksgd_range)(fbp_idx i0, fbp_idx i1, T *restrict p, const T *restrict g,
                                T *restrict v, T lr, T wd, T mu, int decay, int mom,
                                int nesterov)
{
    for (fbp_idx i = i0; i < i1; i++) {
        T gi = decay ? g[i] + wd * p[i] : g[i];
        if (mom) {
            T vi = mu * v[i] - lr * gi;
            v[i] = vi;
            p[i] += nesterov ? mu * vi - lr * gi : vi;
        } else {
            p[i] += -lr * gi;
        }
    }
}

FBP_INLINE void FN(skadam_range)(fbp_idx i0, fbp_idx i1, T *restrict p, const T *restrict g,
                                 T *restrict m, T *restrict s, T wd, T b1, T omb1, T b2,
                                 T omb2, T step_size, T eps, int decay)
{
    for (fbp_idx i = i0; i < i1; i++) {
        T gi = decay ? g[i] + wd * p[i] : g[i];
        T mi = b1 * m[i] + omb1 * gi;
        T si = b2 * s[i] + omb2 * (gi * gi);
        m[i] = mi;
        s[i] = si;
        p[i] += -step_size * mi / (SQRT(si) + eps);
    }
}

/* ---- torch.optim.RMSprop, in its order of operations: g += wd p; s = alpha s +
 * (1 - alpha) g g; centered: a = lerp(a, g, 1 - alpha), avg = sqrt(s - a a) + eps,
 * else avg = sqrt(s) + eps; with momentum v = mu v + g / avg, p -= lr v; else
 * p -= lr g / avg. */
FBP_INLINE void FN(rmsprop_range)(fbp_idx i0, fbp_idx i1, T *restrict p, const T *restrict g,
                                  T *restrict v, T *restrict s, T *restrict a, T wd, T alpha,
                                  T oma, T eps, T lr, T mu, int decay, int centered, int mom,
                                  int low)
{
    for (fbp_idx i = i0; i < i1; i++) {
        T gi = decay ? g[i] + wd * p[i] : g[i];
        T si = s[i] * alpha + gi * gi * oma;
        s[i] = si;
        T avg;
        if (centered) {
            T ai = FN(lerp)(a[i], gi, oma, low);
            a[i] = ai;
            avg = SQRT(si + -(ai * ai)) + eps;
        } else {
            avg = SQRT(si) + eps;
        }
        if (mom) {
            T vi = v[i] * mu + gi / avg;
            v[i] = vi;
            p[i] = p[i] + vi * -lr;
        } else {
            p[i] = p[i] + -lr * (gi / avg);
        }
    }
}

FBP_INLINE void FN(opt_range_body)(const struct FN(opt_ctx) *c, fbp_idx i0, fbp_idx i1)
{
    /* c->kind: AdamW runs as Adam with its decay factor (fbp_optimizer_step) */
    _Static_assert(FBP_NOPT == 6, "opt_range_body: a branch per optimizer");
    if (c->kind == FBP_OPT_RMSPROP) {
        const int decay = c->wd != (T)0, low = c->w1 < (T)0.5;
#define RMS_CASE(dec, cen, mom)                                                              \
        FN(rmsprop_range)(i0, i1, c->p, c->g, c->v, c->s, c->a, c->wd, c->b2, c->w1, c->eps,     \
                          c->lr, c->mu, dec, cen, mom, low)
        if (c->centered)
            c->v ? (decay ? RMS_CASE(1, 1, 1) : RMS_CASE(0, 1, 1))
                 : (decay ? RMS_CASE(1, 1, 0) : RMS_CASE(0, 1, 0));
        else
            c->v ? (decay ? RMS_CASE(1, 0, 1) : RMS_CASE(0, 0, 1))
                 : (decay ? RMS_CASE(1, 0, 0) : RMS_CASE(0, 0, 0));
#undef RMS_CASE
        return;
    }
    if (c->kind == FBP_OPT_SKSGD) {
        const int decay = c->wd != (T)0;
#define SKSGD_CASE(dec, mom, nest) \
        FN(sksgd_range)(i0, i1, c->p, c->g, c->v, c->lr, c->wd, c->mu, dec, mom, nest)
        if (!c->v)
            decay ? SKSGD_CASE(1, 0, 0) : SKSGD_CASE(0, 0, 0);
        else if (c->nesterov)
            decay ? SKSGD_CASE(1, 1, 1) : SKSGD_CASE(0, 1, 1);
        else
            decay ? SKSGD_CASE(1, 1, 0) : SKSGD_CASE(0, 1, 0);
#undef SKSGD_CASE
        return;
    }
    if (c->kind == FBP_OPT_SKADAM) {
        if (c->wd != (T)0)
            FN(skadam_range)(i0, i1, c->p, c->g, c->v, c->s, c->wd, c->b1, c->w1, c->b2, c->omb2,
                             c->step_size, c->eps, 1);
        else
            FN(skadam_range)(i0, i1, c->p, c->g, c->v, c->s, c->wd, c->b1, c->w1, c->b2, c->omb2,
                             c->step_size, c->eps, 0);
        return;
    }
    if (c->kind == FBP_OPT_SGD) {
        const int decay = c->wd != (T)0;
#define SGD_CASE(dec, mom, first, nest)                                                           \
        FN(sgd_range)(i0, i1, c->p, c->g, c->v, c->lr, c->wd, c->mu, c->damp1, dec, mom, first, nest)
        if (!c->v)
            decay ? SGD_CASE(1, 0, 0, 0) : SGD_CASE(0, 0, 0, 0);
        else if (c->first)
            c->nesterov ? (decay ? SGD_CASE(1, 1, 1, 1) : SGD_CASE(0, 1, 1, 1))
                        : (decay ? SGD_CASE(1, 1, 1, 0) : SGD_CASE(0, 1, 1, 0));
        else
            c->nesterov ? (decay ? SGD_CASE(1, 1, 0, 1) : SGD_CASE(0, 1, 0, 1))
                        : (decay ? SGD_CASE(1, 1, 0, 0) : SGD_CASE(0, 1, 0, 0));
#undef SGD_CASE
        return;
    }
    if (c->kind != FBP_OPT_ADAM)
        FBP_BAD_CODE("optimizer", c->kind);
    const int coupled = c->wd != (T)0, decoupled = c->decay != (T)1, low = c->w1 < (T)0.5;
#define ADAM_CASE(cp, dc, lo)                                                                      \
    FN(adam_range)(i0, i1, c->p, c->g, c->v, c->s, c->wd, c->decay, c->w1, c->b2, c->omb2,        \
                   c->bc2s, c->eps, c->step_size, cp, dc, lo)
    if (low)
        coupled ? ADAM_CASE(1, 0, 1) : decoupled ? ADAM_CASE(0, 1, 1) : ADAM_CASE(0, 0, 1);
    else
        coupled ? ADAM_CASE(1, 0, 0) : decoupled ? ADAM_CASE(0, 1, 0) : ADAM_CASE(0, 0, 0);
#undef ADAM_CASE
}

FBP_DISPATCHED(void, FN(opt_range), FN(opt_range_body),
               (const struct FN(opt_ctx) *c, fbp_idx i0, fbp_idx i1), (c, i0, i1))

static void FN(opt_task)(void *q, fbp_idx t0, fbp_idx t1)
{
    const struct FN(opt_ctx) *c = q;
    fbp_idx i0, i1;
    fbp_chunk_range(c->n, t0, t1, &i0, &i1);
    FN(opt_range)(c, i0, i1);
}

/* One tensor's step of optimizer o (its t: the optimizer's step, from 1); wd is
 * this tensor's decay (the weights', or 0 for biases). v: momentum buffer or
 * Adam's first moment (NULL: plain SGD), s: Adam's second moment. All (n,). */
void FN(fbp_optimizer_step)(fbp_idx n, T *p, const T *g, T *v, T *s, T *a,
                            const fbp_step_opts *o, double wd)
{
    struct FN(opt_ctx) c = {0};
    c.kind = o->optimizer == FBP_OPT_ADAMW ? FBP_OPT_ADAM : o->optimizer;
    c.n = n, c.p = p, c.g = g, c.s = s;
    c.lr = (T)o->lr;
    c.decay = (T)1;
    _Static_assert(FBP_NOPT == 6, "fbp_optimizer_step: a branch per optimizer");
    if (o->optimizer == FBP_OPT_RMSPROP) {
        c.v = o->momentum != 0.0 ? v : NULL;
        c.a = o->centered ? a : NULL;
        c.centered = o->centered;
        c.wd = (T)wd, c.mu = (T)o->momentum, c.eps = (T)o->eps;
        c.b2 = (T)o->beta2, c.w1 = (T)(1.0 - o->beta2);
    } else if (o->optimizer == FBP_OPT_SKSGD) {
        c.v = o->momentum != 0.0 ? v : NULL;
        c.nesterov = o->nesterov;
        c.wd = (T)wd, c.mu = (T)o->momentum;
    } else if (o->optimizer == FBP_OPT_SKADAM) {
        /* sklearn forms lr_t in double (NumPy scalars) */
        double lr_t = o->lr * sqrt(1.0 - pow(o->beta2, (double)o->t)) /
                      (1.0 - pow(o->beta1, (double)o->t));
        c.v = v;
        c.wd = (T)wd;
        c.b1 = (T)o->beta1, c.w1 = (T)(1.0 - o->beta1);
        c.b2 = (T)o->beta2, c.omb2 = (T)(1.0 - o->beta2);
        c.step_size = (T)lr_t, c.eps = (T)o->eps;
    } else if (o->optimizer == FBP_OPT_SGD) {
        c.v = o->momentum != 0.0 ? v : NULL;
        c.first = o->t <= 1;
        c.nesterov = o->nesterov;
        c.wd = (T)wd, c.mu = (T)o->momentum, c.damp1 = (T)(1.0 - o->dampening);
    } else if (o->optimizer == FBP_OPT_ADAM || o->optimizer == FBP_OPT_ADAMW) {
        double bc1 = 1.0 - pow(o->beta1, (double)o->t), bc2 = 1.0 - pow(o->beta2, (double)o->t);
        c.v = v;
        if (o->optimizer == FBP_OPT_ADAMW)
            c.decay = (T)(1.0 - o->lr * wd);
        else
            c.wd = (T)wd;
        c.w1 = (T)(1.0 - o->beta1), c.b2 = (T)o->beta2, c.omb2 = (T)(1.0 - o->beta2);
        c.step_size = (T)(o->lr / bc1), c.bc2s = (T)pow(bc2, 0.5), c.eps = (T)o->eps;
    } else {
        FBP_BAD_CODE("optimizer", o->optimizer);
    }
    /* a pass streams p and g; the momentum buffer and Adam's moments add to it
     * (Adam reads four arrays and writes three), and so does the work a thread
     * takes: a 256 x 256 float64 Adam step is ~2x faster on two threads */
    int cost = (c.kind == FBP_OPT_ADAM || c.kind == FBP_OPT_SKADAM || c.kind == FBP_OPT_RMSPROP
                    ? 4 : c.v ? 2 : 1) *
               FBP_COST_MEM;
    fbp_parallel(fbp_threads_for(n, cost), fbp_nblocks(n, FBP_CHUNK), FN(opt_task), &c);
}

/* [i0, i1) of x: sum of squares in double. Eight accumulators give the compiler
 * independent lanes to vectorize without reassociating anything. The loop runs
 * over a count of blocks: Python's -fwrapv makes `i + 8 <= i1` uncountable, and
 * GCC then left the float32 loop scalar. */
FBP_INLINE double FN(sumsq_block_body)(fbp_idx i0, fbp_idx i1, const T *x)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const fbp_idx nb = (i1 - i0) / 8;
    const T *xb = x + i0;
    for (fbp_idx b = 0; b < nb; b++, xb += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += (double)xb[k] * (double)xb[k];
    for (fbp_idx i = i0 + 8 * nb; i < i1; i++)
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
