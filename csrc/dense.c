/* dense.c - the dense layer around its GEMMs: fused bias + activation epilogue,
 * fused activation mask + bias gradient, and the layer's forward and backward.
 */
#ifndef FBP_T
#define FBP_SELF "dense.c"
#include "fbp_generic.h"
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

/* fbp_bias_act_rows: the baseline and the AVX2+FMA copies of the body above, and the switch. */
static int FN(fbp_bias_act_rows_base)(fbp_idx r0, fbp_idx r1, fbp_idx O, const T *b, int act, T *y)
{
    return FN(fbp_bias_act_rows_body)(r0, r1, O, b, act, y);
}
#ifdef FBP_HAVE_DISPATCH
static FBP_TARGET_AVX2 int FN(fbp_bias_act_rows_avx2)(fbp_idx r0, fbp_idx r1, fbp_idx O, const T *b, int act, T *y)
{
    return FN(fbp_bias_act_rows_body)(r0, r1, O, b, act, y);
}
#endif
static inline int FN(fbp_bias_act_rows)(fbp_idx r0, fbp_idx r1, fbp_idx O, const T *b, int act, T *y)
{
#ifdef FBP_HAVE_DISPATCH
    if (fbp_avx2)
        return FN(fbp_bias_act_rows_avx2)(r0, r1, O, b, act, y);
#endif
    return FN(fbp_bias_act_rows_base)(r0, r1, O, b, act, y);
}


/* y (N, O) in place, b (O,) or NULL: y = act(y + b). One pass over y, right
 * after the GEMM wrote it, instead of one pass for the bias and one for act. */
void FN(fbp_bias_act)(fbp_idx N, fbp_idx O, const T *b, int act, T *y)
{
    int nt = fbp_threads_for(N * O);
    (void)nt;
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
    for (fbp_idx r = 0; r < N; r++)
        FN(fbp_bias_act_rows)(r, r + 1, O, b, act, y);
}

/* dy, y, dz (N, O), db (O,): dz = dy * act'(y) and db (+)= sum over rows of dz,
 * in the same pass over dy. dz may alias dy; dz may be NULL with act NONE. */
void FN(fbp_act_backward_bias_grad)(fbp_idx N, fbp_idx O, int act, const T *dy,
                                    const T *y, T *dz, T *db, int accumulate)
{
    fbp_idx nb = fbp_nblocks(O, FBP_COLBLK);
    int nt = fbp_threads_for(N * O);
    if (nt > nb)
        nt = (int)nb;
    (void)nt;
#pragma omp parallel for if (nt > 1) num_threads(nt) schedule(static)
    for (fbp_idx cb = 0; cb < nb; cb++) {
        fbp_idx o0 = cb * FBP_COLBLK;
        fbp_idx w = O - o0 < FBP_COLBLK ? O - o0 : FBP_COLBLK;
        T acc[FBP_COLBLK];
        for (fbp_idx j = 0; j < w; j++)
            acc[j] = (T)0;
        for (fbp_idx r = 0; r < N; r++) {
            const T *dyr = dy + r * O + o0;
            if (act == FBP_ACT_NONE) {
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
    }
}

/* x (N, I), W (I, O), b (O,) or NULL, y (N, O): y = act(x.W + b). */
void FN(fbp_dense_forward)(fbp_idx N, fbp_idx I, fbp_idx O, const T *x, const T *W,
                           const T *b, int act, T *y)
{
    FN(fbp_gemm)(0, 0, N, O, I, (T)1, x, I, W, O, (T)0, y, O);
    FN(fbp_bias_act)(N, O, b, act, y);
}

/* dy, y, dz (N, O); x, dx (N, I); W, dW (I, O); db (O,).
 * dz = dy * act'(y) (fused with db); dx = dz.W^T unless dx is NULL;
 * dW (+)= x^T.dz. With act NONE, dz is not needed and dy is used as is. */
void FN(fbp_dense_backward)(fbp_idx N, fbp_idx I, fbp_idx O, const T *dy, const T *x,
                            const T *W, const T *y, int act, T *dz, T *dx, T *dW,
                            T *db, int accumulate)
{
    const T *g = dy;
    if (act == FBP_ACT_NONE) {
        FN(fbp_act_backward_bias_grad)(N, O, act, dy, y, NULL, db, accumulate);
    } else {
        FN(fbp_act_backward_bias_grad)(N, O, act, dy, y, dz, db, accumulate);
        g = dz;
    }
    if (dx)
        FN(fbp_gemm)(0, 1, N, I, O, (T)1, g, O, W, O, (T)0, dx, I);
    FN(fbp_gemm)(1, 0, I, O, N, (T)1, x, I, g, O, accumulate ? (T)1 : (T)0, dW, O);
}

#endif
