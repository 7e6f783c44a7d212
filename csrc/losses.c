/* losses.c - fused softmax + cross-entropy, mean squared error, sigmoid +
 * binary cross-entropy, and exp + half Poisson deviance, each with optional row
 * weights.
 *
 * Softmax-xent touches each logit row once from memory: the row (which fits in
 * cache) is scanned for its max, exponentiated into dz while summing, then
 * scaled in place, so the loss and the gradient come out of one pass over z.
 * log-sum-exp is exact: lse = max + log(sum exp(z - max)), no epsilon.
 * Per-row losses are summed in double, in fixed row blocks (see fbp_internal.h).
 */
#ifndef FBP_T
#define FBP_SELF "losses.c"
#include "fbp_generic.h"

/* labels (N,): one sequential scan, cheap next to any kernel that uses them. */
int fbp_check_labels(int dev, void *stream, int64_t N, const int64_t *labels, int64_t C,
                     int64_t out[4])
{
    (void)dev, (void)stream;
    int64_t lo = labels[0], hi = labels[0], bad = -1;
    for (int64_t i = 0; i < N; i++) {
        int64_t v = labels[i];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        if (bad < 0 && (v < 0 || v >= C))
            bad = i;
    }
    out[0] = lo, out[1] = hi, out[2] = bad, out[3] = bad >= 0 ? labels[bad] : 0;
    return 0;
}

int fbp_softmax_xent(int dev, void *stream, int dsize, int64_t N, int64_t C, const void *z,
                     const int64_t *labels, const void *t, void *dz, double *loss)
{
    (void)dev, (void)stream;
    *loss = dsize == 4 ? fbp_softmax_xent_f32(N, C, z, labels, t, NULL, 0.0, 0.0, dz)
                       : fbp_softmax_xent_f64(N, C, z, labels, t, NULL, 0.0, 0.0, dz);
    return 0;
}

int fbp_mse(int dev, void *stream, int dsize, int64_t N, int64_t D, const void *y, const void *t,
            void *dy, double *loss)
{
    (void)dev, (void)stream;
    *loss = dsize == 4 ? fbp_mse_f32(N, D, y, t, NULL, 0.0, dy)
                       : fbp_mse_f64(N, D, y, t, NULL, 0.0, dy);
    return 0;
}

int fbp_bce(int dev, void *stream, int dsize, int64_t N, int64_t C, const void *z, const void *t,
            void *dz, double *loss)
{
    (void)dev, (void)stream;
    *loss = dsize == 4 ? fbp_bce_f32(N, C, z, t, NULL, 0.0, 0.0, dz)
                       : fbp_bce_f64(N, C, z, t, NULL, 0.0, 0.0, dz);
    return 0;
}

int fbp_poisson(int dev, void *stream, int dsize, int64_t N, int64_t C, const void *z,
                const void *t, void *dz, double *loss)
{
    (void)dev, (void)stream;
    *loss = dsize == 4 ? fbp_poisson_f32(N, C, z, t, NULL, 0.0, dz)
                       : fbp_poisson_f64(N, C, z, t, NULL, 0.0, dz);
    return 0;
}

#else

/* A row's (or an output's) loss l reported within [lo, hi] when hi > 0: scikit-
 * learn's log-loss, which clips the probabilities (fbp_step_opts.loss_eps). */
FBP_INLINE double FN(fbp_clip_loss)(double l, double lo, double hi)
{
    return hi > 0.0 ? (l < lo ? lo : (l > hi ? hi : l)) : l;
}

/* Rows per loss block: a function of N and C only. */
static inline fbp_idx FN(fbp_row_block)(fbp_idx N, fbp_idx C)
{
    fbp_idx min_rows = C > 0 ? FBP_RED_MIN / C : FBP_RED_MIN;
    return fbp_block_size(N, min_rows < 1 ? 1 : min_rows);
}

/* zr (C,): the row max, or NaN when the row holds a NaN. OpenMP simd
 * reductions: the compiler fixes their lane order when it builds the file, so
 * they vectorize and never depend on the thread count. */
FBP_INLINE T FN(fbp_row_max)(fbp_idx C, const T *zr)
{
    T m = zr[0];
    int nan = 0;
#pragma omp simd reduction(max : m) reduction(| : nan)
    for (fbp_idx c = 0; c < C; c++) {
        m = zr[c] > m ? zr[c] : m;
        nan |= zr[c] != zr[c];
    }
    return nan ? (T)NAN : m;
}

/* A row whose max is not finite (a NaN, +inf, or every logit -inf) has a NaN
 * loss and a NaN gradient, as exp(z - max) gives in exact arithmetic; every
 * other row has z - max <= 0 or -inf and no NaN, so the exp needs no NaN mask. */
FBP_INLINE int FN(fbp_row_nonfinite)(fbp_idx C, T m, T *dzr)
{
    if (m - m == (T)0)
        return 0;
    for (fbp_idx c = 0; c < C; c++)
        dzr[c] = (T)NAN;
    return 1;
}

/* zr, dzr (C,): dzr = exp(zr - m) for a finite row max m, returns the sum (a
 * simd reduction, as above). If dzr aliases zr the logits are gone afterwards. */
FBP_INLINE T FN(fbp_exp_sum)(fbp_idx C, const T *zr, T m, T *dzr)
{
    T s = (T)0;
#pragma omp simd reduction(+ : s)
    for (fbp_idx c = 0; c < C; c++) {
        T e = EXP_NONPOS_NONAN(zr[c] - m);
        dzr[c] = e;
        s += e;
    }
    return s;
}

/* zr_next (C,): the row after this one, asked for while this row is computed.
 * A row is about a page and the hardware prefetchers stop at page boundaries,
 * so without it every row's max pass waits on memory (docs/dev/history.md). */
FBP_INLINE void FN(fbp_prefetch_row)(fbp_idx C, const T *zr_next)
{
    const char *p = (const char *)zr_next;
    size_t bytes = (size_t)C * sizeof(T);
    for (size_t off = 0; off < bytes; off += 64)
        __builtin_prefetch(p + off, 0, 3);
}

/* Row r of [r0, r1) starts alike for both target kinds: its max, the next row
 * asked for, and a non-finite row settled (returns 1, dzr all NaN). */
FBP_INLINE int FN(fbp_row_start)(fbp_idx r, fbp_idx r1, fbp_idx C, const T *zr, T *dzr, T *m)
{
    *m = FN(fbp_row_max)(C, zr);
    if (r + 1 < r1) /* after the max pass: asked before it, it slowed that pass */
        FN(fbp_prefetch_row)(C, zr + C);
    return FN(fbp_row_nonfinite)(C, *m, dzr);
}

/* A row's end with a label: dzr (C,) holds exp(z - max) summing to s; returns the
 * row's loss log(s) + gap (gap = max - z_label; within [lo, hi] if hi > 0) and
 * turns dzr into the gradient (softmax - onehot(lab)) f. */
FBP_INLINE double FN(fbp_xent_label_finish)(fbp_idx C, T *dzr, T s, fbp_idx lab, double gap,
                                            T f, double lo, double hi)
{
    double loss = FN(fbp_clip_loss)(log((double)s) + gap, lo, hi);
    T rs = (T)1 / s, k = rs * f; /* one multiply per element */
    T pl = dzr[lab] * rs;
    for (fbp_idx c = 0; c < C; c++)
        dzr[c] *= k;
    dzr[lab] = (pl - (T)1) * f;
    return loss;
}

/* Rows of few classes. A short row leaves the per-row loops above mostly in
 * their scalar remainders (at C = 10 about 90 ns a row, a tenth of a small
 * network's step), so such rows go in chunks of XENT_CHUNK elements: each row's
 * max and label gap, then one vector loop of exp over the chunk's contiguous
 * elements (each against its row's max), then per row the sum and
 * fbp_xent_label_finish, as fbp_xent_rows_labels_body; dz may alias z. */
#ifndef XENT_FEW
#define XENT_FEW 48    /* C below this: the chunked path (faster up to C = 32, slower at 64) */
#define XENT_CHUNK 512 /* elements per chunk */
#endif
FBP_INLINE double FN(fbp_xent_few_labels)(fbp_idx r0, fbp_idx r1, fbp_idx C, const T *z,
                                          const int64_t *labels, const T *w, T *dz, T invN,
                                          double lo, double hi)
{
    double acc = 0.0;
    T me[XENT_CHUNK], mx[XENT_CHUNK];
    double gap[XENT_CHUNK];
    const fbp_idx rows = XENT_CHUNK / C;
    for (fbp_idx q0 = r0; q0 < r1; q0 += rows) {
        const fbp_idx q1 = q0 + rows < r1 ? q0 + rows : r1, n = (q1 - q0) * C;
        const T *zq = z + q0 * C;
        T *dzq = dz + q0 * C;
        for (fbp_idx r = 0; r < q1 - q0; r++) {
            const T *zr = zq + r * C;
            T m = FN(fbp_row_max)(C, zr);
            mx[r] = m;
            gap[r] = (double)m - (double)zr[labels[q0 + r]]; /* before dz is written */
            for (fbp_idx c = 0; c < C; c++)
                me[r * C + c] = m;
        }
        /* a row with a non-finite max gets garbage here, replaced by NaN below */
#pragma omp simd
        for (fbp_idx i = 0; i < n; i++)
            dzq[i] = EXP_NONPOS_NONAN(zq[i] - me[i]);
        for (fbp_idx r = 0; r < q1 - q0; r++) {
            T *dzr = dzq + r * C;
            if (FN(fbp_row_nonfinite)(C, mx[r], dzr)) {
                acc += NAN;
                continue;
            }
            const fbp_idx lab = (fbp_idx)labels[q0 + r];
            T f = w ? w[q0 + r] * invN : invN;
            double wr = w ? (double)w[q0 + r] : 1.0;
            T s = (T)0;
            for (fbp_idx c = 0; c < C; c++)
                s += dzr[c];
            acc += wr * FN(fbp_xent_label_finish)(C, dzr, s, lab, gap[r], f, lo, hi);
        }
    }
    return acc;
}

/* Rows [r0, r1) of z, dz (N, C) with labels: writes dz, returns the rows' loss
 * sum (weighted by w, if given). loss_n = log(sum) + (max - z_label): no large
 * terms that cancel; reported within [lo, hi] if hi > 0. The gradient's row
 * factor is invN, or w_r invN. */
FBP_INLINE double FN(fbp_xent_rows_labels_body)(fbp_idx r0, fbp_idx r1, fbp_idx C,
                                                const T *z, const int64_t *labels,
                                                const T *w, T *dz, T invN, double lo,
                                                double hi)
{
    if (C < XENT_FEW)
        return FN(fbp_xent_few_labels)(r0, r1, C, z, labels, w, dz, invN, lo, hi);
    double acc = 0.0;
    for (fbp_idx r = r0; r < r1; r++) {
        const T *zr = z + r * C;
        T *dzr = dz + r * C;
        fbp_idx lab = (fbp_idx)labels[r];
        T m, f = w ? w[r] * invN : invN;
        double wr = w ? (double)w[r] : 1.0;
        if (FN(fbp_row_start)(r, r1, C, zr, dzr, &m)) {
            acc += NAN;
            continue;
        }
        double gap = (double)m - (double)zr[lab]; /* before dz (maybe z) is written */
        T s = FN(fbp_exp_sum)(C, zr, m, dzr);
        acc += wr * FN(fbp_xent_label_finish)(C, dzr, s, lab, gap, f, lo, hi);
    }
    return acc;
}

/* Rows [r0, r1) with probability targets t (N, C): loss_n = sum_c t_c (lse - z_c)
 * = (sum t) log(sum) + sum_c t_c (max - z_c), terms with t_c == 0 skipped (so a
 * -inf logit with t_c == 0 costs nothing). */
FBP_INLINE double FN(fbp_xent_rows_probs_body)(fbp_idx r0, fbp_idx r1, fbp_idx C,
                                               const T *z, const T *t, const T *w, T *dz,
                                               T invN)
{
    double acc = 0.0;
    for (fbp_idx r = r0; r < r1; r++) {
        const T *zr = z + r * C, *tr = t + r * C;
        T *dzr = dz + r * C;
        T m, f = w ? w[r] * invN : invN;
        double wr = w ? (double)w[r] : 1.0;
        if (FN(fbp_row_start)(r, r1, C, zr, dzr, &m)) {
            acc += NAN;
            continue;
        }
        double st = 0.0, gap = 0.0;
        for (fbp_idx c = 0; c < C; c++)
            if (tr[c] != (T)0) {
                st += (double)tr[c];
                gap += (double)tr[c] * ((double)m - (double)zr[c]);
            }
        T s = FN(fbp_exp_sum)(C, zr, m, dzr);
        acc += wr * ((st != 0.0 ? st * log((double)s) : 0.0) + gap);
        T rs = (T)1 / s;
        for (fbp_idx c = 0; c < C; c++)
            dzr[c] = (dzr[c] * rs - tr[c]) * f;
    }
    return acc;
}

FBP_DISPATCHED(double, FN(fbp_xent_rows_labels), FN(fbp_xent_rows_labels_body),
               (fbp_idx r0, fbp_idx r1, fbp_idx C, const T *z, const int64_t *labels,
                const T *w, T *dz, T invN, double lo, double hi),
               (r0, r1, C, z, labels, w, dz, invN, lo, hi))

FBP_DISPATCHED(double, FN(fbp_xent_rows_probs), FN(fbp_xent_rows_probs_body),
               (fbp_idx r0, fbp_idx r1, fbp_idx C, const T *z, const T *t, const T *w, T *dz,
                T invN),
               (r0, r1, C, z, t, w, dz, invN))

/* Block [i0, i1) of y, t, dy (n,): dy = (y - t) invN; returns sum (y - t)^2. Eight
 * accumulators give the compiler lanes to vectorize without reassociating; the
 * loop counts blocks (see sumsq_block_body in optim.c). */
FBP_INLINE double FN(fbp_mse_block_body)(fbp_idx i0, fbp_idx i1, const T *y, const T *t, T *dy,
                                         T invN)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const fbp_idx nb = (i1 - i0) / 8;
    for (fbp_idx b = 0; b < nb; b++) {
        const fbp_idx i = i0 + 8 * b;
        for (int k = 0; k < 8; k++) {
            T d = y[i + k] - t[i + k];
            dy[i + k] = d * invN;
            acc[k] += (double)d * (double)d;
        }
    }
    for (fbp_idx i = i0 + 8 * nb; i < i1; i++) {
        T d = y[i] - t[i];
        dy[i] = d * invN;
        acc[0] += (double)d * (double)d;
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

FBP_DISPATCHED(double, FN(fbp_mse_block), FN(fbp_mse_block_body),
               (fbp_idx i0, fbp_idx i1, const T *y, const T *t, T *dy, T invN),
               (i0, i1, y, t, dy, invN))

/* Rows [r0, r1) of y, t, dy (N, D) with row weights: dy = (y - t) w_r invN;
 * returns sum_r w_r sum_c (y - t)^2. */
static double FN(fbp_mse_rows_weighted)(fbp_idx r0, fbp_idx r1, fbp_idx D, const T *y,
                                        const T *t, const T *w, T *dy, T invN)
{
    double acc = 0.0;
    for (fbp_idx r = r0; r < r1; r++)
        acc += (double)w[r] * FN(fbp_mse_block)(r * D, (r + 1) * D, y, t, dy, w[r] * invN);
    return acc;
}

/* Rows [r0, r1) of z, t, dz (N, C): sigmoid + binary cross-entropy, returns the
 * (weighted) sum of sum_c softplus(z) - t z, written max(z, 0) - t z + log1p(e),
 * e = exp(-|z|) <= 1: exact for large |z| (finite at +-800), each term reported
 * within [lo, hi] if hi > 0; dz = (sigmoid(z) - t) f. e and log1p(e) in T, the
 * rest in double; each row's sum is a simd reduction (lane order fixed at build
 * time, never by the thread count). */
FBP_INLINE double FN(fbp_bce_rows_body)(fbp_idx r0, fbp_idx r1, fbp_idx C, const T *z,
                                        const T *t, const T *w, T *dz, T invN, double lo,
                                        double hi)
{
    double acc = 0.0;
    for (fbp_idx r = r0; r < r1; r++) {
        const T *zr = z + r * C, *tr = t + r * C;
        T *dzr = dz + r * C;
        T f = w ? w[r] * invN : invN;
        double row = 0.0;
#pragma omp simd reduction(+ : row)
        for (fbp_idx c = 0; c < C; c++) {
            T zc = zr[c], tc = tr[c];
            T sp = LOG1P_UNIT(EXP_NONPOS(zc < (T)0 ? zc : -zc));
            double zd = (double)zc;
            row += FN(fbp_clip_loss)((zd > 0.0 ? zd : 0.0) - (double)tc * zd + (double)sp, lo, hi);
            dzr[c] = (SIGMOID(zc) - tc) * f;
        }
        acc += (w ? (double)w[r] : 1.0) * row;
    }
    return acc;
}

FBP_DISPATCHED(double, FN(fbp_bce_rows), FN(fbp_bce_rows_body),
               (fbp_idx r0, fbp_idx r1, fbp_idx C, const T *z, const T *t, const T *w, T *dz,
                T invN, double lo, double hi),
               (r0, r1, C, z, t, w, dz, invN, lo, hi))

/* Rows [r0, r1) of z, t, dz (N, C), z the log of the predicted mean: returns the
 * (weighted) sum of sum_c exp(z) - t z + xlogy(t, t) - t (scikit-learn's half
 * Poisson deviance, the constant terms included, so that a perfect fit has loss
 * 0); dz = (exp(z) - t) f. exp and log in double (exp(z) overflows to inf for z
 * above ~709, and so does the loss: a diverged fit). */
static double FN(fbp_poisson_rows)(fbp_idx r0, fbp_idx r1, fbp_idx C, const T *z, const T *t,
                                   const T *w, T *dz, T invN)
{
    double acc = 0.0;
    for (fbp_idx r = r0; r < r1; r++) {
        const T *zr = z + r * C, *tr = t + r * C;
        T *dzr = dz + r * C;
        T f = w ? w[r] * invN : invN;
        double row = 0.0;
        for (fbp_idx c = 0; c < C; c++) {
            double zd = (double)zr[c], td = (double)tr[c], e = exp(zd);
            row += e - td * zd + (td > 0.0 ? td * log(td) : 0.0) - td;
            dzr[c] = (T)(e - td) * f;
        }
        acc += (w ? (double)w[r] : 1.0) * row;
    }
    return acc;
}

/* A blocked loss: block k covers rows [k bs, (k+1) bs) of z (kind LOSS_XENT with
 * labels or t, LOSS_BCE), or elements [k bs, (k+1) bs) of y = z (LOSS_MSE; rows
 * when weighted), and writes part[k]. */
struct FN(loss_ctx) {
    int kind;
    fbp_idx n, C, bs;
    const T *z, *t, *w;
    const int64_t *labels;
    T *dz, invN;
    double *part, lo, hi;
};

static void FN(loss_task)(void *p, fbp_idx b0, fbp_idx b1)
{
    const struct FN(loss_ctx) *c = p;
    for (fbp_idx blk = b0; blk < b1; blk++) {
        fbp_idx i0 = blk * c->bs, i1 = i0 + c->bs < c->n ? i0 + c->bs : c->n;
        double s;
        _Static_assert(FBP_NLOSS == 4, "loss_task: a branch per loss");
        if (c->kind == FBP_LOSS_MSE)
            s = c->w ? FN(fbp_mse_rows_weighted)(i0, i1, c->C, c->z, c->t, c->w, c->dz, c->invN)
                     : FN(fbp_mse_block)(i0, i1, c->z, c->t, c->dz, c->invN);
        else if (c->kind == FBP_LOSS_BCE)
            s = FN(fbp_bce_rows)(i0, i1, c->C, c->z, c->t, c->w, c->dz, c->invN, c->lo, c->hi);
        else if (c->kind == FBP_LOSS_POISSON)
            s = FN(fbp_poisson_rows)(i0, i1, c->C, c->z, c->t, c->w, c->dz, c->invN);
        else if (c->kind != FBP_LOSS_XENT)
            FBP_BAD_CODE("loss", c->kind);
        else if (c->labels)
            s = FN(fbp_xent_rows_labels)(i0, i1, c->C, c->z, c->labels, c->w, c->dz, c->invN,
                                         c->lo, c->hi);
        else
            s = FN(fbp_xent_rows_probs)(i0, i1, c->C, c->z, c->t, c->w, c->dz, c->invN);
        c->part[blk] = s;
    }
}

/* Runs a loss over N rows of C outputs, weights w (N,) or NULL, normalized by W
 * (> 0; else the rows, or the sum of w); returns the weighted sum of the row
 * losses divided by W and writes dz scaled by 1 / W (0 and 0 if the weights
 * sum to 0). eps > 0: log-losses (XENT with labels, BCE) reported as with
 * probabilities clipped to [eps, 1 - eps]. */
static double FN(fbp_loss)(int kind, fbp_idx N, fbp_idx C, const T *z, const int64_t *labels,
                           const T *t, const T *w, double W, double eps, T *dz)
{
    if (N <= 0)
        return NAN;
    if (!(W > 0.0)) {
        W = 0.0;
        for (fbp_idx r = 0; r < N; r++)
            W += w ? (double)w[r] : 1.0;
    }
    int flat = kind == FBP_LOSS_MSE && !w; /* blocks of elements, not rows */
    fbp_idx n = flat ? N * C : N;
    fbp_idx bs = flat ? fbp_block_size(n, FBP_RED_MIN) : FN(fbp_row_block)(N, C);
    fbp_idx nb = fbp_nblocks(n, bs);
    double part[FBP_NBLK_MAX];
    /* every row weighs 0 (a fit's batch of zero-weight rows): the batch adds no
     * loss and no gradient, where 1 / W would make both NaN */
    const int weightless = !(W > 0.0);
    T invN = weightless ? (T)0 : w || W != (double)N ? (T)(1.0 / W) : (T)1 / (T)N;
    double lo = eps > 0.0 ? -log1p(-eps) : 0.0, hi = eps > 0.0 ? -log(eps) : 0.0;
    struct FN(loss_ctx) c = {kind, n, C, bs, z, t, w, labels, dz, invN, part, lo, hi};
    int cost = kind == FBP_LOSS_MSE ? FBP_COST_MEM : FBP_COST_EXP;
    fbp_parallel(fbp_threads_for(N * C, cost), nb, FN(loss_task), &c);
    return weightless ? 0.0 : fbp_sum_partials(part, nb) / W;
}

/* z, dz (N, C); labels (N,) in [0, C), or else t (N, C) class probabilities:
 * dz = w_r (softmax(z) - t) / W; returns the (weighted) mean loss (eps: see
 * fbp_loss). */
double FN(fbp_softmax_xent)(fbp_idx N, fbp_idx C, const T *z, const int64_t *labels,
                            const T *t, const T *w, double W, double eps, T *dz)
{
    return FN(fbp_loss)(FBP_LOSS_XENT, N, C, z, labels, t, w, W, eps, dz);
}

/* y, t, dy (N, D): returns 0.5 sum w_r (y - t)^2 / W; dy = w_r (y - t) / W. */
double FN(fbp_mse)(fbp_idx N, fbp_idx D, const T *y, const T *t, const T *w, double W, T *dy)
{
    return 0.5 * FN(fbp_loss)(FBP_LOSS_MSE, N, D, y, NULL, t, w, W, 0.0, dy);
}

/* z, t, dz (N, C): returns sum w_r bce_r / W; dz = w_r (sigmoid(z) - t) / W (eps:
 * see fbp_loss). */
double FN(fbp_bce)(fbp_idx N, fbp_idx C, const T *z, const T *t, const T *w, double W,
                   double eps, T *dz)
{
    return FN(fbp_loss)(FBP_LOSS_BCE, N, C, z, NULL, t, w, W, eps, dz);
}

/* z, t, dz (N, C): returns sum w_r poisson_r / W; dz = w_r (exp(z) - t) / W. */
double FN(fbp_poisson)(fbp_idx N, fbp_idx C, const T *z, const T *t, const T *w, double W,
                       T *dz)
{
    return FN(fbp_loss)(FBP_LOSS_POISSON, N, C, z, NULL, t, w, W, 0.0, dz);
}

#endif
