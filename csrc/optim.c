/* optim.c - SGD with L2 weight decay, clipping, and the norms clipping needs. */
#ifndef FBP_T
#define FBP_SELF "optim.c"
#include "fbp_generic.h"
#else

/* p, g (n,): p -= lr * (g + wd * p). The same formula for wd == 0, so a
 * non-finite parameter behaves the same either way. */
void FN(fbp_sgd)(fbp_idx n, T *p, const T *g, T lr, T wd)
{
    int nt = fbp_threads_for(n);
    (void)nt;
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
    for (fbp_idx i = 0; i < n; i++)
        p[i] -= lr * (g[i] + wd * p[i]);
}

/* g (n,) in place to [-limit, limit]; comparisons keep NaN as NaN. */
void FN(fbp_clip_value)(fbp_idx n, T *g, T limit)
{
    int nt = fbp_threads_for(n);
    (void)nt;
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
    for (fbp_idx i = 0; i < n; i++) {
        T v = g[i];
        g[i] = v > limit ? limit : (v < -limit ? -limit : v);
    }
}

/* x (n,): sum of squares in double. Eight accumulators per block give the
 * compiler independent lanes to vectorize without reassociating anything. */
double FN(fbp_sumsq)(fbp_idx n, const T *x)
{
    fbp_idx bs = fbp_block_size(n, FBP_RED_MIN), nb = fbp_nblocks(n, bs);
    double part[FBP_NBLK_MAX];
    int nt = fbp_threads_for(n);
    if (nt > nb)
        nt = (int)nb;
    (void)nt;
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
    for (fbp_idx blk = 0; blk < nb; blk++) {
        fbp_idx i0 = blk * bs, i1 = i0 + bs < n ? i0 + bs : n;
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        fbp_idx i = i0;
        for (; i + 8 <= i1; i += 8)
            for (int k = 0; k < 8; k++)
                acc[k] += (double)x[i + k] * (double)x[i + k];
        for (; i < i1; i++)
            acc[0] += (double)x[i] * (double)x[i];
        part[blk] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
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

/* x (n,) *= s. */
void FN(fbp_scale)(fbp_idx n, T *x, T s)
{
    int nt = fbp_threads_for(n);
    (void)nt;
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
    for (fbp_idx i = 0; i < n; i++)
        x[i] *= s;
}

#endif
