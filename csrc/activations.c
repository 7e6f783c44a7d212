/* activations.c - relu / sigmoid / tanh forward, and backward masks from y. */
#ifndef FBP_T
#define FBP_SELF "activations.c"
#include "fbp_generic.h"
#else

#include "fbp_act.h"

/* x, y (n,): y = act(x); y may alias x. */
void FN(fbp_act_forward)(fbp_idx n, int act, const T *x, T *y)
{
    int nt = fbp_threads_for(n);
    (void)nt;
    switch (act) {
    case FBP_ACT_RELU:
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
        for (fbp_idx i = 0; i < n; i++)
            y[i] = FN(fbp_act_apply)(FBP_ACT_RELU, x[i]);
        break;
    case FBP_ACT_SIGMOID:
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
        for (fbp_idx i = 0; i < n; i++)
            y[i] = FN(fbp_act_apply)(FBP_ACT_SIGMOID, x[i]);
        break;
    case FBP_ACT_TANH:
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
        for (fbp_idx i = 0; i < n; i++)
            y[i] = FN(fbp_act_apply)(FBP_ACT_TANH, x[i]);
        break;
    default:
        if (y != x)
            for (fbp_idx i = 0; i < n; i++)
                y[i] = x[i];
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
