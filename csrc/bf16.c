/* bf16.c - bfloat16 matmul precision: the operands of a product rounded to
 * bfloat16 (round to nearest, ties to even), the product accumulated in float32.
 *
 * Two paths give the same numbers up to the order of the float32 accumulation
 * (products of two bfloat16 values are exact in float32):
 *   native    the operands' bf16 bits (uint16) through a provider's bf16 GEMM
 *             (oneDNN's dnnl_gemm_bf16bf16f32, set by src/fastbp/_bf16.py)
 *   emulated  the operands' bf16 values held in float32, through fbp_gemm_f32
 *             (the float32 BLAS): any CPU, no extra library
 * An operand copy ("bf16 buffer") has room for float32 elements, so one buffer
 * serves either path. Products are cut into blocks as fbp_gemm cuts them
 * (fbp_gemm_cut: by shape and machine, never by thread count), each block one
 * single-threaded provider call, so results are bitwise the same at any thread
 * count.
 */
#include <stdatomic.h>
#include <string.h>
#include "fbp_internal.h"

static fbp_gemm_bf16_fn g_gemm_bf16;
static _Atomic int g_bf16_status; /* the first nonzero status a provider returned */

void fbp_set_gemm_bf16(fbp_gemm_bf16_fn fn) { g_gemm_bf16 = fn; }

int fbp_bf16_native(void) { return g_gemm_bf16 != NULL; }

int fbp_bf16_status(int clear)
{
    return clear ? atomic_exchange(&g_bf16_status, 0) : atomic_load(&g_bf16_status);
}

/* ---- rounding --------------------------------------------------------------------- */

/* float32 bits u -> the bits of the nearest bfloat16, ties to even; a NaN stays
 * a (quiet) NaN, overflow rounds to infinity as round-to-nearest does. */
FBP_INLINE uint32_t bf16_bits(uint32_t u)
{
    uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? (u >> 16) | 0x40u : r;
}

/* x (n,) -> y (n,) bf16 bits. */
FBP_INLINE int bf16_pack_body(fbp_idx n, const float *x, uint16_t *y)
{
    for (fbp_idx i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        y[i] = (uint16_t)bf16_bits(u);
    }
    return 0;
}

/* x (n,) -> y (n,) the bf16 values in float32 (y may alias x). */
FBP_INLINE int bf16_round_body(fbp_idx n, const float *x, float *y)
{
    for (fbp_idx i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        u = bf16_bits(u) << 16;
        memcpy(y + i, &u, 4);
    }
    return 0;
}

FBP_DISPATCHED(int, bf16_pack, bf16_pack_body, (fbp_idx n, const float *x, uint16_t *y),
               (n, x, y))
FBP_DISPATCHED(int, bf16_round, bf16_round_body, (fbp_idx n, const float *x, float *y),
               (n, x, y))

struct round_ctx {
    int native;
    fbp_idx n;
    const float *x;
    void *y;
};

static void round_task(void *p, fbp_idx t0, fbp_idx t1)
{
    const struct round_ctx *c = p;
    fbp_idx i0, i1;
    fbp_chunk_range(c->n, t0, t1, &i0, &i1);
    if (c->native)
        bf16_pack(i1 - i0, c->x + i0, (uint16_t *)c->y + i0);
    else
        bf16_round(i1 - i0, c->x + i0, (float *)c->y + i0);
}

void fbp_bf16_copy(int native, fbp_idx n, const float *x, void *y)
{
    struct round_ctx c = {native, n, x, y};
    fbp_parallel(fbp_threads_for(n, FBP_COST_MEM), fbp_nblocks(n, FBP_CHUNK), round_task, &c);
}

/* ---- the product -------------------------------------------------------------------- */

struct bf16_gemm_ctx {
    struct fbp_gemm_geom g;
    float alpha, beta;
    const uint16_t *A, *B;
    float *C;
};

static void bf16_call(int ta, int tb, fbp_idx M, fbp_idx N, fbp_idx K, float alpha,
                      const uint16_t *A, fbp_idx lda, const uint16_t *B, fbp_idx ldb,
                      float beta, float *C, fbp_idx ldc)
{
    int st = g_gemm_bf16(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta,
                         C, ldc);
    if (st) {
        int zero = 0;
        atomic_compare_exchange_strong(&g_bf16_status, &zero, st);
    }
}

/* Blocks [b0, b1) of C (fbp_gemm_block_at), one provider call each. */
static void bf16_gemm_task(void *p, fbp_idx b0, fbp_idx b1)
{
    const struct bf16_gemm_ctx *c = p;
    const struct fbp_gemm_geom *g = &c->g;
    for (fbp_idx b = b0; b < b1; b++) {
        fbp_idx M, N, oa, ob, oc;
        fbp_gemm_block_at(g, b, &M, &N, &oa, &ob, &oc);
        long t0 = fbp_now_ns();
        bf16_call(g->ta, g->tb, M, N, g->K, c->alpha, c->A + oa, g->lda, c->B + ob, g->ldb,
                  c->beta, c->C + oc, g->ldc);
        /* float32's slot: the estimate decides whether to go parallel, never a bit */
        fbp_note_gemm(4, (double)M * (double)N * (double)g->K, fbp_now_ns() - t0);
    }
}

void fbp_gemm_bf16(int native, int ta, int tb, fbp_idx M, fbp_idx N, fbp_idx K, float alpha,
                   const void *A, fbp_idx lda, const void *B, fbp_idx ldb, float beta,
                   float *C, fbp_idx ldc)
{
    if (!native || K <= 0) { /* the emulated path; K == 0 is fbp_gemm's C = beta C */
        fbp_gemm_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (M <= 0 || N <= 0)
        return;
    int rows;
    fbp_idx units, nb;
    fbp_gemm_cut(M, N, K, &rows, &units, &nb);
    struct bf16_gemm_ctx c = {{ta, tb, rows, M, N, K, lda, ldb, ldc, units, nb},
                              alpha, beta, A, B, C};
    if (nb == 1) {
        bf16_call(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    double ns = fbp_gemm_ns(4);
    int nt = fbp_threads_for_ns(ns * (double)M * (double)N * (double)K, (int)nb);
    fbp_parallel(nt, nb, bf16_gemm_task, &c);
}

/* ---- the dense layer's entry points ---------------------------------------------------- */

/* x (N, I), W (I, O), b (O,) or NULL, y (N, O): y = act(bf16(x).bf16(W) + b);
 * x16 (N, I) and W16 (I, O) are the caller's bf16 buffers. */
int fbp_dense_forward_bf16(int64_t N, int64_t In, int64_t O, const float *x, const float *W,
                           const float *b, int act, float *y, void *x16, void *W16)
{
    int native = fbp_bf16_native();
    fbp_bf16_copy(native, N * In, x, x16);
    fbp_bf16_copy(native, In * O, W, W16);
    fbp_gemm_bf16(native, 0, 0, N, O, In, 1.0f, x16, In, W16, O, 0.0f, y, O);
    fbp_bias_act_f32(N, O, b, act, y);
    return 0;
}

/* dy, y, dz (N, O); x, dx (N, I); W, dW (I, O); db (O,): as fbp_dense_backward,
 * with the products dx = bf16(dz).bf16(W)^T and dW (+)= bf16(x)^T.bf16(dz);
 * x16 (N, I), W16 (I, O), g16 (N, O) are the caller's bf16 buffers. */
int fbp_dense_backward_bf16(int64_t N, int64_t In, int64_t O, const float *dy, const float *x,
                            const float *W, const float *y, int act, float *dz, float *dx,
                            float *dW, float *db, int accumulate, void *x16, void *W16,
                            void *g16)
{
    int native = fbp_bf16_native();
    const float *g = dy;
    if (act == FBP_ACT_NONE) {
        fbp_act_backward_bias_grad_f32(N, O, act, dy, y, NULL, 0, NULL, db, accumulate);
    } else {
        fbp_act_backward_bias_grad_f32(N, O, act, dy, y, NULL, 0, dz, db, accumulate);
        g = dz;
    }
    fbp_bf16_copy(native, N * O, g, g16);
    fbp_bf16_copy(native, N * In, x, x16);
    if (dx) {
        fbp_bf16_copy(native, In * O, W, W16);
        fbp_gemm_bf16(native, 0, 1, N, In, O, 1.0f, g16, O, W16, O, 0.0f, dx, In);
    }
    fbp_gemm_bf16(native, 1, 0, In, O, N, 1.0f, x16, In, g16, O, accumulate ? 1.0f : 0.0f, dW,
                  O);
    return 0;
}

/* The bf16 floor of a training step: fbp_step_floor's products, each one whole
 * provider call with bf16 operands h16, dz16, W16 (shapes as h, dz, W there),
 * float32 results; the mean of reps steps in ns. The provider's own threads are
 * set by the caller (src/fastbp/_bf16.py). */
double fbp_step_floor_bf16(int L, const fbp_idx *widths, fbp_idx N, void *const *h16,
                           void *const *dz16, float *const *h, float *const *dh,
                           void *const *W16, float *const *dW, int reps)
{
    if (!g_gemm_bf16)
        return -1.0;
    long t0 = fbp_now_ns();
    for (int r = 0; r < reps; r++) {
        for (int l = 0; l < L; l++)
            bf16_call(0, 0, N, widths[l + 1], widths[l], 1.0f, h16[l], widths[l], W16[l],
                      widths[l + 1], 0.0f, h[l + 1], widths[l + 1]);
        for (int l = L - 1; l >= 0; l--) {
            bf16_call(1, 0, widths[l], widths[l + 1], N, 1.0f, h16[l], widths[l], dz16[l + 1],
                      widths[l + 1], 0.0f, dW[l], widths[l + 1]);
            if (l > 0)
                bf16_call(0, 1, N, widths[l], widths[l + 1], 1.0f, dz16[l + 1], widths[l + 1],
                          W16[l], widths[l + 1], 0.0f, dh[l], widths[l]);
        }
    }
    return (double)(fbp_now_ns() - t0) / (reps > 0 ? reps : 1);
}
