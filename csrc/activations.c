/* activations.c - relu / sigmoid / tanh forward, and backward masks from y. */
#ifndef FBP_T
#define FBP_SELF "activations.c"
#include "fbp_generic.h"

int fbp_act_forward(int dev, void *stream, int dsize, int64_t n, int act, const void *x, void *y)
{
    (void)dev, (void)stream;
    if (dsize == 4)
        fbp_act_forward_f32(n, act, x, y);
    else
        fbp_act_forward_f64(n, act, x, y);
    return 0;
}

int fbp_act_backward(int dev, void *stream, int dsize, int64_t n, int act, const void *dy,
                     const void *y, void *dx)
{
    (void)dev, (void)stream;
    if (dsize == 4)
        fbp_act_backward_f32(n, act, dy, y, dx);
    else
        fbp_act_backward_f64(n, act, dy, y, dx);
    return 0;
}

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

FBP_DISPATCHED(int, FN(fbp_act_forward_range), FN(fbp_act_forward_range_body),
               (fbp_idx i0, fbp_idx i1, int act, const T *x, T *y), (i0, i1, act, x, y))

/* dy, y, dx [i0, i1): dx = dy * act'(y). The mask is its own statement (see
 * fbp_act.h) and the loop a product, so NaN in dy survives a zero mask. */
FBP_INLINE int FN(fbp_act_backward_range_body)(fbp_idx i0, fbp_idx i1, int act,
                                              const T *dy, const T *y, T *dx)
{
#define LOOP(a)                                                                            \
    for (fbp_idx i = i0; i < i1; i++) {                                                    \
        T m = FN(fbp_act_mask)(a, y[i]);                                                   \
        dx[i] = dy[i] * m;                                                                 \
    }
    FBP_ACT_DISPATCH(act, LOOP)
#undef LOOP
    return 0;
}

FBP_DISPATCHED(int, FN(fbp_act_backward_range), FN(fbp_act_backward_range_body),
               (fbp_idx i0, fbp_idx i1, int act, const T *dy, const T *y, T *dx),
               (i0, i1, act, dy, y, dx))

struct FN(act_ctx) {
    fbp_idx n;
    int act;
    const T *x, *y; /* forward: x; backward: dy (as x) and y */
    T *out;
};

static void FN(act_forward_task)(void *p, fbp_idx t0, fbp_idx t1)
{
    const struct FN(act_ctx) *c = p;
    fbp_idx i0, i1;
    fbp_chunk_range(c->n, t0, t1, &i0, &i1);
    FN(fbp_act_forward_range)(i0, i1, c->act, c->x, c->out);
}

static void FN(act_backward_task)(void *p, fbp_idx t0, fbp_idx t1)
{
    const struct FN(act_ctx) *c = p;
    fbp_idx i0, i1;
    fbp_chunk_range(c->n, t0, t1, &i0, &i1);
    FN(fbp_act_backward_range)(i0, i1, c->act, c->x, c->y, c->out);
}

/* x, y (n,): y = act(x); y may alias x. */
static void FN(fbp_act_forward)(fbp_idx n, int act, const T *x, T *y)
{
    if (act == FBP_ACT_NONE) {
        if (y != x)
            for (fbp_idx i = 0; i < n; i++)
                y[i] = x[i];
        return;
    }
    struct FN(act_ctx) c = {n, act, x, NULL, y};
    fbp_parallel(fbp_threads_for(n, fbp_act_cost(act)), fbp_nblocks(n, FBP_CHUNK),
                 FN(act_forward_task), &c);
}

/* dy, y, dx (n,): dx = dy * act'(y); dx may alias dy. */
static void FN(fbp_act_backward)(fbp_idx n, int act, const T *dy, const T *y, T *dx)
{
    if (act == FBP_ACT_NONE) {
        if (dx != dy)
            for (fbp_idx i = 0; i < n; i++)
                dx[i] = dy[i];
        return;
    }
    struct FN(act_ctx) c = {n, act, dy, y, dx};
    fbp_parallel(fbp_threads_for(n, FBP_COST_MEM), fbp_nblocks(n, FBP_CHUNK),
                 FN(act_backward_task), &c);
}

#endif
