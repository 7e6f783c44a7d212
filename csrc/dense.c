/* dense.c - the dense layer around its GEMMs: fused bias + activation epilogue,
 * fused activation mask + bias gradient, and the layer's forward and backward.
 */
#ifndef FBP_T
#define FBP_SELF "dense.c"
#include "fbp_generic.h"

int fbp_dense_forward(int dev, void *stream, int dsize, int64_t N, int64_t In, int64_t O,
                      const void *x, const void *W, const void *b, int act, void *y)
{
    (void)dev, (void)stream;
    if (dsize == 4)
        fbp_dense_forward_f32(N, In, O, x, W, b, act, y);
    else
        fbp_dense_forward_f64(N, In, O, x, W, b, act, y);
    return 0;
}

int fbp_dense_backward(int dev, void *stream, int dsize, int64_t N, int64_t In, int64_t O,
                       const void *dy, const void *x, const void *W, const void *y, int act,
                       void *dz, void *dx, void *dW, void *db, int accumulate)
{
    (void)dev, (void)stream;
    if (dsize == 4)
        fbp_dense_backward_f32(N, In, O, dy, x, W, y, act, dz, dx, dW, db, accumulate);
    else
        fbp_dense_backward_f64(N, In, O, dy, x, W, y, act, dz, dx, dW, db, accumulate);
    return 0;
}

#else

#include "fbp_act.h"

/* Column block of the bias-gradient reduction: each block of columns is summed
 * over all rows, in row order, by one thread. */
#ifndef FBP_COLBLK
#define FBP_COLBLK 256
#endif

/* Rows [r0, r1) of y (N, O): y = act(y + b). */
FBP_INLINE int FN(fbp_bias_act_rows_body)(fbp_idx r0, fbp_idx r1, fbp_idx O, const T *b,
                                         int act, T *y)
{
    for (fbp_idx r = r0; r < r1; r++) {
        T *yr = y + r * O;
#define ROW(a) FN(fbp_bias_act_row)(O, b, a, yr)
        FBP_ACT_DISPATCH(act, ROW)
#undef ROW
    }
    return 0;
}

FBP_DISPATCHED(int, FN(fbp_bias_act_rows), FN(fbp_bias_act_rows_body),
               (fbp_idx r0, fbp_idx r1, fbp_idx O, const T *b, int act, T *y),
               (r0, r1, O, b, act, y))

struct FN(bias_act_ctx) {
    fbp_idx O;
    const T *b;
    int act;
    T *y;
};

static void FN(bias_act_task)(void *p, fbp_idx r0, fbp_idx r1)
{
    const struct FN(bias_act_ctx) *c = p;
    FN(fbp_bias_act_rows)(r0, r1, c->O, c->b, c->act, c->y);
}

/* y (N, O) in place, b (O,) or NULL: y = act(y + b). One pass over y, right
 * after the GEMM wrote it, instead of one pass for the bias and one for act. */
void FN(fbp_bias_act)(fbp_idx N, fbp_idx O, const T *b, int act, T *y)
{
    struct FN(bias_act_ctx) c = {O, b, act, y};
    fbp_parallel(fbp_threads_for(N * O, fbp_act_cost(act)), N, FN(bias_act_task), &c);
}

/* Rows [r0, r1) of z, y (N, O): z = z + b; y = act(z). */
FBP_INLINE int FN(fbp_bias_act_keep_rows_body)(fbp_idx r0, fbp_idx r1, fbp_idx O, const T *b,
                                              int act, T *z, T *y)
{
    for (fbp_idx r = r0; r < r1; r++) {
        T *restrict zr = z + r * O, *restrict yr = y + r * O;
        if (b)
            for (fbp_idx j = 0; j < O; j++)
                zr[j] += b[j];
#define ROW(a)                                                                             \
    for (fbp_idx j = 0; j < O; j++)                                                        \
        yr[j] = FN(fbp_act_apply)(a, zr[j]);
        FBP_ACT_DISPATCH(act, ROW)
#undef ROW
    }
    return 0;
}

FBP_DISPATCHED(int, FN(fbp_bias_act_keep_rows), FN(fbp_bias_act_keep_rows_body),
               (fbp_idx r0, fbp_idx r1, fbp_idx O, const T *b, int act, T *z, T *y),
               (r0, r1, O, b, act, z, y))

struct FN(bias_act_keep_ctx) {
    fbp_idx O;
    const T *b;
    int act;
    T *z, *y;
};

static void FN(bias_act_keep_task)(void *p, fbp_idx r0, fbp_idx r1)
{
    const struct FN(bias_act_keep_ctx) *c = p;
    FN(fbp_bias_act_keep_rows)(r0, r1, c->O, c->b, c->act, c->z, c->y);
}

/* z, y (N, O), b (O,) or NULL: z = z + b (kept: the backward input of an
 * activation whose derivative needs it), y = act(z); one pass, as fbp_bias_act. */
void FN(fbp_bias_act_keep)(fbp_idx N, fbp_idx O, const T *b, int act, T *z, T *y)
{
    struct FN(bias_act_keep_ctx) c = {O, b, act, z, y};
    fbp_parallel(fbp_threads_for(N * O, fbp_act_cost(act)), N, FN(bias_act_keep_task), &c);
}

/* Column block cb of dy, y, dz (N, O): dz = dy * act'(y), db (+)= its column sums;
 * with keep (N, O) bytes, dy is first multiplied by keep * scale (dropout). */
FBP_INLINE int FN(fbp_mask_bias_block_body)(fbp_idx cb, fbp_idx N, fbp_idx O, int act,
                                            const T *dy, const T *y, const uint8_t *keep,
                                            T scale, T *dz, T *db, int accumulate)
{
    fbp_idx o0 = cb * FBP_COLBLK;
    fbp_idx w = O - o0 < FBP_COLBLK ? O - o0 : FBP_COLBLK;
    T acc[FBP_COLBLK];
    for (fbp_idx j = 0; j < w; j++)
        acc[j] = (T)0;
    for (fbp_idx r = 0; r < N; r++) {
        const T *dyr = dy + r * O + o0;
        if (keep) {
            T *dzr = dz + r * O + o0;
#define ROW_DROP(a) FN(fbp_mask_acc_row_drop)(w, a, dyr, y + r * O + o0, keep + r * O + o0, \
                                              scale, dzr, acc)
            FBP_ACT_DISPATCH(act, ROW_DROP)
#undef ROW_DROP
        } else if (act == FBP_ACT_NONE) {
            for (fbp_idx j = 0; j < w; j++)
                acc[j] += dyr[j];
            if (dz && dz != dy)
                for (fbp_idx j = 0; j < w; j++)
                    dz[r * O + o0 + j] = dyr[j];
        } else {
            const T *yr = y + r * O + o0;
            T *dzr = dz + r * O + o0;
#define ROW(a) FN(fbp_mask_acc_row)(w, a, dyr, yr, dzr, acc)
#define ROW_INPLACE(a) FN(fbp_mask_acc_row_inplace)(w, a, yr, dzr, acc)
            if (dzr == dyr) {
                FBP_ACT_DISPATCH(act, ROW_INPLACE)
            } else {
                FBP_ACT_DISPATCH(act, ROW)
            }
#undef ROW
#undef ROW_INPLACE
        }
    }
    for (fbp_idx j = 0; j < w; j++)
        db[o0 + j] = accumulate ? db[o0 + j] + acc[j] : acc[j];
    return 0;
}

FBP_DISPATCHED(int, FN(fbp_mask_bias_block), FN(fbp_mask_bias_block_body),
               (fbp_idx cb, fbp_idx N, fbp_idx O, int act, const T *dy, const T *y,
                const uint8_t *keep, T scale, T *dz, T *db, int accumulate),
               (cb, N, O, act, dy, y, keep, scale, dz, db, accumulate))

struct FN(mask_bias_ctx) {
    fbp_idx N, O;
    int act, accumulate;
    const T *dy, *y;
    const uint8_t *keep;
    T scale;
    T *dz, *db;
};

static void FN(mask_bias_task)(void *p, fbp_idx cb0, fbp_idx cb1)
{
    const struct FN(mask_bias_ctx) *c = p;
    for (fbp_idx cb = cb0; cb < cb1; cb++)
        FN(fbp_mask_bias_block)(cb, c->N, c->O, c->act, c->dy, c->y, c->keep, c->scale,
                                c->dz, c->db, c->accumulate);
}

/* dy, y, dz (N, O), db (O,): dz = dy * act'(y) and db (+)= sum over rows of dz,
 * in the same pass over dy; keep (N, O) bytes or NULL: dy * keep * scale first.
 * Each block of columns is summed over all rows, in row order, by one thread.
 * dz may alias dy; dz may be NULL with act NONE and no keep. */
void FN(fbp_act_backward_bias_grad)(fbp_idx N, fbp_idx O, int act, const T *dy,
                                    const T *y, const uint8_t *keep, T scale, T *dz, T *db,
                                    int accumulate)
{
    struct FN(mask_bias_ctx) c = {N, O, act, accumulate, dy, y, keep, scale, dz, db};
    fbp_parallel(fbp_threads_for(N * O, FBP_COST_MEM), fbp_nblocks(O, FBP_COLBLK),
                 FN(mask_bias_task), &c);
}

/* x (N, I), W (I, O), b (O,) or NULL, y (N, O): y = act(x.W + b). */
static void FN(fbp_dense_forward)(fbp_idx N, fbp_idx I, fbp_idx O, const T *x, const T *W,
                           const T *b, int act, T *y)
{
    FN(fbp_gemm)(0, 0, N, O, I, (T)1, x, I, W, O, (T)0, y, O);
    FN(fbp_bias_act)(N, O, b, act, y);
}

/* dy, y, dz (N, O); x, dx (N, I); W, dW (I, O); db (O,).
 * dz = dy * act'(y) (fused with db); dx = dz.W^T unless dx is NULL;
 * dW (+)= x^T.dz. With act NONE, dz is not needed and dy is used as is. */
static void FN(fbp_dense_backward)(fbp_idx N, fbp_idx I, fbp_idx O, const T *dy, const T *x,
                            const T *W, const T *y, int act, T *dz, T *dx, T *dW,
                            T *db, int accumulate)
{
    const T *g = dy;
    if (act == FBP_ACT_NONE) {
        FN(fbp_act_backward_bias_grad)(N, O, act, dy, y, NULL, 0, NULL, db, accumulate);
    } else {
        FN(fbp_act_backward_bias_grad)(N, O, act, dy, y, NULL, 0, dz, db, accumulate);
        g = dz;
    }
    if (dx)
        FN(fbp_gemm)(0, 1, N, I, O, (T)1, g, O, W, O, (T)0, dx, I);
    FN(fbp_gemm)(1, 0, I, O, N, (T)1, x, I, g, O, accumulate ? (T)1 : (T)0, dW, O);
}

#endif
