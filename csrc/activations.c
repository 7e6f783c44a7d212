/* activations.c - relu / sigmoid / tanh forward, and backward masks from y. */
#ifndef FBP_T
#define FBP_SELF "activations.c"
#include "fbp_generic.h"
#else

#include "fbp_act.h"

/* x, y [i0, i1): y = act(x), one vectorized loop per activation. */
FBP_INLINE int FN(fbp_act_forward_range_body)(fbp_idx i0, fbp_idx i1, int act,
                                             const T *x, T *y)
{
#define LOOP(a)                                                                            \
    for (fbp_idx i = i0; i < i1; i++)                                                      \
        y[i] = FN(fbp_act_apply)(a, x[i]);
    FBP_ACT_DISPATCH(act, LOOP)
#undef LOOP
    return 0;
}

/* fbp_act_forward_range: the baseline and the AVX2+FMA copies of the body above, and the switch. */
static int FN(fbp_act_forward_range_base)(fbp_idx i0, fbp_idx i1, int act, const T *x, T *y)
{
    return FN(fbp_act_forward_range_body)(i0, i1, act, x, y);
}
#ifdef FBP_HAVE_DISPATCH
static FBP_TARGET_AVX2 int FN(fbp_act_forward_range_avx2)(fbp_idx i0, fbp_idx i1, int act, const T *x, T *y)
{
    return FN(fbp_act_forward_range_body)(i0, i1, act, x, y);
}
#endif
static inline int FN(fbp_act_forward_range)(fbp_idx i0, fbp_idx i1, int act, const T *x, T *y)
{
#ifdef FBP_HAVE_DISPATCH
    if (fbp_avx2)
        return FN(fbp_act_forward_range_avx2)(i0, i1, act, x, y);
#endif
    return FN(fbp_act_forward_range_base)(i0, i1, act, x, y);
}

/* x, y (n,): y = act(x); y may alias x. Threads take fixed chunks. */
void FN(fbp_act_forward)(fbp_idx n, int act, const T *x, T *y)
{
    if (act == FBP_ACT_NONE) {
        if (y != x)
            for (fbp_idx i = 0; i < n; i++)
                y[i] = x[i];
        return;
    }
    int nt = fbp_threads_for(n);
    fbp_idx nch = nt > 1 ? fbp_nblocks(n, FBP_PAR_MIN) : 1;
    (void)nt;
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
    for (fbp_idx ch = 0; ch < nch; ch++) {
        fbp_idx i0 = ch * (n / nch) + (ch < n % nch ? ch : n % nch);
        fbp_idx i1 = i0 + n / nch + (ch < n % nch ? 1 : 0);
        FN(fbp_act_forward_range)(i0, i1, act, x, y);
    }
}

/* dy, y, dx (n,): dx = dy * act'(y); dx may alias dy. */
void FN(fbp_act_backward)(fbp_idx n, int act, const T *dy, const T *y, T *dx)
{
    int nt = fbp_threads_for(n);
    (void)nt;
    switch (act) {
    case FBP_ACT_RELU:
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
        for (fbp_idx i = 0; i < n; i++)
        {
            T m = FN(fbp_act_mask)(FBP_ACT_RELU, y[i]);
            dx[i] = dy[i] * m;
        }
        break;
    case FBP_ACT_SIGMOID:
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
        for (fbp_idx i = 0; i < n; i++)
        {
            T m = FN(fbp_act_mask)(FBP_ACT_SIGMOID, y[i]);
            dx[i] = dy[i] * m;
        }
        break;
    case FBP_ACT_TANH:
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
        for (fbp_idx i = 0; i < n; i++)
        {
            T m = FN(fbp_act_mask)(FBP_ACT_TANH, y[i]);
            dx[i] = dy[i] * m;
        }
        break;
    default:
        if (dx != dy)
            for (fbp_idx i = 0; i < n; i++)
                dx[i] = dy[i];
    }
}

#endif
